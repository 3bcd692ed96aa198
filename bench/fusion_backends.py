"""The project's numpy voxel map beside open3d's CPU hash map, on the stream's own fusion job.

    python -m edgescene.bench.fusion_backends --out docs/bench/runtime/fusion_backends.json \
        --frames 48 --sizes 294x518,392x518,518x518

Builds its own input: a synthetic room (floor, ceiling, walls, three boxes, checker-textured)
seen by a camera moving along a path (deterministic seeds), ray-cast to depth maps at each size,
with 0.3 % depth noise and a confidence that falls with depth. Each frame is unprojected to world
points (:func:`edgescene.core.geometry.unproject_depth`), the top 50 % by confidence are kept
(:func:`edgescene.runtime.fusion.confidence_mask`, as the stream does) and weighted by their
confidence; the voxel size is the median depth / 250 (the stream's default). Then, in one process,
interleaved (the order alternates every repeat), medians of several repeats after a warm-up:

(a) fusion: ms per frame to fuse the whole stream, one ``add`` per frame, into a voxel map
    holding per voxel the weighted mean position and colour and the summed weight:
    ``numpy`` = :class:`edgescene.runtime.fusion.PointMap` (with the stream's default cap) in numpy;
    ``compiled`` = the same map with its compiled (numba) loop, the default where numba is installed;
    ``open3d-hashmap`` = ``open3d.core.HashMap`` (CPU, Int32 (3,) keys, Float64 (7,) sums) on the same keys
    ``floor(p / voxel)``, a per-frame ``HashSet`` grouping the batch and numpy ``bincount`` adding
    it into the map's value buffer (open3d's Python API has no scatter-add); ``open3d-tsdf`` =
    ``open3d.t.geometry.VoxelBlockGrid`` TSDF integration of the same frames' depth (the same
    pixels: dropped ones get depth 0), a different algorithm (a signed-distance volume, not point
    averaging), timed as what it is and not compared;
(b) a one-shot voxel downsample of one frame: :func:`edgescene.runtime.fusion.voxel_downsample`
    (weighted, and unweighted) beside the open3d hash map (weighted, one ``add``), the tensor
    ``open3d.t.geometry.PointCloud.voxel_down_sample`` and the legacy
    ``open3d.geometry.PointCloud.voxel_down_sample`` (both unweighted means; conversions from and to
    numpy included, as a caller pays them);
(c) agreement with the numpy result (same voxel count, positions within 1e-4 voxel, colours
    within 1, weights within 1e-6 relative; max differences reported); a backend that disagrees
    is reported as such. ``PointMap`` is also checked against ``voxel_downsample`` of all frames.

Also: open3d's import time (fresh interpreters, numpy already imported), its installed size (the
``open3d`` folder, as du counts it), the peak memory (RSS) a fusion run adds, and the machine.
Without open3d installed it measures numpy only and says open3d is absent. Only the CPU build is
measured: open3d's CUDA device needs a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgescene.core.geometry import unproject_depth
from edgescene.runtime import fusion_compiled
from edgescene.runtime.fusion import PointMap, confidence_mask, voxel_downsample
from edgescene.runtime.stream import StreamConfig

SEED = 0
POS_TOL = 1e-4  # max |position difference| / voxel size for two results to agree
COLOR_TOL = 1  # max colour difference (uint8 steps: the rounding of a mean may differ)
WEIGHT_TOL = 1e-6  # max relative summed-weight difference

Result = tuple[np.ndarray, np.ndarray, np.ndarray]  # points (M, 3) float32, colors (M, 3) uint8, weights (M,)


# ----------------------------------------------------------------------------- synthetic input

ROOM = (np.array([-4.0, -1.2, -4.0]), np.array([4.0, 1.6, 6.0]))  # y points down: floor at y = 1.6
BOXES = [
    (np.array([-1.5, 0.8, 2.0]), np.array([-0.5, 1.6, 3.0])),
    (np.array([0.8, 0.4, 1.0]), np.array([1.8, 1.6, 1.8])),
    (np.array([2.0, -0.5, 3.5]), np.array([3.0, 1.6, 4.5])),
]
COLOURS = np.array([[180, 170, 150], [200, 60, 50], [60, 120, 200], [70, 170, 90]], dtype=np.float64)


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    """Camera-to-world rotation: pitch about x, then yaw about y (OpenCV axes)."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return ry @ rx


