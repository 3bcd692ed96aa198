"""The metric-scale bench: its GPS track and the fit's figures with the oracle model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgescene.bench import metric_scale
from edgescene.bench.metrics import camera_centres
from edgescene.bench.synthetic_scene import make_video
from edgescene.runtime.positions import geodetic_to_enu, read_csv_track


def test_the_track_is_the_true_centres_plus_the_asked_noise(tmp_path):
    video = make_video(40, (48, 64), seed=1)
    centres = camera_centres(video.extrinsics)
    truth = metric_scale.gps_csv(tmp_path / "t.csv", centres, every=2, noise=0.02, seed=0)
    track = read_csv_track(tmp_path / "t.csv")
    assert track.times.tolist() == pytest.approx(np.arange(0, 40, 2) / metric_scale.FPS)
    enu = geodetic_to_enu(track.geodetic, np.array(metric_scale.ORIGIN))
    exact = geodetic_to_enu(truth[::2], np.array(metric_scale.ORIGIN))
    assert np.allclose(exact, centres[::2] @ metric_scale.WORLD_TO_ENU.T, atol=1e-4)  # east = x, north = z, up = -y
    extent = np.max(np.linalg.norm(exact[:, None] - exact[None], axis=-1))
    noise = (enu - exact) / extent
    assert 0.01 < noise.std() < 0.03 and abs(noise.mean()) < 0.01


def test_with_the_oracle_the_fit_lands_in_metres(tmp_path):
    rows = [metric_scale.run_case("oracle", "oracle", seed, tmp_path, 32, (96, 128), 2, 0.02) for seed in (0, 1)]
    for row in rows:
        assert row.mode == "full" and row.fixes == 16 and row.inliers >= 15  # a fix every 2 of 32 frames
        assert row.scale_error < 0.03 and row.depth_scale_error < 0.03  # bench, 48 frames: 0.9-1.4 % mean
        assert row.position_rel < 0.03 and row.metric_abs_rel < 0.05
    summary = metric_scale.summarise(rows)["oracle"]
    assert summary["position_rel"]["max"] == max(r.position_rel for r in rows)


def test_the_committed_table_is_the_benchs():
    from pathlib import Path

    committed = Path(__file__).resolve().parents[2] / "docs" / "bench" / "metric"
    data = json.loads((committed / "metric_scale.json").read_text())
    rows = [metric_scale.MetricRow(**r) for r in data["rows"]]
    assert (committed / "README.md").read_text() == metric_scale.markdown(rows, data["meta"])


def test_oracle_only_runs_no_model(tmp_path):
    code = metric_scale.main(
        ["--oracle-only", "--seeds", "3", "--frames", "16", "--height", "48", "--width", "64", "--gps-every", "2",
         "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    rows = json.loads((tmp_path / "metric_scale.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["oracle (ground truth + noise)"] and rows[0]["fixes"] == 8
