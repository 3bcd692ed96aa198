"""Fuse per-frame points into one colour point cloud whose memory is bounded by the scene.

Imports numpy and the standard library only (never torch or ``edgescene.models``).

- :func:`confidence_mask` is VGGT's demo filter: keep points at or above a confidence percentile.
- :func:`voxel_downsample` keeps one point per occupied voxel (weighted mean position and colour,
  summed weight).
- :class:`PointMap` merges frame after frame into such a voxel grid with a running weighted mean,
  so it grows with the extent of the scene, not with the number of frames; ``max_points`` gives
  a hard bound by coarsening the grid when it is exceeded.

Voxel ``k = floor(p / voxel_size)`` (integer, per axis), aligned at the world origin, so doubling
the voxel size merges whole groups of 2 x 2 x 2 voxels. Non-finite points, points with zero weight
and points more than ``2**40`` voxels from the origin (numeric outliers) are dropped.
"""

from __future__ import annotations

import logging

import numpy as np

from edgescene.runtime.geometry import apply_sim3

__all__ = ["confidence_mask", "voxel_downsample", "PointMap"]

log = logging.getLogger(__name__)

_MAX_KEY = 2 ** 40  # voxel coordinates beyond this are treated as outliers (and cannot overflow)


def confidence_mask(conf: np.ndarray, percentile: float, min_conf: float = 1e-5) -> np.ndarray:
    """Boolean mask of the points VGGT's demo keeps.

    conf: any shape, e.g. (S, H, W). Keeps ``conf >= np.percentile(conf, percentile)`` and
    ``conf > min_conf``; the percentile is taken over the finite values and non-finite values are
    never kept. percentile: in [0, 100]; 0 keeps every valid point (``conf > min_conf``), 50 drops
    the less confident half. Returns a bool array of conf's shape.
    """
    if not 0.0 <= float(percentile) <= 100.0:
        raise ValueError(f"percentile: expected a value in [0, 100], got {percentile}")
    conf = np.asarray(conf)
    if not (np.issubdtype(conf.dtype, np.floating) or np.issubdtype(conf.dtype, np.integer)):
        raise ValueError(f"conf: expected a real-valued array, got dtype {conf.dtype}")
    finite = np.isfinite(conf)
    if not finite.any():
        return np.zeros(conf.shape, dtype=bool)
    threshold = np.percentile(conf[finite], float(percentile))
    with np.errstate(invalid="ignore"):
        return finite & (conf >= threshold) & (conf > min_conf)


# ----------------------------------------------------------------------------- voxel grouping