def camera_path(frames: int) -> np.ndarray:
    """(S, 3, 4) camera-from-world extrinsics of a camera walking across the room, panning."""
    out = np.zeros((frames, 3, 4))
    for i, t in enumerate(np.linspace(0.0, 1.0, frames)):
        centre = np.array([-1.5 + 3.0 * t, -0.1 + 0.1 * np.sin(3 * t), -2.5 + 1.5 * t])
        r_wc = _rotation(0.6 * np.sin(np.pi * t) - 0.3, 0.15)
        out[i, :, :3] = r_wc.T
        out[i, :, 3] = -r_wc.T @ centre
    return out


def render(h: int, w: int, frames: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """Depth (S, H, W) float32, rgb (S, H, W, 3) uint8, conf (S, H, W) float32, extrinsics (S, 3, 4),
    intrinsics (S, 3, 3) of the synthetic room, ray-cast (exact planes, then depth noise)."""
    rng = np.random.default_rng(seed)
    extrinsics = camera_path(frames)
    focal = 0.8 * w
    k = np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1]])
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays_cam = np.stack([(u - k[0, 2]) / focal, (v - k[1, 2]) / focal, np.ones_like(u)], -1).reshape(-1, 3)
    depth = np.empty((frames, h, w), np.float32)
    rgb = np.empty((frames, h, w, 3), np.uint8)
    conf = np.empty((frames, h, w), np.float32)
    for s in range(frames):
        r_wc = extrinsics[s, :, :3].T
        origin = -r_wc @ extrinsics[s, :, 3]
        d = rays_cam @ r_wc.T  # world direction whose camera z is 1: the ray parameter is z-depth
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d
            lo, hi = (ROOM[0] - origin) * inv, (ROOM[1] - origin) * inv
            t = np.min(np.maximum(lo, hi), axis=1)  # leaving the room from inside
            obj = np.zeros(len(d), np.int64)
            for j, (blo, bhi) in enumerate(BOXES, start=1):
                a, b = (blo - origin) * inv, (bhi - origin) * inv
                near, far = np.max(np.minimum(a, b), axis=1), np.min(np.maximum(a, b), axis=1)
                hit = (near <= far) & (near > 0) & (near < t)
                t[hit], obj[hit] = near[hit], j
        world = origin + t[:, None] * d
        checker = np.floor(world / 0.25).astype(np.int64).sum(axis=1) % 2
        colour = COLOURS[obj] * (0.75 + 0.25 * checker[:, None]) + rng.normal(0, 6, (len(d), 3))
        depth[s] = (t * (1 + 0.003 * rng.standard_normal(len(d)))).reshape(h, w)
        rgb[s] = np.clip(np.rint(colour), 0, 255).astype(np.uint8).reshape(h, w, 3)
        conf[s] = (1 + 9 * np.exp(-t / 4) * rng.uniform(0.5, 1.0, len(d))).reshape(h, w)
    return {
        "depth": depth,
        "rgb": rgb,
        "conf": conf,
        "extrinsics": extrinsics,
        "intrinsics": np.repeat(k[None], frames, 0),
    }


def stream_input(scene: dict[str, np.ndarray]) -> tuple[list[Result], float, np.ndarray]:
    """Per frame (world points float32, colours uint8, confidence weights float64) of the top 50 %
    by confidence, the stream's voxel size (median depth / 250) and the keep masks (S, H, W)."""
    depth = scene["depth"]
    points = unproject_depth(depth, scene["extrinsics"].astype(np.float32), scene["intrinsics"].astype(np.float32))
    voxel = float(np.median(depth[depth > 0])) / 250.0
    frames, keeps = [], []
    for s in range(len(depth)):
        keep = confidence_mask(scene["conf"][s], 50.0)
        keeps.append(keep)
        frames.append(
            (points[s][keep].astype(np.float32), scene["rgb"][s][keep], scene["conf"][s][keep].astype(np.float64))
        )
    return frames, voxel, np.stack(keeps)


# ----------------------------------------------------------------------------- backends


def open3d_or_none():
    """The open3d module, or None where it is not installed."""
    try:
        import open3d
    except ImportError:
        return None
    return open3d


