"""The self-supervised diagnosis bench: what the training signal sees on rendered windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgescene.bench import self_supervised_diagnosis as diagnosis

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "bench" / "self_supervised" / "diagnosis"


def test_pose_errors_against_the_truth():
    rng = np.random.default_rng(0)
    extrinsics = np.tile(np.eye(3, 4), (3, 1, 1))
    extrinsics[:, :, 3] = rng.normal(size=(3, 3))
    full = np.tile(np.eye(4), (3, 1, 1))
    full[:, :3] = extrinsics
    measured = np.zeros((3, 3, 3, 4))
    ok = np.zeros((3, 3), bool)
    pairs = [(0, 1), (1, 2), (2, 0)]
    for t, s in pairs:
        measured[t, s] = (full[s] @ np.linalg.inv(full[t]))[:3]
        ok[t, s] = True
    measured[1, 2, :, 3] *= -1  # a flipped direction
    ok[2, 0] = False  # no pose: left out
    rot, direction = diagnosis.pose_errors(measured, ok, extrinsics, pairs)
    assert rot == pytest.approx([0.0, 0.0], abs=1e-4) and direction == pytest.approx([0.0, 180.0], abs=1e-3)


def test_one_sequence_the_truth_through_true_poses_scores_best():
    from edgescene.assets import default_model_dir
    from edgescene.runtime.session import open_session
    from edgescene.runtime.stream import predictor_from_session

    session = open_session(default_model_dir())
    try:
        rows = diagnosis.measure(predictor_from_session(session), 1, 9600, 8, 4, (126, 168))
    finally:
        session.close()
    assert len(rows) == 8  # 2 windows x 2 domains x given / head intrinsics
    for r in rows:
        assert 0.0 <= r.matched <= 1.0
        assert r.score_oracle < r.score_true and r.score_oracle < r.score_pred  # measured poses cost
    thermal = [r for r in rows if r.domain == "thermal-like"]
    visible = [r for r in rows if r.domain == "visible"]
    assert np.mean([r.abs_rel for r in thermal]) > 2 * np.mean([r.abs_rel for r in visible])  # measured: 0.29, 0.07


def test_the_committed_table_is_the_benchs():
    data = json.loads((COMMITTED / "diagnosis.json").read_text())
    rows = [diagnosis.WindowRow(**r) for r in data["rows"]]
    assert (COMMITTED / "README.md").read_text() == diagnosis.markdown(rows, data["meta"])
