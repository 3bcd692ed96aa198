"""Metric depth on the Middlebury pair: the runtime with the pair's calibration and baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgescene.assets import default_model_dir
from edgescene.bench import middlebury_metric

pytest.importorskip("skimage", reason="the Middlebury pair ships with scikit-image (the data extra)")
COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "bench" / "metric" / "middlebury_motorcycle.json"


def test_metric_depth_of_the_bundled_model_is_the_committed_figure(tmp_path):
    figures = middlebury_metric.measure(default_model_dir(), tmp_path)
    committed = json.loads(COMMITTED.read_text())
    assert figures["fit"]["mode"] == "scale" and figures["fit"]["positions_used"] == 2
    for key, value in committed["mean"].items():
        assert figures["mean"][key] == pytest.approx(value, abs=2e-3), key
    # median-scaled, the runtime's two views score what `edgescene eval` scores on the pair (the card)
    card = json.loads((default_model_dir() / "eval.json").read_text())["middlebury"]
    assert figures["mean"]["median_scaled_abs_rel"] == pytest.approx(card["model"]["abs_rel"], abs=0.01)
    assert figures["mean"]["constant_abs_rel"] == pytest.approx(card["constant_depth"]["abs_rel"], abs=0.01)