class ProjectMap:
    """:class:`PointMap` as the stream makes it (its default cap, ``StreamConfig.max_points``, which
    the walk never reaches), with ``backend`` "numpy" or "compiled"."""

    def __init__(self, voxel: float, backend: str = "numpy") -> None:
        self.map = PointMap(voxel, max_points=StreamConfig.max_points, backend=backend)

    def add(self, points: np.ndarray, colors: np.ndarray, weights: np.ndarray) -> None:
        self.map.add(points, colors, weights)

    def result(self) -> Result:
        return self.map.points, self.map.colors, self.map.weights


class Open3dHashMap:
    """Weighted-mean voxel map on ``open3d.core.HashMap`` (CPU): Int32 (3,) keys ``floor(p / voxel)``,
    Float64 (7,) values (summed weight, weighted sums of x, y, z, r, g, b).

    Per batch: keys computed as PointMap computes them; a fresh ``HashSet`` groups the batch (its buffer
    indices are the group ids); numpy ``bincount`` sums each group (open3d's Python API has no
    scatter-add); the batch's unique keys are inserted into the map with zero values (existing keys
    keep theirs), found, and their sums added into the map's value buffer in place (no duplicates, so
    a fancy-indexed ``+=`` is exact). The map's capacity doubles ahead of need (one rehash at a time).
    """

    name = "open3d-hashmap"

    def __init__(self, voxel: float) -> None:
        self.o3c = open3d_or_none().core
        self.voxel = float(voxel)
        self.cpu = self.o3c.Device("CPU:0")
        self.map = self.o3c.HashMap(1024, self.o3c.int32, (3,), self.o3c.float64, (7,), self.cpu)

    def group(self, keys: np.ndarray) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
        """Group id per point (N,), the number of ids and per group its id and key (G,), (G, 3)."""
        tkeys = self.o3c.Tensor.from_numpy(keys)
        group = self.o3c.HashSet(max(len(keys), 1), self.o3c.int32, (3,), self.cpu)
        group.insert(tkeys)
        gid = group.find(tkeys)[0].numpy().astype(np.intp)
        slots = group.active_buf_indices().numpy().astype(np.intp)
        n = max(group.capacity(), int(gid.max(initial=-1)) + 1)
        return gid, n, slots, group.key_tensor().numpy()[slots]

    def add(self, points: np.ndarray, colors: np.ndarray, weights: np.ndarray) -> None:
        o3c = self.o3c
        keys = np.ascontiguousarray(np.floor(points.astype(np.float64) / self.voxel).astype(np.int32))
        gid, n, slots, ukeys = self.group(keys)
        w = weights.astype(np.float64)
        p, c = points.astype(np.float64), colors.astype(np.float64)
        cols = [w] + [w * p[:, j] for j in range(3)] + [w * c[:, j] for j in range(3)]
        sums = np.stack([np.bincount(gid, weights=x, minlength=n)[slots] for x in cols], axis=1)
        need = self.map.size() + len(ukeys)
        if need > self.map.capacity():
            self.map.reserve(max(need, 2 * self.map.capacity()))
        tuk = o3c.Tensor.from_numpy(np.ascontiguousarray(ukeys))
        self.map.insert(tuk, o3c.Tensor.zeros((len(ukeys), 7), o3c.float64, self.cpu))
        rows = self.map.find(tuk)[0].numpy().astype(np.intp)
        values = self.map.value_tensor().numpy()  # shares the map's buffer
        values[rows] += sums

    def result(self) -> Result:
        active = self.map.active_buf_indices().numpy().astype(np.intp)
        v = self.map.value_tensor().numpy()[active]
        w = v[:, 0]
        xyz, rgb = v[:, 1:4] / w[:, None], v[:, 4:7] / w[:, None]
        return xyz.astype(np.float32), np.clip(np.rint(rgb), 0, 255).astype(np.uint8), w.copy()


class Open3dHashMapNumpyGroup(Open3dHashMap):
    """:class:`Open3dHashMap` with the batch grouped by numpy (``np.unique`` of the keys packed into one
    int64, as PointMap groups) instead of an open3d ``HashSet``: open3d holds only the map's index."""

    name = "open3d-hashmap-npgroup"

    def group(self, keys: np.ndarray) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
        k = keys.astype(np.int64) + (1 << 20)  # int32 keys of this bench stay within +-2**20
        packed = (k[:, 0] << 42) | (k[:, 1] << 21) | k[:, 2]
        _, first, gid = np.unique(packed, return_index=True, return_inverse=True)
        return gid.reshape(-1), len(first), np.arange(len(first)), keys[first]


