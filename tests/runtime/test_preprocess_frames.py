"""Tests for edgescene.core.preprocess: crop / pad mappings, pixels, intrinsics, sizes."""

from __future__ import annotations

import numpy as np
import pytest

from edgescene.core.preprocess import Resize, fit, model_size_for, prepare, prepare_batch
from edgescene.runtime.frames import Frame


def marker_image(h: int, w: int, cx: float, cy: float, r: int = 6) -> np.ndarray:
    """Black image with a white disc of radius r centred on (cx, cy) (continuous coordinates)."""
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    img = np.zeros((h, w, 3), np.uint8)
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = 255
    return img


def centroid(channel: np.ndarray) -> tuple[float, float]:
    yy, xx = np.mgrid[0 : channel.shape[0], 0 : channel.shape[1]] + 0.5
    wgt = channel.astype(np.float64)
    return float((xx * wgt).sum() / wgt.sum()), float((yy * wgt).sum() / wgt.sum())


# ----------------------------------------------------------------------------- fit


def test_crop_mapping_centre_to_centre():
    r = fit(480, 640, 392, 518, "crop")
    assert isinstance(r, Resize) and r.mode == "crop"
    assert r.scale == pytest.approx(392 / 480)  # covers: the height fits exactly, width overhangs
    assert r.offset_y == 0 and r.offset_x < 0
    np.testing.assert_allclose(r.to_model_points([320.0, 240.0]), [259.0, 196.0])
    np.testing.assert_allclose(r.to_source_points([259.0, 196.0]), [320.0, 240.0])
    assert r.valid_mask().all()  # nothing padded in crop mode


def test_crop_portrait_loses_top_and_bottom():
    r = fit(640, 480, 518, 518, "crop")
    assert r.scale == pytest.approx(518 / 480)
    assert r.offset_x == 0 and r.offset_y == pytest.approx((518 - 640 * 518 / 480) / 2)
    u, v = r.to_model_points(np.array([[0.0, 0.0], [480.0, 640.0]])).T
    assert u.tolist() == pytest.approx([0, 518]) and v[0] < 0 and v[1] > 518


def test_pad_mapping_corners_and_valid_mask():
    r = fit(480, 640, 518, 518, "pad")
    s = 518 / 640
    assert r.scale == pytest.approx(s) and r.offset_x == 0 and r.offset_y > 0
    corners = r.to_model_points(np.array([[0.0, 0.0], [640.0, 480.0]]))
    np.testing.assert_allclose(corners, [[0, (518 - 480 * s) / 2], [518, (518 + 480 * s) / 2]])
    np.testing.assert_allclose(r.to_model_points([320.0, 240.0]), [259.0, 259.0])
    mask = r.valid_mask()
    assert mask.shape == (518, 518) and mask.dtype == bool
    assert abs(int(mask.sum()) - 480 * s * 518) <= 518  # within one row
    rows = np.flatnonzero(mask.any(1))
    assert abs(rows[0] - r.offset_y) <= 1 and abs(rows[-1] + 1 - (r.offset_y + 480 * s)) <= 1
    assert mask[rows[0]].all() and mask.any(0).all()  # the full width is image


def test_fit_validates():
    with pytest.raises(ValueError, match="'crop', 'pad'"):
        fit(10, 10, 14, 14, "stretch")
    with pytest.raises(ValueError, match="dst_h"):
        fit(10, 10, 0, 14, "crop")
    with pytest.raises(ValueError, match="dst_w"):
        fit(10, 10, 14, -3, "pad")


# ----------------------------------------------------------------------------- intrinsics


def test_to_source_intrinsics_round_trip_and_projection():
    K_src = np.array([[600.0, 0, 320], [0, 610.0, 240], [0, 0, 1]])
    for mode in ("crop", "pad"):
        r = fit(480, 640, 392, 518, mode)
        K_model = r.to_model_intrinsics(K_src)
        np.testing.assert_allclose(r.to_source_intrinsics(K_model), K_src, atol=1e-9)
        # a principal point at the source centre lands at the model centre
        np.testing.assert_allclose(K_model[:2, 2], [259, 196], atol=1e-9)
        # projecting with K_model equals projecting with K_src then mapping the pixel
        X = np.array([0.3, -0.2, 2.0])
        uv_model = (K_model @ X)[:2] / X[2]
        uv_src = (K_src @ X)[:2] / X[2]
        np.testing.assert_allclose(r.to_model_points(uv_src), uv_model, atol=1e-9)


