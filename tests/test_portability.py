"""The portability gate (scripts/check_portable.py, run first by ``make lint``): a clone installs anywhere."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GATE = REPO / "scripts" / "check_portable.py"


def run_gate(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GATE), str(root)], capture_output=True, text=True, timeout=120)


def test_make_lint_runs_the_gate_before_the_other_gates():
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe is not None
    assert recipe.group(1).splitlines()[0].strip() == "$(BIN)/python scripts/check_portable.py"


def test_the_repository_passes():
    result = run_gate(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            "scikit-image @ file:///tmp/skw/scikit_image-0.26.0-cp311-cp311-manylinux_2_28_x86_64.whl",
            "a file: URL points into the machine",
        ),
        ("mylib @ https://example.org/mylib-1.0.tar.gz", "a direct reference"),
        ("torch==2.13.0+cpu", "a local version label"),
        ("--find-links /opt/wheels", "a pip option"),
        ("./vendor/thing.whl", "a path is not a requirement"),
        ("numpy>=1.26", "not an exact pin"),
    ],
)
def test_a_machine_local_constraint_fails_the_gate(tmp_path, line, reason):
    (tmp_path / "constraints.txt").write_text(
        f"# pins\nnumpy==2.4.6\n{line}\npillow==12.3.0 ; python_version >= '3.10'\n"
    )
    result = run_gate(tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    finding, total = lines[0], lines[-1]
    assert finding.startswith("check_portable: constraints.txt:3: ") and reason in finding, result.stdout
    assert "finding(s)" in total


def test_exact_pins_with_extras_and_markers_pass(tmp_path):
    (tmp_path / "requirements-dev.txt").write_text(
        "# comment\n\nuvicorn[standard]==0.54.0\ntomli==2.0.1 ; python_version < '3.11'  # for 3.10\n"
    )
    assert run_gate(tmp_path).returncode == 0


def test_an_absolute_path_of_the_exporting_machine_fails_in_text_and_binary_assets(tmp_path):
    model = tmp_path / "edgescene" / "assets" / "models" / "m"
    model.mkdir(parents=True)
    (model / "artifact.json").write_text('{\n "model": {\n  "source": "/home/alice/runs/last.pt"\n }\n}\n')
    (model / "model.onnx").write_bytes(b"\x08\x07\x00\x12" + b'{"source": "/work/data/run/last.pt"}' + b"\x00" * 16)
    (tmp_path / "report.md").write_text(
        "Dataset: `data/synth_val`, out under runs/work/x and https://example.org/tmp/x\n"
    )
    result = run_gate(tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(s.startswith("check_portable: edgescene/assets/models/m/artifact.json:3: ") for s in lines), lines
    assert any(s.startswith("check_portable: edgescene/assets/models/m/model.onnx: binary file") for s in lines), lines
    assert not any("report.md" in s for s in lines), "relative paths and URLs are not machine paths"
    assert lines[-1] == "check_portable: 2 finding(s): the repository would not install or read the same anywhere"


def test_the_tests_own_python_may_build_such_paths(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text('BAD = "/tmp/not-there/x.mp4"\n')
    assert run_gate(tmp_path).returncode == 0
