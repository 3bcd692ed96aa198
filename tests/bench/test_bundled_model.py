"""The bundled default model: `edgescene eval` reproduces its model card, it beats the trivial
baselines on held-out synthetic scenes, and `edgescene reconstruct` uses it by default."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgescene.assets import default_model_dir, sample_dir
from edgescene.bench.accuracy import evaluate, evaluate_baselines
from edgescene.cli import main
from edgescene.core.geometry import inverse_se3, umeyama_sim3
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
    """Measured 2026-11-27 on the CI subset: model AbsRel 0.097 / AUC@30 0.329 / ATE_rel 0.277; constant
    depth 0.393; identity poses AUC 0 / ATE_rel 0.352; constant forward walk AUC 0.262 / ATE_rel 0.066."""
    model = next(iter(evaluate(MODEL, heldout, frames=SUBSET["eval_frames"]).means().values()))
    base = evaluate_baselines(heldout, frames=SUBSET["eval_frames"], size=(SUBSET["height"], SUBSET["width"])).means()
    assert model["abs_rel"] < 0.3 * base["constant_depth"]["abs_rel"]
    assert model["delta_1_25"] > base["constant_depth"]["delta_1_25"] + 0.5
    assert model["auc_30"] > base["identity_poses"]["auc_30"] + 0.3
    assert model["auc_30"] > base["constant_velocity"]["auc_30"] + 0.05  # rotations and directions: the model wins
    assert model["ate_rel"] < 0.85 * base["identity_poses"]["ate_rel"]
    # The limitation the model card states: half of the held-out paths are straight walks, so the
    # constant-walk baseline's trajectory error is 4x lower than the model's. Pinned, so a change shows.
    assert base["constant_velocity"]["ate_rel"] == pytest.approx(0.0664, abs=1e-3)
    assert model["ate_rel"] > 4 * base["constant_velocity"]["ate_rel"]


def test_reconstruct_uses_the_bundled_model_and_recovers_the_sample_trajectory(tmp_path):
    out = tmp_path / "rec"
    assert main(["reconstruct", str(sample_dir() / "sample.mp4"), "--out", str(out), "--keyframe-threshold", "0"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["preset"] == "vggt_small" and report["keyframes"] == 32
    cameras = json.loads((out / "cameras.json").read_text())
    estimated = inverse_se3(np.array([f["extrinsics"] for f in cameras["frames"]]))[:, :, 3]
    truth = inverse_se3(np.load(sample_dir() / "sample_gt.npz")["extrinsics"])[:, :, 3]
    s, r, t = umeyama_sim3(estimated, truth)
    error = np.linalg.norm(s * estimated @ r.T + t - truth, axis=1)
    extent = np.linalg.norm(truth - truth.mean(0), axis=1).max()
    assert np.sqrt((error**2).mean()) / extent < CARD["sample_video"]["ate_rel_limit"]
