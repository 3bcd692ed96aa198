"""The Middlebury 2014 Motorcycle pair as an eval dataset: ground truth consistent with its cameras,
and `edgescene eval` scoring the bundled model beside the constant-depth baseline on it."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("skimage", reason="scikit-image ships the Middlebury pair (pip install scikit-image)")

from bundled import BUNDLED_PRESET

from edgescene.assets import default_model_dir
from edgescene.cli import main
from edgescene.core.geometry import project_points, unproject_depth
from edgescene.core.manifest import read_manifest
from edgescene.train.data.middlebury import (
    cameras,
    disparity_to_depth,
    load_motorcycle,
    write_middlebury_motorcycle,
)


def test_depth_follows_the_calibration():
    left, right, disparity = load_motorcycle()
    assert left.shape == right.shape == (500, 741, 3) and disparity.shape == (500, 741)
    depth = disparity_to_depth(disparity)
    valid = depth > 0
    assert 0.9 < valid.mean() < 0.95  # NaN / inf disparities carry no ground truth
    assert depth[valid].min() > 2.0 and depth[valid].max() < 5.5  # metres: f * B / (d + doffs)
    y, x = np.argwhere(valid)[1000]
    assert depth[y, x] == pytest.approx(994.978 * 0.193001 / (disparity[y, x] + 31.086), rel=1e-6)


def test_right_depth_is_the_left_surface_seen_from_the_right_camera(tmp_path):
    folder = write_middlebury_motorcycle(tmp_path / "mb")
    entries = read_manifest(folder).sequences()["motorcycle"]
    assert [e.id for e in entries] == ["motorcycle#left", "motorcycle#right"]
    depth_left, depth_right = (np.load(folder / e.depth) for e in entries)
    k_left, e_left, k_right, e_right = (np.array(m) for m in cameras())
    points = unproject_depth(depth_left[None], e_left[None], k_left[None])[0][depth_left > 0]
    pixels, z = project_points(points, e_right, k_right)
    u, v = np.rint(pixels[:, 0]).astype(int), np.rint(pixels[:, 1]).astype(int)
    inside = (u >= 0) & (u < 741)
    seen = depth_right[v[inside], u[inside]]
    hit = seen > 0
    assert hit.mean() > 0.9  # most points land where the warp put depth
    rel = np.abs(seen[hit] - z[inside][hit]) / z[inside][hit]
    assert np.median(rel) < 1e-6  # the same surface (occlusions keep the nearer one)
    with pytest.raises(FileExistsError):
        write_middlebury_motorcycle(folder)


def test_eval_on_middlebury_prints_the_bundled_model_beside_constant_depth(capsys):
    """The figures of the bundled model's card (``eval.json``, section ``middlebury``)."""
    card = json.loads((default_model_dir() / "eval.json").read_text())["middlebury"]
    assert main(["eval", "--model", str(default_model_dir()), "--dataset", "middlebury-motorcycle", "--baselines"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.startswith((BUNDLED_PRESET, "constant_depth"))
    }
    model_absrel, constant_absrel = float(rows[BUNDLED_PRESET][4]), float(rows["constant_depth"][2])
    assert model_absrel == pytest.approx(card["model"]["abs_rel"], abs=2e-3)
    assert constant_absrel == pytest.approx(card["constant_depth"]["abs_rel"], abs=1e-3)
    assert constant_absrel == pytest.approx(0.2061, abs=1e-3)  # measured 2026-11-27; the data, not the model
