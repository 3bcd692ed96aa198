"""The known-intrinsics bench: given intrinsics sharpen the geometry the runtime outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgescene.assets import default_model_dir
from edgescene.bench import known_intrinsics
from edgescene.runtime.session import open_session

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "bench" / "metric"


def test_given_intrinsics_reproduce_the_committed_first_sequence():
    session = open_session(default_model_dir())
    try:
        rows = known_intrinsics.measure(session, 1, 9200)
    finally:
        session.close()
    committed = [
        r
        for r in json.loads((COMMITTED / "known_intrinsics.json").read_text())["rows"]
        if r["sequence"] == "orbit_9200"
    ]
    assert [(r.domain, r.intrinsics) for r in rows] == [(r["domain"], r["intrinsics"]) for r in committed]
    for row, ref in zip(rows, committed, strict=True):
        for key in ("ate_rel", "auc_30", "abs_rel", "point_rel"):
            assert getattr(row, key) == pytest.approx(ref[key], abs=2e-3), (row.domain, row.intrinsics, key)
    by = {(r.domain, r.intrinsics): r for r in rows}
    for domain in ("visible", "thermal-like"):  # the field of view the model got wrong, corrected
        assert by[(domain, "given")].point_rel < by[(domain, "predicted")].point_rel
        assert by[(domain, "given")].abs_rel == pytest.approx(by[(domain, "predicted")].abs_rel, abs=1e-6)


@pytest.mark.parametrize("folder", [COMMITTED, COMMITTED / "known_intrinsics_unseen"])
def test_the_committed_tables_are_the_benchs(folder):
    data = json.loads((folder / "known_intrinsics.json").read_text())
    rows = [known_intrinsics.IntrinsicsRow(**r) for r in data["rows"]]
    assert (folder / "known_intrinsics.md").read_text() == known_intrinsics.markdown(rows, data["meta"])
