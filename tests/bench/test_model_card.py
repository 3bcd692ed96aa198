"""bench/model_card.py: the held-out section regenerates its scenes from the seed, evaluates once,
and its CI subset equals an evaluation of the first scenes alone."""

from __future__ import annotations

import pytest

import edgescene.bench.model_card as model_card
from edgescene.assets import default_model_dir
from edgescene.bench.accuracy import evaluate


def test_the_ci_subset_is_the_first_scenes_of_the_one_evaluation(tmp_path, monkeypatch):
    monkeypatch.setitem(model_card.HELDOUT, "scenes", 3)
    monkeypatch.setitem(model_card.HELDOUT, "frames_per_scene", 8)
    monkeypatch.setattr(model_card, "CI_SCENES", 2)
    monkeypatch.setattr(model_card, "camera_motion", lambda model, data: {})  # measured in its own tests
    figures = model_card.heldout_figures(default_model_dir(), tmp_path)
    assert figures["full_heldout"]["model"]["sequences"] == 3 and figures["ci_subset"]["model"]["sequences"] == 2
    alone = next(
        iter(evaluate(default_model_dir(), tmp_path / "synth_val", frames=8, max_sequences=2).means().values())
    )
    for metric, value in figures["ci_subset"]["model"].items():
        assert value == pytest.approx(alone[metric], abs=1e-9), metric
    assert figures["ci_subset"]["baselines"]["constant_depth"]["sequences"] == 2
    assert figures["full_heldout"]["model"] != figures["ci_subset"]["model"]
