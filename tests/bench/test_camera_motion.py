"""The camera head's motion response (bench/camera_motion.py): exact for a truthful model, measured on
the bundled one."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from edgescene.assets import default_model_dir
from edgescene.bench.accuracy import load_sequences
from edgescene.bench.camera_motion import format_summary, motion_response, summarise
from edgescene.core.geometry import encode_pose, relative_pose_to_first
from edgescene.train.data.synthetic import SynthConfig, generate_dataset

SIZE = (126, 168)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(SynthConfig(out_dir=str(out), scenes=3, frames=8, width=168, height=126, seed=5))
    return out


class TruthSession:
    """Answers every frame with its ground truth (recognised by its pixels), in the first frame's frame."""

    def __init__(self, dataset) -> None:
        self.artifact = SimpleNamespace(input_size={"height": SIZE[0], "width": SIZE[1]})
        self.truth = {}
        for seq in load_sequences(dataset, SIZE, None):
            for i in range(len(seq.indices)):
                self.truth[seq.images[i].tobytes()] = (seq.extrinsics[i], seq.intrinsics[i], seq.depth[i])

    def __call__(self, feeds):
        answers = [self.truth[image.tobytes()] for image in feeds["images"]]
        extrinsics = relative_pose_to_first(np.stack([a[0] for a in answers]))
        intrinsics = np.stack([a[1] for a in answers])
        return {"pose_enc": encode_pose(extrinsics, intrinsics, SIZE), "depth": np.stack([a[2] for a in answers])}


def test_a_truthful_model_moves_exactly_as_the_cameras_do(dataset):
    rows = motion_response(TruthSession(dataset), dataset, frames=4, strides=(1, 2))
    assert len(rows) == 6 and {r.trajectory for r in rows} == {"orbit", "walk", "handheld"}
    for r in rows:
        assert r.pred_angles_deg == pytest.approx(r.true_angles_deg, abs=1e-3)
        assert r.pred_path_over_depth == pytest.approx(r.true_path_over_depth, rel=1e-6)
        assert r.rotation_error_deg < 1e-3 and r.auc_30 == 1.0
    summary = {(s["trajectory"], s["stride"]): s for s in summarise(rows)}
    for stride in (1, 2):
        overall = summary[("all", stride)]
        assert overall["windows"] == 3 and overall["rotation_gain"] == 1.0 and overall["path_ratio"] == 1.0
    assert summary[("all", 2)]["true_rotation_deg"] > summary[("all", 1)]["true_rotation_deg"]  # wider windows
    assert "| all | 2 | 3 |" in format_summary(summarise(rows))


def test_the_bundled_model_is_measured_and_bad_requests_are_refused(dataset):
    rows = motion_response(default_model_dir(), dataset, frames=4, strides=(2,))
    assert len(rows) == 3
    for r in rows:
        assert len(r.pred_angles_deg) == 3 and np.all(np.isfinite(r.pred_angles_deg))
        assert np.isfinite(r.pred_path_over_depth) and 0.0 <= r.auc_30 <= 1.0
    with pytest.raises(ValueError, match="frames must be >= 2"):
        motion_response(default_model_dir(), dataset, frames=1)
    with pytest.raises(ValueError, match="strides must be positive"):
        motion_response(default_model_dir(), dataset, strides=(0,))
    with pytest.raises(ValueError, match="no sequence holds a window of 8 frames"):
        motion_response(default_model_dir(), dataset, frames=8, strides=(2,))