class Open3dTsdf:
    """``open3d.t.geometry.VoxelBlockGrid`` TSDF integration (tsdf, weight, colour; 8^3 blocks) of
    each frame's depth (pixels the confidence filter drops set to 0); a different algorithm."""

    name = "open3d-tsdf"

    def __init__(self, voxel: float, depth_max: float) -> None:
        o3d = open3d_or_none()
        self.o3d, self.o3c = o3d, o3d.core
        self.depth_max = float(depth_max)
        self.grid = o3d.t.geometry.VoxelBlockGrid(
            ("tsdf", "weight", "color"),
            (self.o3c.float32, self.o3c.float32, self.o3c.float32),
            ((1,), (1,), (3,)),
            voxel_size=voxel,
            block_resolution=8,
            block_count=20000,
            device=self.o3c.Device("CPU:0"),
        )

    def add_depth(self, depth: np.ndarray, rgb: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray) -> None:
        o3d, o3c = self.o3d, self.o3c
        d = o3d.t.geometry.Image(o3c.Tensor.from_numpy(np.ascontiguousarray(depth, np.float32)))
        c = o3d.t.geometry.Image(o3c.Tensor.from_numpy(rgb.astype(np.float32) / 255.0))
        k = o3c.Tensor.from_numpy(np.ascontiguousarray(intrinsics, np.float64))
        e = o3c.Tensor.from_numpy(np.ascontiguousarray(np.vstack([extrinsics, [0, 0, 0, 1]]), np.float64))
        blocks = self.grid.compute_unique_block_coordinates(d, k, e, 1.0, self.depth_max)
        self.grid.integrate(blocks, d, c, k, e, 1.0, self.depth_max)

    def voxels(self) -> int:
        return int(self.grid.hashmap().size()) * 8**3


def downsample_numpy(points, colors, weights, voxel) -> Result:
    return voxel_downsample(points, colors, voxel, weights)


def downsample_numpy_unweighted(points, colors, weights, voxel) -> Result:
    return voxel_downsample(points, colors, voxel)


def downsample_open3d_hashmap(points, colors, weights, voxel) -> Result:
    m = Open3dHashMap(voxel)
    m.add(points, colors, weights)
    return m.result()


def downsample_open3d_tensor(points, colors, weights, voxel) -> Result:
    """``open3d.t.geometry.PointCloud.voxel_down_sample`` (unweighted mean of positions and colours)."""
    o3d = open3d_or_none()
    pcd = o3d.t.geometry.PointCloud(o3d.core.Tensor.from_numpy(np.ascontiguousarray(points)))
    pcd.point.colors = o3d.core.Tensor.from_numpy(colors.astype(np.float32))
    down = pcd.voxel_down_sample(voxel)
    rgb = down.point.colors.numpy()
    n = np.ones(len(rgb))  # no weights: the count is not returned
    return down.point.positions.numpy().astype(np.float32), np.clip(np.rint(rgb), 0, 255).astype(np.uint8), n


def downsample_open3d_tensor_f64(points, colors, weights, voxel) -> Result:
    """As :func:`downsample_open3d_tensor` with float64 positions (open3d then computes the keys in float64,
    as numpy does; with float32 positions it divides in float32 and a point can land in the next voxel)."""
    return downsample_open3d_tensor(points.astype(np.float64), colors, weights, voxel)


def downsample_open3d_legacy(points, colors, weights, voxel) -> Result:
    """Legacy ``open3d.geometry.PointCloud.voxel_down_sample`` (grid anchored at the bounding box's
    minimum minus half a voxel, not at the origin; colours in [0, 1])."""
    o3d = open3d_or_none()
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    pcd.colors = o3d.utility.Vector3dVector(colors.astype(np.float64) / 255.0)
    down = pcd.voxel_down_sample(voxel)
    rgb = np.asarray(down.colors) * 255.0
    n = np.ones(len(rgb))
    return np.asarray(down.points).astype(np.float32), np.clip(np.rint(rgb), 0, 255).astype(np.uint8), n


# ----------------------------------------------------------------------------- agreement