def _check_points(points, colors, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate (N, 3) points, (N, 3) uint8 colours and optional (N,) weights."""
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] != 3 or not (np.issubdtype(p.dtype, np.floating)
                                              or np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f"points: expected real (N, 3), got {p.shape} {p.dtype}")
    c = np.asarray(colors)
    if c.shape != p.shape:
        raise ValueError(f"colors: expected ({p.shape[0]}, 3) like points, got {c.shape}")
    if c.dtype != np.uint8:
        raise ValueError(f"colors: expected uint8 in 0..255, got {c.dtype} "
                         "(convert float [0, 1] colours with (c * 255).round().astype(np.uint8))")
    if weights is None:
        w = np.ones(p.shape[0])
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (p.shape[0],):
            raise ValueError(f"weights: expected ({p.shape[0]},), got {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("weights: expected finite non-negative values")
    return p, c, w


def _voxel_keys(points: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer voxel coordinates (M, 3) int64 of the usable points and their boolean mask (N,)."""
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.floor(points.astype(np.float64) / voxel_size)
        ok = np.all(np.abs(scaled) <= _MAX_KEY, axis=1)  # False for nan / inf too
    return scaled[ok].astype(np.int64), ok


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of integer keys (M, 3) and the inverse index (N,) into them.

    Packs each row into one int64 (relative to the minimum) when the extents allow it, which sorts
    much faster than ``np.unique(axis=0)``; falls back to that otherwise. Same result either way.
    """
    if len(keys) == 0:
        return keys.reshape(0, 3), np.zeros(0, dtype=np.int64)
    lo = keys.min(axis=0)
    ext = keys.max(axis=0) - lo + 1
    if float(ext[0]) * float(ext[1]) * float(ext[2]) < 2.0 ** 62:
        k = keys - lo
        packed = (k[:, 0] * ext[1] + k[:, 1]) * ext[2] + k[:, 2]
        _, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
        return keys[first], inverse.reshape(-1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    return uniq, inverse.reshape(-1)


_PACK_BITS = 21  # per axis: voxel keys in [-2**20, 2**20) pack into one int64 in lexicographic order


def _packable(keys: np.ndarray) -> bool:
    return len(keys) == 0 or (int(keys.min()) >= -(1 << (_PACK_BITS - 1)) and int(keys.max()) < (1 << (_PACK_BITS - 1)))


def _pack(keys: np.ndarray) -> np.ndarray:
    """(M, 3) int64 keys -> (M,) int64, monotone in (kx, ky, kz) lexicographic order (see :func:`_packable`)."""
    k = keys + (1 << (_PACK_BITS - 1))
    return (k[:, 0] << (2 * _PACK_BITS)) | (k[:, 1] << _PACK_BITS) | k[:, 2]


def _weighted_means(inverse: np.ndarray, n: int, w: np.ndarray, *values: np.ndarray):
    """Per-group summed weight (n,) and weighted means (n, 3) of each (N, 3) value array."""
    wsum = np.bincount(inverse, weights=w, minlength=n)
    means = []
    for v in values:
        v = v.astype(np.float64)
        m = np.stack([np.bincount(inverse, weights=w * v[:, j], minlength=n) for j in range(3)], axis=1)
        means.append(m / wsum[:, None])
    return wsum, means


def _to_uint8(c: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(c), 0, 255).astype(np.uint8)


def voxel_downsample(points: np.ndarray, colors: np.ndarray, voxel_size: float,
                     weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One point per occupied voxel.

    points: (N, 3) float; colors: (N, 3) uint8; voxel_size: > 0, in the units of points;
    weights: optional (N,) non-negative (default 1 per point).
    Returns ``(points (M, 3), colors (M, 3) uint8, weights (M,) float64)``: per voxel the weighted
    mean position (points' floating dtype, float64 for integer input), the weighted mean colour
    (rounded) and the summed weight. Voxels come out in a deterministic (sorted key) order.
    Non-finite points, zero-weight points and numeric outliers (see module doc) are dropped.
    """
    if not float(voxel_size) > 0:
        raise ValueError(f"voxel_size: expected > 0, got {voxel_size}")
    p, c, w = _check_points(points, colors, weights)
    dtype = p.dtype if np.issubdtype(p.dtype, np.floating) else np.dtype(np.float64)
    keys, ok = _voxel_keys(p, float(voxel_size))
    keep = w[ok] > 0
    keys, p, c, w = keys[keep], p[ok][keep], c[ok][keep], w[ok][keep]
    uniq, inverse = _group(keys)
    wsum, (xyz, rgb) = _weighted_means(inverse, len(uniq), w, p, c)
    return xyz.astype(dtype), _to_uint8(rgb), wsum


# ----------------------------------------------------------------------------- fused map

class PointMap:
    """A fused colour point cloud on a voxel grid, bounded in memory.

    State is four arrays keyed by voxel: integer keys (M, 3) int64, weighted mean positions
    (M, 3) float64, weighted mean colours (M, 3) float32 and summed weights (M,) float64.
    :meth:`add` merges a batch with one ``np.unique`` over old and new keys (no Python loop per
    point), so a static scene seen again and again keeps its size. With ``max_points`` set, the
    voxel size doubles (and the map is re-downsampled) until the map holds at most that many
    points, a hard bound on memory whatever the scene.

    voxel_size: > 0, in world units (VGGT's normalised scale unless aligned); it changes when the
    cap coarsens the grid or :meth:`transform` scales the map.
    max_points: None (no cap) or >= 8 (the grid is anchored at the origin, so points in the 8
    octants around it never share a voxel however coarse the grid).
    """

    def __init__(self, voxel_size: float, max_points: int | None = None) -> None:
        if not float(voxel_size) > 0:
            raise ValueError(f"voxel_size: expected > 0, got {voxel_size}")
        if max_points is not None and int(max_points) < 8:
            raise ValueError(f"max_points: expected None or >= 8, got {max_points}")
        self.voxel_size = float(voxel_size)
        self.max_points = None if max_points is None else int(max_points)
        self._reset()

    def _reset(self) -> None:
        self._keys = np.zeros((0, 3), dtype=np.int64)
        self._xyz = np.zeros((0, 3), dtype=np.float64)
        self._rgb = np.zeros((0, 3), dtype=np.float32)
        self._w = np.zeros(0, dtype=np.float64)

    # -- state
    def __len__(self) -> int:
        return len(self._w)

    @property
    def points(self) -> np.ndarray:
        """(M, 3) float32 weighted mean position per voxel (a copy)."""
        return self._xyz.astype(np.float32)

    @property
    def colors(self) -> np.ndarray:
        """(M, 3) uint8 weighted mean colour per voxel."""
        return _to_uint8(self._rgb)

    @property
    def weights(self) -> np.ndarray:
        """(M,) float64 summed weight per voxel (a copy)."""
        return self._w.copy()

    @property
    def nbytes(self) -> int:
        """Bytes held by the map's arrays."""
        return int(self._keys.nbytes + self._xyz.nbytes + self._rgb.nbytes + self._w.nbytes)

    def __repr__(self) -> str:
        return (f"PointMap({len(self)} points, voxel_size={self.voxel_size:g}, "
                f"max_points={self.max_points}, {self.nbytes / 2**20:.1f} MiB)")

    # -- updates
    def add(self, points: np.ndarray, colors: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Merge points (N, 3), colours (N, 3) uint8 and optional weights (N,) (default 1 each).

        Each voxel keeps the weighted mean of everything that fell in it, over all batches.
        """
        p, c, w = _check_points(points, colors, weights)
        keys, ok = _voxel_keys(p, self.voxel_size)
        keep = w[ok] > 0
        self._merge(keys[keep], p[ok][keep].astype(np.float64), c[ok][keep].astype(np.float32), w[ok][keep])
        self._enforce_cap()

    def transform(self, s: float, R: np.ndarray, t: np.ndarray) -> None:
        """Apply the similarity ``p -> s R p + t`` to every point (re-anchoring the map).

        s: > 0; R: (3, 3) rotation; t: (3,). The voxel size is scaled by s too, so the resolution
        relative to the scene is unchanged; points are then re-binned on the new frame's grid
        (two points that land in one voxel of the rotated grid are merged).
        """
        if not float(s) > 0:
            raise ValueError(f"s: expected a scale > 0, got {s}")
        R = np.asarray(R, dtype=np.float64)
        t = np.asarray(t, dtype=np.float64)
        if R.shape != (3, 3):
            raise ValueError(f"R: expected (3, 3), got {R.shape}")
        if t.shape != (3,):
            raise ValueError(f"t: expected (3,), got {t.shape}")
        xyz = apply_sim3(self._xyz, float(s), R, t)
        self.voxel_size *= float(s)
        self._rebin(xyz)
        self._enforce_cap()

    def clear(self) -> None:
        """Drop every point (the voxel size stays as it is)."""
        self._reset()

    # -- internals
    def _merge(self, keys: np.ndarray, xyz: np.ndarray, rgb: np.ndarray, w: np.ndarray) -> None:
        """Combine (keys, means, weights) rows with the current state by weighted mean per key.

        The map is kept sorted by voxel key (lexicographic), so a batch is merged by binary search
        and insertion, O(N log M + M) instead of re-sorting all M + N rows: the cost of one frame
        stays nearly flat as the map grows. Keys too far out to pack fall back to a full re-sort.
        """
        if len(keys) == 0:
            return
        if len(self) and _packable(self._keys) and _packable(keys):
            self._merge_sorted(keys, xyz, rgb, w)
            return
        all_keys = np.concatenate([self._keys, keys])
        all_w = np.concatenate([self._w, w])
        uniq, inverse = _group(all_keys)
        wsum, (m_xyz, m_rgb) = _weighted_means(inverse, len(uniq), all_w,
                                              np.concatenate([self._xyz, xyz]),
                                              np.concatenate([self._rgb, rgb]))
        self._keys, self._xyz, self._rgb, self._w = uniq, m_xyz, m_rgb.astype(np.float32), wsum

    def _merge_sorted(self, keys: np.ndarray, xyz: np.ndarray, rgb: np.ndarray, w: np.ndarray) -> None:
        uniq, inverse = _group(keys)  # the batch's own voxels first (sorted, like the map)
        bw, (bxyz, brgb) = _weighted_means(inverse, len(uniq), w, xyz, rgb)
        packed_map, packed_new = _pack(self._keys), _pack(uniq)
        at = np.searchsorted(packed_map, packed_new)
        hit = at < len(packed_map)
        hit[hit] = packed_map[at[hit]] == packed_new[hit]
        i, j = at[hit], np.flatnonzero(hit)  # voxels already in the map: weighted mean in place
        total = self._w[i] + bw[j]
        self._xyz[i] = (self._xyz[i] * self._w[i, None] + bxyz[j] * bw[j, None]) / total[:, None]
        self._rgb[i] = ((self._rgb[i] * self._w[i, None] + brgb[j] * bw[j, None]) / total[:, None]).astype(np.float32)
        self._w[i] = total
        new = ~hit  # new voxels: inserted where they sort
        if new.any():
            pos = at[new]
            self._keys = np.insert(self._keys, pos, uniq[new], axis=0)
            self._xyz = np.insert(self._xyz, pos, bxyz[new], axis=0)
            self._rgb = np.insert(self._rgb, pos, brgb[new].astype(np.float32), axis=0)
            self._w = np.insert(self._w, pos, bw[new])

    def _rebin(self, xyz: np.ndarray) -> None:
        """Recompute voxel keys of the stored means at the current voxel size and merge duplicates."""
        keys, ok = _voxel_keys(xyz, self.voxel_size)
        rgb, w = self._rgb[ok], self._w[ok]
        self._reset()
        self._merge(keys, xyz[ok], rgb, w)

    def _enforce_cap(self) -> None:
        if self.max_points is None:
            return
        while len(self) > self.max_points:
            before = len(self)
            self.voxel_size *= 2.0
            self._rebin(self._xyz)
            log.info("point map: %d points exceed max_points=%d; voxel size doubled to %g -> %d points",
                     before, self.max_points, self.voxel_size, len(self))
