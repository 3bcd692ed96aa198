"""The meta every bench table carries: its command can be pasted into a shell as written."""

from __future__ import annotations

import shlex

from edgescene.bench.tables import run_meta


def test_the_recorded_command_quotes_what_a_shell_would_split():
    meta = run_meta("edgescene.bench.x", ["--out", "a b", "--run-args", "--anchor-weight 0.01"], seeds=[1])
    assert meta["command"] == "python -m edgescene.bench.x --out 'a b' --run-args '--anchor-weight 0.01'"
    assert shlex.split(meta["command"])[3:] == ["--out", "a b", "--run-args", "--anchor-weight 0.01"]
    assert meta["seeds"] == [1] and meta["date"]