def _sorted(result: Result, voxel: float) -> tuple[np.ndarray, Result]:
    """Voxel keys of the result's positions and the result, both in lexicographic (key, position) order."""
    p, c, w = result
    keys = np.floor(p.astype(np.float64) / voxel).astype(np.int64)
    order = np.lexsort((p[:, 2], p[:, 1], p[:, 0], keys[:, 2], keys[:, 1], keys[:, 0]))
    return keys[order], (p[order], c[order], w[order])


def compare(ref: Result, res: Result, voxel: float, weights: bool = True) -> dict[str, Any]:
    """Agreement of ``res`` with ``ref``: voxel counts, and where they match, max differences."""
    out: dict[str, Any] = {"voxels_ref": len(ref[0]), "voxels": len(res[0])}
    (kr, r), (kx, x) = _sorted(ref, voxel), _sorted(res, voxel)
    if len(kr) != len(kx) or not np.array_equal(kr, kx):
        rows_r, rows_x = {tuple(k) for k in kr.tolist()}, {tuple(k) for k in kx.tolist()}
        out.update(agrees=False, keys_only_in_ref=len(rows_r - rows_x), keys_only_in_result=len(rows_x - rows_r))
        return out
    dpos = float(np.max(np.abs(r[0].astype(np.float64) - x[0]), initial=0.0)) / voxel
    dcol = int(np.max(np.abs(r[1].astype(np.int64) - x[1]), initial=0))
    dw = float(np.max(np.abs(r[2] - x[2]) / r[2], initial=0.0)) if weights else None
    ok = dpos <= POS_TOL and dcol <= COLOR_TOL and (dw is None or dw <= WEIGHT_TOL)
    out.update(agrees=bool(ok), max_pos_diff_voxels=dpos, max_color_diff=dcol, max_weight_rel_diff=dw)
    return out


# ----------------------------------------------------------------------------- measurement


