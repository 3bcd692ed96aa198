"""Lens distortion (OpenCV's model): the ray of every pixel round-trips to 1e-9 pixels, the pinhole
view of a render through a lens matches a pinhole render, and bad coefficients are refused."""

from __future__ import annotations

import numpy as np
import pytest

from edgescene.core.lens import LensDistortion, distort_points, to_pinhole, undistorted_rays
from edgescene.core.manifest import Entry, ManifestError

K = np.array([[80.0, 0.0, 48.0], [0.0, 80.0, 36.0], [0.0, 0.0, 1.0]])
LENS = LensDistortion(k1=-0.18, k2=0.04, p1=0.001, p2=-0.0008)


def test_every_pixels_ray_projects_back_onto_that_pixel():
    rays = undistorted_rays(K, LENS, 72, 96)
    assert rays.shape == (72 * 96, 3) and np.all(rays[:, 2] == 1.0)
    v, u = np.mgrid[0:72, 0:96]
    back = distort_points(rays * 3.7, K, LENS)  # any depth along the ray
    assert np.abs(back - np.stack([u.ravel(), v.ravel()], 1)).max() < 1e-9
    corner = rays[0]  # barrel: the corner pixel sees farther out than a pinhole's would
    assert abs(corner[0]) > 48 / 80 and abs(corner[1]) > 36 / 80
    pinhole = [[-0.6, -0.45], [-0.5875, -0.45], [-0.6, -0.4375], [-0.5875, -0.4375]]
    np.testing.assert_allclose(undistorted_rays(K, LensDistortion(), 2, 2)[:, :2], pinhole, atol=1e-12)


def test_the_pinhole_view_of_a_render_through_a_lens_matches_a_pinhole_render():
    from edgescene.train.data.synthetic import look_at, random_scene, render

    scene = random_scene(3)
    camera = look_at(np.array([4.0, 1.5, -3.0]), np.array([0.0, 0.4, 0.0]))
    pinhole, pinhole_depth = render(scene, K, camera, 72, 96)
    lens, lens_depth = render(scene, K, camera, 72, 96, distortion=LENS)
    viewed, inside = to_pinhole(lens, K, LENS)
    viewed_depth, _ = to_pinhole(lens_depth, K, LENS, nearest=True)
    assert inside.all()  # barrel distortion: the lens saw past the pinhole's edges
    yy, xx = np.mgrid[0:72, 0:96]
    rim = np.hypot((xx - 48) / 48, (yy - 36) / 36) > 0.8  # where the lens moves pixels most
    raw = np.abs(lens.astype(float) - pinhole).mean(axis=2)[rim].mean()
    fixed = np.abs(viewed.astype(float) - pinhole).mean(axis=2)[rim].mean()
    assert fixed < 0.35 * raw, (fixed, raw)  # measured 1.0 against 3.6 (the rest: bilinear resampling)
    both = (pinhole_depth > 0) & (viewed_depth > 0)
    rel = np.abs(viewed_depth[both] - pinhole_depth[both]) / pinhole_depth[both]
    assert np.median(rel) < 0.01  # 0.0045 measured: the same surfaces, to the nearest lens pixel
    assert not np.array_equal(lens_depth, pinhole_depth)
    pincushion = LensDistortion(k1=0.2)
    _, covered = to_pinhole(lens, K, pincushion)
    assert 0.5 < covered.mean() < 1.0  # the lens saw less than the pinhole: corners are marked empty


def test_bad_coefficients_are_refused_with_the_expected_form():
    with pytest.raises(ValueError, match="4 or 5 coefficients"):
        LensDistortion.from_list([0.1, 0.2])
    with pytest.raises(ValueError, match="normalised image coordinates, not pixels"):
        LensDistortion(k1=35.0)
    assert LensDistortion.from_list([0.1, 0.0, 0.0, 0.0]).as_list() == [0.1, 0.0, 0.0, 0.0, 0.0]
    camera = {"intrinsics": K.tolist(), "extrinsics": np.eye(3, 4).tolist(), "distortion": [0.1, "x"]}
    entry = Entry(
        id="a",
        path="a.png",
        source="a.png",
        modality="visible",
        width=96,
        height=72,
        channels=3,
        bit_depth=8,
        original_width=96,
        original_height=72,
        camera=camera,
    )
    with pytest.raises(ManifestError, match="entry a: camera distortion: .*4 or 5 coefficients"):
        entry.validate()
