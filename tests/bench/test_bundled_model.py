"""The bundled default model: `edgescene eval` reproduces its model card (``eval.json``), it beats
the trivial baselines on held-out synthetic scenes, and `edgescene reconstruct` uses it by default
and reproduces the card's figures on the bundled sample video."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bundled import BUNDLED_PRESET

from edgescene.assets import default_model_dir, sample_dir
from edgescene.bench.accuracy import evaluate, evaluate_baselines
from edgescene.bench.metrics import ate
from edgescene.cli import main
from edgescene.core.geometry import inverse_se3
from edgescene.train.data.synthetic import SynthConfig, generate_dataset

MODEL = default_model_dir()
CARD = json.loads((MODEL / "eval.json").read_text())
SUBSET = CARD["ci_subset"]


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """The first held-out scenes, regenerated bit for bit (scene i of seed 1 is the same in any run)."""
    out = tmp_path_factory.mktemp("heldout") / "synth_val"
    generate_dataset(
        SynthConfig(
            out_dir=str(out),
            scenes=SUBSET["scenes"],
            frames=SUBSET["frames_per_scene"],
            width=SUBSET["width"],
            height=SUBSET["height"],
            seed=SUBSET["seed"],
        )
    )
    return out


def test_eval_reproduces_the_model_card(heldout):
    means = next(iter(evaluate(MODEL, heldout, frames=SUBSET["eval_frames"]).means().values()))
    for metric, value in SUBSET["model"].items():
        assert means[metric] == pytest.approx(value, abs=1e-4), metric


def test_the_bundled_model_against_every_trivial_baseline(heldout):
    model = next(iter(evaluate(MODEL, heldout, frames=SUBSET["eval_frames"]).means().values()))
    base = evaluate_baselines(heldout, frames=SUBSET["eval_frames"], size=(SUBSET["height"], SUBSET["width"])).means()
    for method, figures in SUBSET["baselines"].items():
        for metric, value in figures.items():
            if value is not None:
                assert base[method][metric] == pytest.approx(value, abs=1e-4), (method, metric)
    assert model["abs_rel"] < 0.3 * base["constant_depth"]["abs_rel"]
    assert model["delta_1_25"] > base["constant_depth"]["delta_1_25"] + 0.5
    assert model["auc_30"] > base["identity_poses"]["auc_30"] + 0.3
    assert model["auc_30"] > base["constant_velocity"]["auc_30"] + 0.05  # rotations and directions: the model wins
    assert model["ate_rel"] < 0.85 * base["identity_poses"]["ate_rel"]


def test_reconstruct_uses_the_bundled_model_and_reproduces_the_sample_figures(tmp_path):
    """``make demo``'s command: the card's keyframes, ATE / extent and path length over depth."""
    card = CARD["sample_video"]
    out = tmp_path / "rec"
    assert main(["reconstruct", str(sample_dir() / "sample.mp4"), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["preset"] == BUNDLED_PRESET and report["keyframes"] == card["keyframes"]
    cameras = json.loads((out / "cameras.json").read_text())
    index = [f["index"] for f in cameras["frames"]]
    estimated = inverse_se3(np.array([f["extrinsics"] for f in cameras["frames"]]))[:, :, 3]
    truth = inverse_se3(np.load(sample_dir() / "sample_gt.npz")["extrinsics"][index])[:, :, 3]
    ate_rel = ate(estimated, truth)["ate_rel"]  # after Sim(3), over the largest distance between true centres
    assert ate_rel == pytest.approx(card["ate_rel"], abs=5e-3)
    assert ate_rel < card["static_ate_rel"]  # better than a camera that never moves
    path = np.linalg.norm(np.diff(estimated, axis=0), axis=1).sum()
    depth = np.stack([np.load(out / "depth" / f"{i:05d}.npz")["depth"] for i in index])
    assert path / np.median(depth[depth > 0]) == pytest.approx(card["path_over_depth"], rel=0.02)