def _peak_reset() -> int | None:
    """Reset the process's peak RSS (VmHWM) to its current RSS; the current RSS in KiB, None if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS")
    except OSError:
        return None


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def fuse(make, frames: list[Result]) -> tuple[float, Any]:
    """Seconds to fuse all frames into a fresh map made by ``make()``, and the map."""
    m = make()
    start = time.perf_counter()
    for p, c, w in frames:
        m.add(p, c, w)
    return time.perf_counter() - start, m


def fuse_tsdf(make, scene: dict[str, np.ndarray], keeps: np.ndarray) -> tuple[float, Any]:
    m = make()
    depth = np.where(keeps, scene["depth"], 0).astype(np.float32)
    start = time.perf_counter()
    for s in range(len(depth)):
        m.add_depth(depth[s], scene["rgb"][s], scene["intrinsics"][s], scene["extrinsics"][s])
    return time.perf_counter() - start, m


def bench_size(h: int, w: int, n_frames: int, repeats: int, o3d) -> dict[str, Any]:
    scene = render(h, w, n_frames)
    frames, voxel, keeps = stream_input(scene)
    depth_max = float(scene["depth"].max()) * 1.01
    fusers: dict[str, Any] = {"numpy": lambda: fuse(lambda: ProjectMap(voxel), frames)}
    if fusion_compiled.AVAILABLE:
        fusers["compiled"] = lambda: fuse(lambda: ProjectMap(voxel, "compiled"), frames)
    if o3d is not None:
        fusers["open3d-hashmap"] = lambda: fuse(lambda: Open3dHashMap(voxel), frames)
        fusers["open3d-hashmap-npgroup"] = lambda: fuse(lambda: Open3dHashMapNumpyGroup(voxel), frames)
        fusers["open3d-tsdf"] = lambda: fuse_tsdf(lambda: Open3dTsdf(voxel, depth_max), scene, keeps)
    times: dict[str, list[float]] = {k: [] for k in fusers}
    peak: dict[str, float | None] = {}
    maps: dict[str, Any] = {}
    for name, run in fusers.items():  # warm-up, and the peak memory of one run
        rss = _peak_reset()
        _, maps[name] = run()
        hwm = _status_kib("VmHWM")
        peak[name] = None if rss is None or hwm is None else round((hwm - rss) / 1024, 1)
    names = list(fusers)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(fusers[name]()[0])
    fusion = {
        name: {
            "ms_per_frame": 1000 * statistics.median(t) / n_frames,
            "ms_per_frame_runs": [round(1000 * x / n_frames, 3) for x in t],
            "peak_rss_delta_mib": peak[name],
        }
        for name, t in times.items()
    }
    ref = maps["numpy"].result()
    all_points = [np.concatenate(x) for x in zip(*frames, strict=True)]
    agreement = {
        "numpy_vs_voxel_downsample_all_frames": compare(
            voxel_downsample(*all_points[:2], voxel, all_points[2]), ref, voxel
        )
    }
    fusion["numpy"]["voxels"] = len(ref[0])
    if "compiled" in maps:
        agreement["compiled"] = compare(ref, maps["compiled"].result(), voxel)
        fusion["compiled"]["voxels"] = agreement["compiled"]["voxels"]
        fusion["compiled"]["ratio_to_numpy"] = fusion["compiled"]["ms_per_frame"] / fusion["numpy"]["ms_per_frame"]
    if o3d is not None:
        for name in ("open3d-hashmap", "open3d-hashmap-npgroup"):
            agreement[name] = compare(ref, maps[name].result(), voxel)
            fusion[name]["voxels"] = agreement[name]["voxels"]
        fusion["open3d-tsdf"]["voxels"] = maps["open3d-tsdf"].voxels()
        fusion["open3d-tsdf"]["note"] = (
            "TSDF volume (voxels allocated in 8^3 blocks): a different algorithm, not compared"
        )
        for name in ("open3d-hashmap", "open3d-hashmap-npgroup", "open3d-tsdf"):
            fusion[name]["ratio_to_numpy"] = fusion[name]["ms_per_frame"] / fusion["numpy"]["ms_per_frame"]

    # (b) one-shot downsample of the middle frame
    one = frames[len(frames) // 2]
    down_fns = {"numpy": downsample_numpy, "numpy-unweighted": downsample_numpy_unweighted}
    if o3d is not None:
        down_fns |= {
            "open3d-hashmap": downsample_open3d_hashmap,
            "open3d-tensor": downsample_open3d_tensor,
            "open3d-tensor-f64": downsample_open3d_tensor_f64,
            "open3d-legacy": downsample_open3d_legacy,
        }
    down_results = {name: fn(*one, voxel) for name, fn in down_fns.items()}  # warm-up
    down_times: dict[str, list[float]] = {k: [] for k in down_fns}
    names = list(down_fns)
    for r in range(max(repeats, 5)):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            down_fns[name](*one, voxel)
            down_times[name].append(time.perf_counter() - start)
    downsample = {}
    for name, t in down_times.items():
        weighted = name in ("numpy", "open3d-hashmap")
        ref_name = "numpy" if weighted else "numpy-unweighted"
        row: dict[str, Any] = {
            "ms": 1000 * statistics.median(t),
            "weighted": weighted,
            "voxels": len(down_results[name][0]),
        }
        if name != ref_name:
            row["ratio_to_numpy"] = row["ms"] / (1000 * statistics.median(down_times[ref_name]))
            row["agreement"] = compare(down_results[ref_name], down_results[name], voxel, weights=weighted)
        downsample[name] = row
    return {
        "size_hw": [h, w],
        "frames": n_frames,
        "voxel_size": voxel,
        "median_depth": voxel * 250,
        "points_per_frame": int(np.median([len(f[0]) for f in frames])),
        "fusion": fusion,
        "fusion_agreement": agreement,
        "downsample_one_frame": downsample,
    }


# ----------------------------------------------------------------------------- environment


def _du_bytes(folder: Path) -> int:
    """Disk usage of a folder as du counts it (allocated blocks)."""
    total = 0
    for root, _, files in os.walk(folder):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
    return total


def open3d_facts(o3d, import_runs: int = 3) -> dict[str, Any]:
    if o3d is None:
        return {"installed": False, "note": "open3d is not importable here: numpy measured alone"}
    folder = Path(o3d.__file__).parent
    code = "import numpy, time; t = time.perf_counter(); import open3d; print(time.perf_counter() - t)"
    imports = []
    for _ in range(import_runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        imports.append(float(out.stdout.strip().splitlines()[-1]))
    requires = importlib.metadata.requires("open3d") or []
    return {
        "installed": True,
        "version": o3d.__version__,
        "cuda_build": bool(o3d.core.cuda.is_available()),
        "cuda_measured": False,
        "cuda_note": "CPU only: no GPU on this machine, open3d's CUDA device was not measured",
        "import_s_runs": [round(x, 3) for x in imports],
        "import_s": statistics.median(imports) if imports else None,
        "package_folder_mib": round(_du_bytes(folder) / 2**20, 1),
        "requires": [r.split(";")[0].strip() for r in requires if "extra ==" not in r],
    }


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_avg_1min_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def run(sizes: list[tuple[int, int]], n_frames: int = 48, repeats: int = 3, import_runs: int = 3) -> dict[str, Any]:
    """The report for these (H, W) sizes; ``import_runs`` fresh interpreters time open3d's import (0: not timed)."""
    if n_frames < 1 or repeats < 1:
        raise ValueError(f"frames and repeats: expected >= 1, got {n_frames}, {repeats}")
    env = machine()
    o3d = open3d_or_none()
    facts = open3d_facts(o3d, import_runs)
    results = [bench_size(h, w, n_frames, repeats, o3d) for h, w in sizes]
    if hasattr(os, "getloadavg"):
        env["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    return {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": env,
        "open3d": facts,
        "repeats": repeats,
        "tolerances": {"position_voxels": POS_TOL, "color": COLOR_TOL, "weight_rel": WEIGHT_TOL},
        "sizes": results,
    }


