"""edgescene.bench.accuracy end to end: held-out synthetic data, a tiny exported VGGT, baselines, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edgescene.assets import default_model_dir
from edgescene.bench.accuracy import BASELINES, METRICS, evaluate, evaluate_baselines, frame_indices, load_sequences
from edgescene.core.preprocess import fit
from edgescene.core.preprocess import prepare_depth as resize_depth

pytestmark = pytest.mark.slow  # exports a tiny artifact to evaluate (~20 s)

SIZE = (42, 56)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from edgescene.train.data.synthetic import SynthConfig, generate_dataset

    out = tmp_path_factory.mktemp("heldout") / "synth"
    generate_dataset(
        SynthConfig(out_dir=str(out), scenes=2, frames=6, width=64, height=48, seed=7, trajectories=("orbit", "walk"))
    )
    return out


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    from edgescene.export.pipeline import ExportConfig, export_model

    out = tmp_path_factory.mktemp("export") / "vggt_tiny_onnx"
    export_model(
        ExportConfig(
            model="vggt_tiny", format="onnx", out=str(out), height=SIZE[0], width=SIZE[1], frames_range=(1, 4, 6)
        ),
        log=lambda s: None,
    )
    return out


def test_frame_indices_are_evenly_spaced_and_clipped():
    assert frame_indices(6, 4) == [0, 2, 3, 5]
    assert frame_indices(6, 1) == [0]
    assert frame_indices(3, 10) == [0, 1, 2]
    with pytest.raises(ValueError):
        frame_indices(0, 2)


def test_resize_depth_follows_the_image_mapping():
    depth = np.arange(48 * 64, dtype=np.float32).reshape(48, 64) + 1
    r = fit(48, 64, 24, 24, "crop")  # scale 0.5, 4 model columns cropped each side
    out = resize_depth(depth, r)
    assert out.shape == (24, 24)
    assert set(np.unique(out)) <= set(np.unique(depth))  # nearest: no blended values
    # every model pixel holds the depth of a source pixel its centre maps onto (Resize's mapping)
    v, u = np.mgrid[0:24, 0:24] + 0.5
    xy = r.to_source_points(np.stack([u, v], -1))
    x, y = np.floor(xy[..., 0]).astype(int), np.floor(xy[..., 1]).astype(int)
    near = [depth[np.clip(y + dy, 0, 47), np.clip(x + dx, 0, 63)] for dy in (-1, 0) for dx in (-1, 0)]
    assert np.any([out == n for n in near], axis=0).all()
    padded = resize_depth(depth, fit(48, 64, 64, 64, "pad"))
    assert (padded[:8] == 0).all() and (padded[8:56] > 0).all()


def test_load_sequences_maps_ground_truth(dataset):
    seqs = list(load_sequences(dataset, SIZE, 4))
    assert [s.name for s in seqs] == ["scene_0000", "scene_0001"]
    s = seqs[0]
    assert s.images.shape == (4, 3, *SIZE) and s.images.dtype == np.float32
    assert s.depth.shape == (4, *SIZE) and s.valid.any()
    np.testing.assert_allclose(s.extrinsics[0], np.eye(3, 4), atol=1e-12)  # frame 0 is the world
    assert s.intrinsics[0, 0, 2] == pytest.approx(SIZE[1] / 2) and s.intrinsics[0, 1, 2] == pytest.approx(SIZE[0] / 2)


def test_ground_truth_is_consistent_at_model_size(dataset):
    """Resized GT depth + mapped intrinsics + extrinsics agree across views, and score perfectly."""
    from edgescene.bench.accuracy import Prediction, score
    from edgescene.core.geometry import project_points, unproject_depth

    for s in load_sequences(dataset, SIZE, None, load_images=False):  # all 6 frames; neighbours overlap most
        perfect = score(Prediction(s.depth * 3.0, s.extrinsics, s.intrinsics), s)
        assert perfect["abs_rel"] == pytest.approx(0, abs=1e-6) and perfect["delta_1_25"] == 1.0
        assert perfect["auc_30"] == pytest.approx(1.0, abs=1e-9) and perfect["ate_rmse"] == pytest.approx(0, abs=1e-9)
        assert perfect["focal_rel_err"] == 0.0
        world = unproject_depth(s.depth, s.extrinsics, s.intrinsics)[0][s.valid[0]]
        uv, z = project_points(world, s.extrinsics[1], s.intrinsics[1])
        u, v = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
        inside = (z > 0) & (u >= 0) & (u < SIZE[1]) & (v >= 0) & (v < SIZE[0])
        seen = s.depth[1, v[inside], u[inside]]
        rel = np.abs(seen - z[inside]) / z[inside]
        assert inside.sum() > 100 and np.median(rel[seen > 0]) < 0.03


def test_bench_imports_without_torch():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import edgescene.bench.accuracy, edgescene.bench.metrics\n"
        "assert not any(m == 'edgescene.models' or m.startswith('edgescene.models.') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evaluate_onnx_artifact(dataset, artifact):
    report = evaluate(artifact, dataset, device="cpu")
    assert report.frames == 4 and report.size == SIZE  # artifact's opt frames, input size
    assert [r.sequence for r in report.rows] == ["scene_0000", "scene_0001"]
    for row in report.rows:
        assert row.frames == [0, 2, 3, 5]
        assert [k for k in METRICS if k not in report.scored_metrics()] == ["metric_abs_rel", "metric_ate"]
        for key in report.scored_metrics():  # the metric-unit scores only with metric=True
            assert math.isfinite(row.metrics[key]), key
    means = report.means()[report.methods[0]]
    assert 0 <= means["delta_1_25"] <= 1 and 0 <= means["auc_30"] <= 1 and means["abs_rel"] >= 0
    one = evaluate(artifact, dataset, frames=6, max_sequences=1)
    assert len(one.rows) == 1 and one.rows[0].frames == list(range(6))
    with pytest.raises(ValueError, match="outside what"):
        evaluate(artifact, dataset, frames=7)


def test_baselines(dataset):
    report = evaluate_baselines(dataset, 6, SIZE)
    assert report.methods == list(BASELINES)
    rows = {(r.method, r.sequence): r.metrics for r in report.rows}
    orbit = "scene_0000"  # trajectories alternate orbit, walk
    assert rows[("identity_poses", orbit)]["auc_30"] < 0.2
    assert rows[("constant_depth", orbit)]["delta_1_25"] < 1.0
    assert rows[("constant_depth", orbit)]["auc_30"] is None  # predicts no poses
    assert rows[("identity_poses", orbit)]["abs_rel"] is None  # predicts no depth
    walk = "scene_0001"  # a straight walk is what constant_velocity predicts
    assert rows[("constant_velocity", walk)]["auc_30"] > rows[("identity_poses", walk)]["auc_30"]
    assert rows[("constant_velocity", walk)]["ate_rel"] < 0.05
    text = report.format()
    for name in BASELINES:
        assert name in text
    with pytest.raises(ValueError, match="unknown baselines"):
        evaluate_baselines(dataset, 6, SIZE, baselines=["oracle"])


def test_a_dataset_without_ground_truth_says_why_nothing_was_scored(dataset, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(dataset, bare)
    manifest = json.loads((bare / "manifest.json").read_text())
    for entry in manifest["entries"]:
        entry["depth"], entry["camera"] = None, None
    (bare / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        ValueError, match=r"nothing to evaluate: .* and 2 sequence\(s\) lack depth or cameras"
    ) as raised:
        evaluate_baselines(bare, 6, SIZE)
    assert "edgescene synth" in str(raised.value) and "0 skipped" not in str(raised.value)
    for entry in manifest["entries"]:
        entry["sequence"] = None  # loose frames: nothing is even skipped
    (bare / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="holds no multi-frame sequence"):
        evaluate_baselines(bare, 6, SIZE)


def test_cli_eval_writes_json(dataset, artifact, tmp_path, capsys):
    from edgescene.cli import main

    out = tmp_path / "report.json"
    rc = main(
        [
            "eval",
            "--model",
            str(artifact),
            "--dataset",
            str(dataset),
            "--frames",
            "5",
            "--baselines",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "AUC@30" in text and "constant_velocity" in text
    data = json.loads(out.read_text())
    assert data["schema"] == "edgescene.eval" and data["frames"] == 5
    assert len(data["methods"]) == 1 + len(BASELINES)
    assert len(data["rows"]) == 2 * (1 + len(BASELINES))
    assert main(["eval", "--model", str(artifact), "--dataset", str(tmp_path / "missing")]) == 2


# ----------------------------------------------------------------------------------- in metres
def _walk(n=5):
    from edgescene.bench.accuracy import SequenceData

    rng = np.random.default_rng(3)
    depth = rng.uniform(2.0, 6.0, (n, 6, 8)).astype(np.float32)
    extrinsics = np.zeros((n, 3, 4))
    for i in range(n):
        angle = 0.2 * i
        c, s = np.cos(angle), np.sin(angle)
        extrinsics[i, :, :3] = [[c, 0, -s], [0, 1, 0], [s, 0, c]]
        extrinsics[i, :, 3] = -extrinsics[i, :, :3] @ np.array([np.sin(angle), 0.1 * i * i, 1 - np.cos(angle)])
    return SequenceData("walk", list(range(n)), None, depth, depth > 0, extrinsics, np.tile(np.eye(3), (n, 1, 1)))


def test_metric_scores_use_the_cameras_scale_not_a_median():
    from edgescene.bench.accuracy import Prediction, score

    gt = _walk()
    units = 0.25  # the model's own unit: everything a quarter as large, cameras and depth alike
    scaled = gt.extrinsics.copy()
    scaled[:, :, 3] *= units
    exact = score(Prediction(gt.depth * units, scaled, None), gt, metric=True)
    assert exact["metric_abs_rel"] == pytest.approx(0.0, abs=1e-9) and exact["metric_ate"] == pytest.approx(
        0.0, abs=1e-9
    )
    long_steps = scaled.copy()
    long_steps[:, :, 3] *= 2  # camera steps twice too long for the depth: metric depth half the truth
    off = score(Prediction(gt.depth * units, long_steps, None), gt, metric=True)
    assert off["metric_abs_rel"] == pytest.approx(0.5, abs=1e-9) and off["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert "metric_abs_rel" not in {
        k for k, v in score(Prediction(gt.depth, scaled, None), gt).items() if v is not None
    }


def test_eval_metric_on_the_middlebury_pair(capsys):
    pytest.importorskip("skimage")
    from edgescene.cli import main

    assert main(["eval", "--model", str(default_model_dir()), "--dataset", "middlebury-motorcycle", "--metric"]) == 0
    text = capsys.readouterr().out
    assert "AbsRel m" in text and "ATE m" in text
    row = next(line for line in text.splitlines() if line.startswith("vggt") or "(onnx, fp32)" in line)
    committed = json.loads(
        (Path(__file__).resolve().parents[2] / "docs/bench/metric/middlebury_motorcycle.json").read_text()
    )
    assert float(row.split()[-2]) == pytest.approx(
        committed["mean"]["metric_abs_rel"], abs=2e-3
    )  # the runtime's figure