def test_to_source_intrinsics_known_values_and_batch():
    r = fit(480, 640, 259, 518, "pad")  # 518 / 640 would make the height 388.5 > 259: the height limits
    assert r.scale == pytest.approx(259 / 480)
    K_model = np.array([[100.0, 0, 259], [0, 100.0, 129.5], [0, 0, 1]], np.float32)
    K = r.to_source_intrinsics(np.stack([K_model, K_model]))
    assert K.shape == (2, 3, 3) and K.dtype == np.float32
    s, ox = r.scale, r.offset_x
    np.testing.assert_allclose(K[1], [[100 / s, 0, (259 - ox) / s], [0, 100 / s, 129.5 / s], [0, 0, 1]], rtol=1e-6)
    np.testing.assert_allclose(K[0, :2, 2], [320, 240], rtol=1e-6)
    with pytest.raises(ValueError, match="3, 3"):
        r.to_source_intrinsics(np.eye(2))


# ----------------------------------------------------------------------------- pixels


@pytest.mark.parametrize("mode", ["crop", "pad"])
@pytest.mark.parametrize(
    "src_hw,dst_hw",
    [((480, 640), (392, 518)), ((640, 480), (518, 518)), ((60, 80), (140, 210)), ((300, 200), (98, 140))],
)
def test_pixels_follow_the_mapping(mode, src_hw, dst_hw):
    (h, w), (dh, dw) = src_hw, dst_hw
    r = fit(h, w, dh, dw, mode)
    xy = np.array([0.55 * w, 0.45 * h])  # inside the crop window in every case here
    img = prepare(marker_image(h, w, *xy, r=max(3, min(h, w) // 12)), r)
    marker = np.where(r.valid_mask(), img[0], 0.0)
    np.testing.assert_allclose(centroid(marker), r.to_model_points(xy), atol=0.75)


def test_white_padding_dtype_range_shape():
    rgb = np.zeros((480, 640, 3), np.uint8)  # black image: everything white is padding
    r = fit(480, 640, 518, 518, "pad")
    out = prepare(rgb, r)
    assert out.shape == (3, 518, 518) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    mask = r.valid_mask()
    assert np.all(out[:, ~mask] == 1.0)
    assert np.all(out[:, mask] == 0.0)
    crop = prepare(rgb, fit(480, 640, 392, 518, "crop"))
    assert crop.shape == (3, 392, 518) and np.all(crop == 0.0)


def test_values_and_interpolation_range():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    same = prepare(rgb, fit(50, 70, 50, 70, "crop"))  # identity: exact values / 255
    np.testing.assert_allclose(same, rgb.transpose(2, 0, 1) / 255.0, atol=1e-7)
    up = prepare(rgb, fit(50, 70, 196, 280, "crop"))  # cubic enlarging may overshoot: stays in [0, 1]
    assert up.min() >= 0 and up.max() <= 1 and up.dtype == np.float32
    r = fit(500, 700, 98, 140, "pad")  # 137.2 px wide: a column or two of padding each side
    flat = prepare(np.full((500, 700, 3), 128, np.uint8), r)
    mask = r.valid_mask()
    assert (~mask).sum() > 0 and np.all(flat[:, ~mask] == 1.0)
    np.testing.assert_allclose(flat[:, mask], 128 / 255, atol=1e-6)  # area-averaged shrink of a flat image
    with pytest.raises(ValueError, match="fit"):
        prepare(rgb, fit(40, 70, 14, 14, "crop"))


def test_prepare_batch_mixed_sizes_and_frames():
    a = np.zeros((480, 640, 3), np.uint8)
    b = np.full((300, 200, 3), 255, np.uint8)
    frame = Frame(index=0, timestamp_s=None, rgb=a, source="a.png")
    images, resizes = prepare_batch([frame, b], 392, 518, "pad")
    assert images.shape == (2, 3, 392, 518) and images.dtype == np.float32
    assert [(x.src_h, x.src_w) for x in resizes] == [(480, 640), (300, 200)]
    assert resizes[1].offset_x > 0 and resizes[1].offset_y == 0
    with pytest.raises(ValueError):
        prepare_batch([], 14, 14, "crop")


# ----------------------------------------------------------------------------- size rule


def test_model_size_for():
    assert model_size_for(480, 640) == (392, 518)
    assert model_size_for(640, 480) == (518, 392)
    assert model_size_for(1080, 1920) == (294, 518)
    assert model_size_for(1000, 1000) == (518, 518)
    assert model_size_for(10, 4000) == (14, 518)  # never below one patch
    h, w = model_size_for(720, 1280, long_side=252)
    assert (h, w) == (140, 252) and h % 14 == 0
    with pytest.raises(ValueError, match="multiple of 14"):
        model_size_for(480, 640, long_side=500)