# ----------------------------------------------------------------------------- report


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def to_markdown(data: dict[str, Any]) -> str:
    m, o = data["machine"], data["open3d"]
    o3d_line = (
        f"open3d {o['version']} (CPU; CUDA not measured: no GPU here), import {_f(o['import_s'])} s, "
        f"package folder {o['package_folder_mib']:.0f} MiB"
        if o["installed"]
        else "open3d: not installed (numpy only)"
    )
    lines = [
        f"# Fusion backends: PointMap (numpy, compiled) vs open3d ({data['created_utc']})",
        "",
        f"{m['cpu']}, {m['usable_cores']} cores usable (1-min load {m['load_avg_1min_at_start']} at start, "
        f"{m.get('load_avg_1min_at_end')} at end: other jobs share them), "
        f"Python {m['python']}, numpy {m['numpy']}; {o3d_line}.",
        "",
        "Synthetic room, camera path, top 50 % confidence, weights = confidence, voxel = median depth / 250. "
        f"Medians of {data['repeats']} interleaved runs after a warm-up, one process. "
        "Regenerate: `python -m edgescene.bench.fusion_backends`.",
        "",
        "## (a) Fusing the stream, ms per frame",
        "",
        "| size | frames | points/frame | backend | ms/frame | ratio to numpy | voxels | agrees with numpy | "
        "peak RSS added, MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in data["sizes"]:
        for name, f in s["fusion"].items():
            a = s["fusion_agreement"].get(name)
            agrees = (
                "(reference)"
                if name == "numpy"
                else ("not compared" if a is None else ("yes" if a["agrees"] else "NO"))
            )
            label = name + (" (TSDF: other algorithm)" if name == "open3d-tsdf" else "")
            lines.append(
                f"| {s['size_hw'][0]}x{s['size_hw'][1]} | {s['frames']} | {s['points_per_frame']} | {label} | "
                f"{f['ms_per_frame']:.1f} | {_f(f.get('ratio_to_numpy'))} | {f.get('voxels', '-')} | {agrees} | "
                f"{_f(f['peak_rss_delta_mib'], '.0f')} |"
            )
    lines += ["", "## (b) One-shot voxel downsample of one frame, ms", ""]
    names = list(data["sizes"][0]["downsample_one_frame"])
    lines += ["| size | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for s in data["sizes"]:
        d = s["downsample_one_frame"]
        cells = [
            f"{d[n]['ms']:.1f}" + (f" ({d[n]['ratio_to_numpy']:.2f}x)" if "ratio_to_numpy" in d[n] else "")
            for n in names
        ]
        lines.append(f"| {s['size_hw'][0]}x{s['size_hw'][1]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Ratios: to `numpy` (weighted) for the weighted backends, to `numpy-unweighted` for open3d's own "
        "voxel_down_sample (which has no weights).",
        "",
        "## (c) Agreement with numpy (max |position difference| in voxels, colour steps, relative weight)",
        "",
        "| size | comparison | voxels ref / result | agrees | max pos (voxels) | max colour | max weight rel |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in data["sizes"]:
        rows = [(f"fusion: {k}", v) for k, v in s["fusion_agreement"].items()]
        rows += [(f"downsample: {k}", v["agreement"]) for k, v in s["downsample_one_frame"].items() if "agreement" in v]
        for label, a in rows:
            extra = (
                f"{_f(a.get('max_pos_diff_voxels'), '.1e')} | {a.get('max_color_diff', '-')} | "
                f"{_f(a.get('max_weight_rel_diff'), '.1e')}"
                if "max_pos_diff_voxels" in a
                else f"keys only in ref {a['keys_only_in_ref']}, only in result {a['keys_only_in_result']} | | "
            )
            lines.append(
                f"| {s['size_hw'][0]}x{s['size_hw'][1]} | {label} | {a['voxels_ref']} / {a['voxels']} | "
                f"{'yes' if a['agrees'] else 'NO'} | {extra} |"
            )
    lines += ["", "## Conclusion", "", *conclusion(data)]
    return "\n".join(lines) + "\n"


def conclusion(data: dict[str, Any]) -> list[str]:
    """The findings in numbers: compiled / numpy and open3d / numpy time ratios per size."""
    sizes = [f"{s['size_hw'][0]}x{s['size_hw'][1]}" for s in data["sizes"]]
    compiled = []
    if all("compiled" in s["fusion"] for s in data["sizes"]):
        vals = ", ".join(f"{s['fusion']['compiled']['ratio_to_numpy']:.2f}x" for s in data["sizes"])
        same = all(s["fusion_agreement"]["compiled"]["agrees"] for s in data["sizes"])
        compiled = [
            f"- the compiled map (numba) against the numpy one at {', '.join(sizes)}: {vals}; results "
            f"{'identical' if same else 'NOT identical'} (same voxels and weights; positions equal)."
        ]
    if not data["open3d"]["installed"]:
        return [*compiled, "- open3d is not installed: not measured."]

    def ratios(section: str, name: str) -> str:
        vals = [s[section][name]["ratio_to_numpy"] for s in data["sizes"]]
        return ", ".join(f"{v:.2f}x" for v in vals)

    agree = all(
        s["fusion_agreement"][n]["agrees"] for s in data["sizes"] for n in ("open3d-hashmap", "open3d-hashmap-npgroup")
    )
    return [
        f"Time ratios to the numpy map at {', '.join(sizes)} (above 1: slower), CPU, this machine:",
        "",
        *compiled,
        f"- fusing the stream: open3d HashMap {ratios('fusion', 'open3d-hashmap')}; with numpy grouping the batch "
        f"{ratios('fusion', 'open3d-hashmap-npgroup')}; results {'identical to' if agree else 'NOT equal to'} numpy's "
        "(same voxels and weights; positions equal).",
        f"- TSDF integration (VoxelBlockGrid, another algorithm, a dense 8^3-block volume): "
        f"{ratios('fusion', 'open3d-tsdf')}.",
        f"- one-frame downsample: open3d HashMap {ratios('downsample_one_frame', 'open3d-hashmap')}, tensor "
        f"voxel_down_sample {ratios('downsample_one_frame', 'open3d-tensor')} (float32 positions: keys divided in "
        "float32, a point can land in the next voxel) / "
        f"{ratios('downsample_one_frame', 'open3d-tensor-f64')} (float64: agrees), legacy voxel_down_sample "
        f"{ratios('downsample_one_frame', 'open3d-legacy')} (unweighted, grid anchored at the bounding box, not at "
        "the origin: not the same voxels, so no substitute for the map).",
        "- peak RSS added is measured per warm-up run in one process (VmHWM reset through /proc/self/clear_refs); "
        "memory freed by earlier runs is reused, so it is indicative only.",
        "- open3d's CUDA device was not measured (no GPU here). "
        f"open3d costs {data['open3d']['package_folder_mib']:.0f} MiB installed (its own folder) "
        f"and {_f(data['open3d']['import_s'])} s to import.",
    ]


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size: expected HxW like 294x518, got {text!r}") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"size: expected H, W >= 8, got {text!r}")
    return h, w


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/bench/runtime/fusion_backends.json"))
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--sizes", default="294x518,392x518,518x518", help="comma-separated HxW")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per backend (after one warm-up)")
    args = parser.parse_args(argv)
    sizes = [_size(s) for s in args.sizes.split(",") if s]
    if args.frames < 1 or args.repeats < 1:
        parser.error("--frames and --repeats must be >= 1")
    data = run(sizes, args.frames, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(args.out)
    md = to_markdown(data)
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
