"""Which pixels a window fuses, and how much the alignment reads: work that follows what is kept.

A window of two constant-depth frames (a near wall and a far one in each) through the stream's own
selection, with the stride forced or automatic, checked pixel by pixel.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgescene.core.sim3 import Sim3
from edgescene.runtime import fusion_compiled
from edgescene.runtime.fusion import PointMap
from edgescene.runtime.stream import StreamConfig, StreamingReconstruction, WindowPrediction

needs_numba = pytest.mark.skipif(
    not fusion_compiled.AVAILABLE, reason="numba is not installed (the compiled fusion backend)"
)

H, W = 24, 32
F = 40.0  # focal length, pixels


def _prediction(frames: int = 2) -> WindowPrediction:
    depth = np.full((frames, H, W), 1.0, np.float32)
    depth[:, :, W // 2 :] = 2.5  # the right half is a far wall
    intrinsics = np.repeat(np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1.0]])[None], frames, axis=0)
    extrinsics = np.repeat(np.eye(3, 4)[None], frames, axis=0)
    return WindowPrediction(extrinsics, intrinsics, depth, np.full((frames, H, W), 5.0, np.float32))


def _kept(stream: StreamingReconstruction, pred: WindowPrediction, i: int = 0) -> np.ndarray:
    """Flat indices of the pixels of frame ``i`` the stream fuses (its numpy selection)."""
    sel = stream._selection(pred, pred.depth_conf, i, pred.intrinsics[i], 1.0)
    return stream._fused_pixels(pred.depth_conf[i], pred.depth[i], sel)


def _stream(**config) -> StreamingReconstruction:
    stream = StreamingReconstruction(lambda images: _prediction(len(images)), StreamConfig(**config))
    stream.map = PointMap(voxel_size=0.05)
    return stream


def test_stride_keeps_near_pixels_on_a_moving_grid_and_every_far_pixel():
    stream = _stream(fuse_stride=2, fuse_spacing=2.0, conf_percentile=0, max_depth_ratio=None)
    pred = _prediction()
    # cut = spacing x voxel x f / stride = 2 x 0.05 x 40 / 2 = 2.0: the near wall (1.0) is sampled, the far (2.5) is not
    covered = np.zeros(H * W, dtype=int)
    for keyframe in range(4):
        stream._keyframes = keyframe
        pixels = _kept(stream, pred)
        near = pixels[(pixels % W) < W // 2]
        far = pixels[(pixels % W) >= W // 2]
        assert len(near) == (H // 2) * (W // 4)  # one pixel in four
        assert len(far) == H * W // 2  # all of them
        covered[pixels] += 1
    near_mask = (np.arange(H * W) % W) < W // 2
    assert (covered[near_mask] == 1).all()  # four keyframes' phases tile the near wall exactly once


def test_automatic_stride_is_one_where_pixels_are_coarser_than_voxels():
    stream = _stream(conf_percentile=0, max_depth_ratio=None)  # fuse_spacing 1: median 2.5 m -> 6 cm a pixel
    pred = _prediction()
    pixels = _kept(stream, pred)
    assert len(pixels) == H * W
    coarse = _stream(conf_percentile=0, max_depth_ratio=None)
    coarse.map = PointMap(voxel_size=0.5)  # voxels of 0.5 m: many pixels each, a stride of 11 at the median
    pixels = _kept(coarse, pred)
    near = pixels[(pixels % W) < W // 2]
    assert sorted(near) == [0, 11, 352, 363, 704, 715]  # the near wall on the stride-11 grid (rows 0, 11, 22)
    assert (pixels % W >= W // 2).sum() == H * W // 2  # the far wall beyond the cut depth: every pixel


def test_map_points_of_the_kept_pixels_equal_unprojecting_everything():
    from edgescene.core.geometry import unproject_depth

    stream = _stream(conf_percentile=0, max_depth_ratio=None)
    pred = _prediction()
    pred.extrinsics[1] = np.concatenate([np.eye(3), [[0.1], [0.0], [0.2]]], axis=1)
    placement = Sim3(2.0, np.eye(3), np.array([1.0, 0.0, 0.0]))
    extr, intr = stream._to_map(pred.extrinsics[1], pred.intrinsics[1], placement)
    pixels = np.array([0, 5, W + 3, H * W - 1])
    got = stream._map_points(pred, 1, pixels, extr, intr, placement)
    everything = placement.apply(unproject_depth(pred.depth[1:2], pred.extrinsics[1:2], pred.intrinsics[1:2])[0])
    assert np.allclose(got, everything.reshape(-1, 3)[pixels], atol=1e-12)


@pytest.mark.parametrize("limit", [16, 100])
def test_alignment_reads_at_most_align_points_samples(limit, monkeypatch):
    import edgescene.runtime.stream as module

    stream = _stream(align_points=limit, align_stride=2)
    fits = []
    original = module.robust_umeyama_sim3

    def spy(src, dst, weights):
        fits.append(len(src))
        return original(src, dst, weights)

    monkeypatch.setattr(module, "robust_umeyama_sim3", spy)
    images = np.zeros((1, 3, H, W), np.float32)
    for i in range(12):
        stream.push(images[0] + i / 100.0, np.zeros((H, W, 3), np.uint8))
    stream.finish()
    assert fits and all(n == limit for n in fits)


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]) @ np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


@needs_numba
@pytest.mark.parametrize("config", [{}, {"fuse_stride": 3, "fuse_spacing": 2.0}, {"max_depth_ratio": None}])
def test_compiled_selection_gives_the_numpy_points_bit_for_bit(config):
    """The compiled loop keeps the same pixels, in the same order, at the same float64 values."""
    rng = np.random.default_rng(4)
    pred = _prediction()
    pred.depth[0] = rng.uniform(0.5, 9.0, (H, W)).astype(np.float32)  # beyond 3x the median too
    pred.depth[0, 0, :3] = [np.nan, np.inf, 0.0]
    pred.depth_conf[0] = rng.uniform(1.0, 10.0, (H, W)).astype(np.float32)
    pred.depth_conf[0, 1, :2] = [np.nan, 1e-7]
    stream = _stream(**config)
    stream._keyframes = 5  # a grid phase other than 0
    placement = Sim3(1.7, _rotation(0.4), np.array([0.3, -1.2, 2.0]))
    pred.extrinsics[0] = np.concatenate([_rotation(-0.2), [[0.1], [0.2], [-0.3]]], axis=1)
    extr, intr = stream._to_map(pred.extrinsics[0], pred.intrinsics[0], placement)
    sel = stream._selection(pred, pred.depth_conf, 0, intr, placement.s)
    pixels = stream._fused_pixels(pred.depth_conf[0], pred.depth[0], sel)
    expected = stream._map_points(pred, 0, pixels, extr, intr, placement)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = (np.empty((H * W, 3)), np.empty((H * W, 3), np.uint8), np.empty(H * W))
    n = fusion_compiled.select_depth_points(
        pred.depth[0], pred.depth_conf[0], rgb, sel.threshold, sel.max_depth, sel.stride, sel.phase_row,
        sel.phase_col, sel.cut, placement.s, intr, extr, *out,
    )  # fmt: skip
    assert 0 < n == len(pixels) < H * W
    np.testing.assert_array_equal(out[0][:n], expected)  # bit for bit
    np.testing.assert_array_equal(out[1][:n], rgb.reshape(-1, 3)[pixels])
    np.testing.assert_array_equal(out[2][:n], pred.depth_conf[0].reshape(-1)[pixels].astype(np.float64))
