"""The runtime-capacity bench: its synthetic scene, its oracle model and a tiny run of the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgescene.bench import runtime_capacity
from edgescene.bench.oracle import OracleNoise, OracleSession
from edgescene.bench.synthetic_scene import make_video, surface_samples
from edgescene.core.geometry import decode_pose, inverse_se3, unproject_depth


@pytest.fixture(scope="module")
def video():
    return make_video(10, (56, 84), seed=2)


def test_scene_depth_is_exact_along_each_ray(video):
    # a pixel's unprojected depth lands on the room's walls or a box face: one coordinate on a face
    pts = unproject_depth(video.depth[:1].astype(np.float64), video.extrinsics[:1], video.intrinsics[None])[0]
    room_lo, room_hi = np.array([-4.0, -1.5, -4.0]), np.array([4.0, 1.5, 4.0])
    on_room = np.min(np.minimum(np.abs(pts - room_lo), np.abs(pts - room_hi)), axis=-1) < 1e-3
    assert on_room.mean() > 0.3 and video.depth.min() > 0.3 and video.depth.max() < 12
    assert video.rgb.dtype == np.uint8 and not np.array_equal(video.rgb[0], video.rgb[1])
    assert len(surface_samples(video, 0.05)) > 1000


def test_oracle_answers_in_the_window_frame_at_its_own_scale(video):
    session = OracleSession(video, OracleNoise(depth_noise=0.0, rotation_noise_deg=0.0, translation_noise=0.0))
    images = video.rgb[[3, 4, 5]].transpose(0, 3, 1, 2).astype(np.float32) / 255
    out = session({"images": images})
    extrinsics, _ = decode_pose(out["pose_enc"].astype(np.float64), (56, 84))
    assert np.allclose(extrinsics[0], np.eye(3, 4), atol=1e-6)  # the first camera is the window frame
    true_rel = video.extrinsics[4] @ np.vstack([inverse_se3(video.extrinsics[3]), [0, 0, 0, 1]])
    scale = float(np.median(out["depth"][0] / video.depth[3]))
    assert np.allclose(extrinsics[1][:, :3], true_rel[:, :3], atol=1e-5)
    assert np.allclose(extrinsics[1][:, 3], scale * true_rel[:, 3], atol=1e-5)
    assert session.calls == [(3, 4, 5)]
    again = session({"images": images})  # the same window: the same answer (cached, deterministic)
    assert all(np.array_equal(out[k], again[k]) for k in out)


def test_oracle_refuses_frames_it_never_rendered(video):
    session = OracleSession(video)
    noise = np.random.default_rng(0).random((2, 3, 56, 84), dtype=np.float32)
    with pytest.raises(ValueError, match="matches none of its video's frames"):
        session({"images": noise})


def test_tiny_run_reports_every_figure(tmp_path):
    result = runtime_capacity.run(sizes=[(56, 84)], frames=10, seeds=(0, 1), latency_ms=2.0, repeats=1)
    (row,) = result["sizes"]
    assert row["size"] == "56x84" and row["keyframes"] == 10 and row["windows"] == 2
    assert set(row["runtime_ms_per_frame"]) >= {"decode", "align", "fusion", "write", "outputs"}
    assert row["runtime_ms_per_frame_total"] > 0
    assert 0 < row["pipeline"]["ratio_to_model"] < 1.5
    assert row["pipeline"]["sustained_ratio_to_model"] is None  # 2 windows: no steady state to measure
    assert [r["seed"] for r in row["accuracy"]] == [0, 1]
    mean = row["accuracy_mean"]
    assert mean["ate_rel"] < 0.05 and mean["accuracy_m"] < 0.1 and mean["completeness_m"] < 0.1
    text = runtime_capacity.markdown(result)
    assert "| 56x84 |" in text and "ATE" in text
    json.dumps(result)  # serialisable as written


def test_sustained_ratio_is_the_model_busy_fraction_between_fill_and_drain():
    # the model starts a window every 0.3 s and works 0.24 s of it; window 0's fill and the last two
    # windows' drain (slower here) do not count
    windows = [{"model_at_s": 0.1 + 0.3 * i, "model_s": 0.24} for i in range(8)]
    windows[0]["model_at_s"], windows[-1]["model_at_s"] = 0.0, 5.0
    assert runtime_capacity.sustained_model_busy(windows) == pytest.approx(5 * 0.24 / (4 * 0.3 + 0.24))
    assert runtime_capacity.sustained_model_busy(windows[:4]) is None


def test_sizes_are_checked():
    assert runtime_capacity.parse_size("392x518") == (392, 518)
    with pytest.raises(ValueError, match="multiples of 14"):
        runtime_capacity.parse_size("390x518")
    with pytest.raises(ValueError, match="HxW"):
        runtime_capacity.parse_size("big")
