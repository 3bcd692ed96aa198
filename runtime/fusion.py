"""Fuse per-frame points into one colour point cloud whose memory is bounded by the scene.

Imports numpy, the standard library and :mod:`edgescene.runtime.fusion_compiled` (numba when it is
installed) only; never torch or ``edgescene.models``.

- :func:`confidence_mask` is VGGT's demo filter: keep points at or above a confidence percentile.
- :func:`voxel_downsample` keeps one point per occupied voxel (weighted mean position and colour,
  summed weight).
- :class:`PointMap` merges frame after frame into such a voxel grid with a running weighted mean,
  so it grows with the extent of the scene, not with the number of frames; ``max_points`` gives
  a hard bound by coarsening the grid when it is exceeded. A hash table finds voxels, so adding a
  frame costs the same whatever the map's size. Two implementations give the same map: compiled
  (numba, the default where installed) and numpy (``backend=``, :func:`resolve_backend`).

Voxel ``k = floor(p * (1 / voxel_size))`` (integer, per axis), aligned at the world origin, so doubling
the voxel size merges whole groups of 2 x 2 x 2 voxels. Non-finite points, points with zero weight
and points more than ``2**40`` voxels from the origin (numeric outliers) are dropped.
"""

from __future__ import annotations

import logging
import mmap
import time

import numpy as np

from edgescene.core import order_statistics
from edgescene.core.geometry import apply_sim3
from edgescene.core.sim3 import Sim3
from edgescene.runtime import fusion_compiled

__all__ = [
    "FUSION_BACKENDS",
    "PointMap",
    "confidence_mask",
    "confidence_threshold",
    "resolve_backend",
    "voxel_downsample",
    "warm_up",
]

FUSION_BACKENDS = ("auto", "compiled", "numpy")  # auto: compiled (numba) where installed, else numpy

log = logging.getLogger(__name__)

_MAX_KEY = 2**40  # voxel coordinates beyond this are treated as outliers (and cannot overflow)


def resolve_backend(backend: str) -> str:
    """The point map's implementation: ``"auto"`` -> ``"compiled"`` where numba is installed, else
    ``"numpy"``; ``"compiled"`` without numba is an error that says how to install it."""
    if backend not in FUSION_BACKENDS:
        raise ValueError(f"fusion backend: expected one of {', '.join(FUSION_BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "compiled" if fusion_compiled.AVAILABLE else "numpy"
    if backend == "compiled" and not fusion_compiled.AVAILABLE:
        raise ValueError(
            "fusion backend 'compiled' needs numba, which is not installed: pip install 'edgescene[runtime]' "
            "(or pip install numba), or choose the 'numpy' backend"
        )
    return backend


def warm_up() -> float:
    """Load (or compile, the first time on a machine) the compiled loops for the very arrays a map and
    a stream pass them: a real :class:`PointMap` adds a frame's points (uint8 colours), outgrows its
    first blocks, is re-binned (mean colours) and read out as a cloud; then the stream's pixel selection
    (:func:`edgescene.runtime.fusion_compiled.warm_up`). Returns the seconds spent (0 without numba).
    :class:`edgescene.runtime.reconstruct.Reconstructor` runs it while the model opens."""
    if not fusion_compiled.AVAILABLE:
        return 0.0
    start = time.perf_counter()
    m = PointMap(1.0, backend="compiled")
    scattered = np.arange(300, dtype=np.float64)[:, None] * np.array([[5.0, 0.0, 0.0]])  # a block each: 300 > 64
    m.add(scattered, np.zeros((300, 3), np.uint8))
    m.transform(1.0, np.eye(3), np.zeros(3))
    m.cloud()
    fusion_compiled.warm_up()
    return time.perf_counter() - start


def confidence_mask(conf: np.ndarray, percentile: float, min_conf: float = 1e-5) -> np.ndarray:
    """Boolean mask of the points VGGT's demo keeps.

    conf: any shape, e.g. (S, H, W). Keeps ``conf >= np.percentile(conf, percentile)`` and
    ``conf > min_conf``; the percentile is taken over the finite values and non-finite values are
    never kept. percentile: in [0, 100]; 0 keeps every valid point (``conf > min_conf``), 50 drops
    the less confident half. Returns a bool array of conf's shape.
    """
    conf = np.asarray(conf)
    threshold = confidence_threshold(conf, percentile, min_conf)
    with np.errstate(invalid="ignore"):
        return np.isfinite(conf) & (conf >= threshold)


def confidence_threshold(conf: np.ndarray, percentile: float, min_conf: float = 1e-5) -> float:
    """The least confidence :func:`confidence_mask` keeps: the ``percentile`` of the finite values
    of ``conf``, and above ``min_conf`` (+inf when no value is finite: nothing is kept). Taken from a
    sample of a frame's pixels, it thresholds the whole frame at a fraction of the cost."""
    if not 0.0 <= float(percentile) <= 100.0:
        raise ValueError(f"percentile: expected a value in [0, 100], got {percentile}")
    conf = np.asarray(conf)
    if not (np.issubdtype(conf.dtype, np.floating) or np.issubdtype(conf.dtype, np.integer)):
        raise ValueError(f"conf: expected a real-valued array, got dtype {conf.dtype}")
    finite = conf[np.isfinite(conf)]
    if not finite.size:
        return float("inf")
    if finite.dtype.kind != "f":  # integer confidences: numpy interpolates them in float64 too
        finite = finite.astype(np.float64)
    threshold = order_statistics.percentile(finite, percentile)  # np.percentile's value, one partition
    return max(float(threshold), float(np.nextafter(min_conf, np.inf)))


# ----------------------------------------------------------------------------- voxel grouping


def _check_points(points, colors, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate (N, 3) points, (N, 3) uint8 colours and optional (N,) weights."""
    p = np.asarray(points)
    if (
        p.ndim != 2
        or p.shape[1] != 3
        or not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer))
    ):
        raise ValueError(f"points: expected real (N, 3), got {p.shape} {p.dtype}")
    c = np.asarray(colors)
    if c.shape != p.shape:
        raise ValueError(f"colors: expected ({p.shape[0]}, 3) like points, got {c.shape}")
    if c.dtype != np.uint8:
        raise ValueError(
            f"colors: expected uint8 in 0..255, got {c.dtype} "
            "(convert float [0, 1] colours with (c * 255).round().astype(np.uint8))"
        )
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
    if float(ext[0]) * float(ext[1]) * float(ext[2]) < 2.0**62:
        k = keys - lo
        packed = (k[:, 0] * ext[1] + k[:, 1]) * ext[2] + k[:, 2]
        _, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
        return keys[first], inverse.reshape(-1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    return uniq, inverse.reshape(-1)


_PACK_BITS = 21  # per axis: voxel keys in [-2**20, 2**20) pack into one int64 in lexicographic order


def _pack(keys: np.ndarray) -> np.ndarray:
    """(M, 3) int64 keys -> (M,) int64, monotone in (kx, ky, kz) lexicographic order (each
    key in [-2**20, 2**20), which :meth:`PointMap._usable` checks)."""
    k = keys + (1 << (_PACK_BITS - 1))
    return (k[:, 0] << (2 * _PACK_BITS)) | (k[:, 1] << _PACK_BITS) | k[:, 2]


def _weighted_sums(inverse: np.ndarray, n: int, w: np.ndarray, *values: np.ndarray):
    """Per-group summed weight (n,) and weighted sums (n, 3) float64 of each (N, 3) value array."""
    wsum = np.bincount(inverse, weights=w, minlength=n)
    sums = []
    for v in values:
        v = v.astype(np.float64)
        sums.append(np.stack([np.bincount(inverse, weights=w * v[:, j], minlength=n) for j in range(3)], axis=1))
    return wsum, sums


def _grouped_sums(cells: np.ndarray, w: np.ndarray, xyz: np.ndarray, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique voxels of a batch as packed keys (M,) (:func:`_pack`, in key order) and per voxel the row
    of weighted sums ``[w, w x, w y, w z, w r, w g, w b, 0]`` (M, 8) float64.

    cells: (N, 3) integer-valued float64 voxel coordinates. The batch's cells are numbered densely
    within its own bounding box and sorted together with their positions in one 64-bit value (a plain
    sort, about 3x faster than an argsort); a batch too large for that falls back to an argsort. The
    sums are bincounts in the batch's own order (no gather of the values).
    """
    n = len(cells)
    lo = np.array([cells[:, j].min() for j in range(3)])  # per column: numpy's axis-0 reduction of (N, 3) is 25x slower
    ext = np.array([cells[:, j].max() for j in range(3)]) - lo + 1.0
    index_bits = max(1, (n - 1).bit_length())
    boxes = float(ext[0] * ext[1] * ext[2])
    dense_order = boxes < 2.0 ** min(53, 64 - index_bits)  # the dense number fits beside the position
    if dense_order:
        dense = ((cells[:, 0] - lo[0]) * ext[1] + (cells[:, 1] - lo[1])) * ext[2] + (cells[:, 2] - lo[2])
        shift = np.uint64(index_bits)
        combined = (dense.astype(np.uint64) << shift) | np.arange(n, dtype=np.uint64)
        combined.sort()
        order = (combined & np.uint64((1 << index_bits) - 1)).astype(np.intp)
        sorted_keys = combined >> shift
    else:
        packed = _pack(cells.astype(np.int64))
        order = np.argsort(packed)
        sorted_keys = packed[order]
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
    group = np.empty(n, dtype=np.intp)
    group[order] = np.cumsum(first) - 1
    m = int(np.count_nonzero(first))
    sums = np.zeros((m, _COLUMNS))
    sums[:, 0] = np.bincount(group, weights=w, minlength=m)
    columns = np.empty((6, n))  # contiguous rows: a strided column would be read 6 times
    columns[:3] = xyz.T
    columns[3:] = rgb.T
    columns *= w
    for j in range(6):
        sums[:, 1 + j] = np.bincount(group, weights=columns[j], minlength=m)
    if dense_order:  # back from the dense number to the voxel, then the map's packing
        d = sorted_keys[first].astype(np.int64)
        ez, ey = int(ext[2]), int(ext[1])
        z, d = d % ez, d // ez
        y, x = d % ey, d // ey
        half = 1 << (_PACK_BITS - 1)
        x += int(lo[0]) + half
        y += int(lo[1]) + half
        z += int(lo[2]) + half
        uniq = (x << (2 * _PACK_BITS)) | (y << _PACK_BITS) | z
    else:
        uniq = sorted_keys[first]
    return uniq, sums


def _to_uint8(c: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(c), 0, 255).astype(np.uint8)


def voxel_downsample(
    points: np.ndarray, colors: np.ndarray, voxel_size: float, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    wsum, (xyz, rgb) = _weighted_sums(inverse, len(uniq), w, p, c)
    return (xyz / wsum[:, None]).astype(dtype), _to_uint8(rgb / wsum[:, None]), wsum


# ----------------------------------------------------------------------------- fused map

_EMPTY = np.int64(-1)  # a free hash slot (packed keys are >= 0)
_FIB = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: multiply, keep the high bits
_MIN_ROWS = 256
# A growing compiled map with a cap reserves address space for 2 x max_points rows up front (the most
# a batch can reach before the cap coarsens it) so that it never copies its rows to grow; pages are
# taken as rows are first written. Beyond this many rows (a very large cap) it grows as usual.
_LAZY_ROWS_MAX = 1 << 23
_HUGE_PAGE_MARK = 4 << 20  # numpy marks allocations of at least 4 MiB for transparent huge pages


def _fresh_zeros(shape, dtype) -> np.ndarray:
    """Zeros in fresh anonymous memory (``mmap``): its pages are mapped when first written, and not
    marked for transparent huge pages, as numpy marks its own large allocations. A map's new rows
    fill memory not touched before, and the first write to a huge page can stall while the kernel
    compacts memory to find one: measured 150-250 ms for one growth of a 1 M-voxel map
    (50-70 ms without), and with 4 KiB pages its fusion was no slower (13.2 vs 15.5 ms a frame at
    392x518, medians of 8 runs). Arrays under 4 MiB, which numpy does not mark, come from numpy (no
    mapping of their own for each small map)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    if count * dtype.itemsize < _HUGE_PAGE_MARK:  # numpy marks nothing this small: no mapping of its own
        return np.zeros(shape, dtype=dtype)
    return np.frombuffer(mmap.mmap(-1, count * dtype.itemsize), dtype=dtype, count=count).reshape(shape)


_COLUMNS = 8  # [w, w x, w y, w z, w r, w g, w b, unused]: 64 bytes, one cache line per voxel


def _aligned(full, rows: int) -> np.ndarray:
    """(rows, _COLUMNS) float64 zeros whose rows start on 64-byte boundaries (a random voxel update
    touches one cache line, not two)."""
    raw = full(rows * _COLUMNS + 8, np.float64)
    skip = (-raw.ctypes.data % 64) // 8
    return raw[skip : skip + rows * _COLUMNS].reshape(rows, _COLUMNS)


_ROW = np.dtype((np.void, 8 * _COLUMNS))  # one voxel's sums as one 64-byte item


def _put_rows(target: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """``target[rows] = values`` for (M, _COLUMNS) float64 arrays, each row moved as one 64-byte item
    (numpy's row-wise fancy assignment is 3x slower)."""
    target.view(_ROW).reshape(-1).put(rows, np.ascontiguousarray(values).view(_ROW).reshape(-1))


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


class PointMap:
    """A fused colour point cloud on a voxel grid, bounded in memory, with a per-frame cost that
    does not grow with the map.

    Voxels live in insertion order in dense arrays (packed key (M,) int64; a 64-byte row of sums per
    voxel, ``[w, w x, w y, w z, w r, w g, w b, 0]``: a mean is sum / w; a tag) and are found through
    an index: with ``backend="numpy"`` an open-addressing hash table (packed key -> row; linear
    probing, load <= 1/2) that :meth:`add` probes for all of a batch's voxels at once after grouping
    the batch by one sort; with ``backend="compiled"`` a voxel-block index (a table of 4 x 4 x 4
    blocks, each with its 64 voxels' rows) that a numba loop walks point by point
    (:mod:`edgescene.runtime.fusion_compiled`). Either way O(batch) whatever the map's size, so a
    long stream's per-frame cost stays flat, and the same voxels, weights and tags. A static scene
    seen again and again keeps its size.

    With ``max_points`` set, the voxel size doubles (and the map is re-binned) until the map holds at
    most that many points: a hard bound on memory whatever the scene. ``reserve=True`` (needs
    ``max_points``) allocates and touches the arrays for that bound up front, so the process's memory
    is flat from the first frame and no resize happens mid-stream; otherwise memory is taken as voxels
    arrive: a compiled map with a cap reserves address space for 2 x ``max_points`` rows (so it never
    copies its rows to grow), other maps grow their arrays 4x at a time.

    Each voxel also keeps a *tag* (int32): the ``tag`` of the :meth:`add` call that created it (the
    stream passes its window number), so :meth:`transform_tags` can move each window's points with
    that window's correction (loop closure) without keeping the frames. A voxel fused from several
    windows moves with the first one's; voxels merged by a re-bin keep the least (earliest) tag.

    voxel_size: > 0, in world units (VGGT's normalised scale unless aligned); it changes when the
    cap coarsens the grid or :meth:`transform` scales the map.
    max_points: None (no cap) or >= 8 (the grid is anchored at the origin, so points in the 8
    octants around it never share a voxel however coarse the grid).
    Points more than 2**20 voxels from the origin are dropped as numeric outliers.
    backend: "auto" (compiled where numba is installed, else numpy), "compiled" or "numpy".
    """

    def __init__(
        self, voxel_size: float, max_points: int | None = None, reserve: bool = False, backend: str = "auto"
    ) -> None:
        if not float(voxel_size) > 0:
            raise ValueError(f"voxel_size: expected > 0, got {voxel_size}")
        if max_points is not None and int(max_points) < 8:
            raise ValueError(f"max_points: expected None or >= 8, got {max_points}")
        if reserve and max_points is None:
            raise ValueError("reserve=True needs max_points (the bound to reserve memory for)")
        self.voxel_size = float(voxel_size)
        self.max_points = None if max_points is None else int(max_points)
        self.reserve = bool(reserve)
        self.backend = resolve_backend(backend)
        self._reset()

    def _reset(self) -> None:
        rows = index_rows = _MIN_ROWS
        if self.reserve:
            assert self.max_points is not None  # __init__ refuses reserve=True without max_points
            rows = index_rows = self.max_points
        elif self.backend == "compiled" and self.max_points is not None:
            rows = min(2 * self.max_points, _LAZY_ROWS_MAX)  # address space only (_LAZY_ROWS_MAX)
        self._allocate_rows(rows)
        self._allocate_index(index_rows)
        self._n = 0
        self._rows_written = 0  # the most rows ever in use: the rows' arrays hold memory up to there
        self.probes = 0  # hash slots examined so far (a machine-independent measure of lookup work)

    def _allocate_index(self, rows: int) -> None:
        """An empty index for ``rows`` voxels (pages touched when reserved): the numpy backend's table
        of >= 2 x rows slots, or the compiled backend's blocks (:mod:`edgescene.runtime.fusion_compiled`),
        rows / 8 of them to start with (rows / 4 reserved); blocks double as they run out."""
        if self.backend == "compiled":  # surfaces fill 16 to 25 of a block's 64 voxels (measured 24.5)
            self._allocate_blocks(max(64, rows // (4 if self.reserve else 8)))
            self._n_blocks = 0
            return
        slots = _pow2_at_least(2 * rows)
        self._table = np.full(slots, _EMPTY, dtype=np.int64)
        self._row = self._full(slots, np.int64)
        self._shift = np.uint64(64 - (slots.bit_length() - 1))

    def _full(self, shape, dtype) -> np.ndarray:
        """Zeros in fresh memory (:func:`_fresh_zeros`); reserved: every page is written now, so the
        memory is really held from the start; growing: rows are written as voxels arrive, so pages not
        yet reached cost nothing."""
        zeros = _fresh_zeros(shape, dtype)
        if self.reserve:
            zeros.fill(0)
        return zeros

    def _allocate_rows(self, rows: int) -> None:
        self._packed = self._full(rows, np.int64)
        # per voxel, one row of weighted sums [w, w x, w y, w z, w r, w g, w b]: a mean is sum / w, and a
        # batch updates a voxel with one row-wide add
        self._sums = _aligned(self._full, rows)
        self._tag = self._full(rows, np.int32)

    def _allocate_blocks(self, blocks: int) -> None:
        """The compiled backend's empty block index for ``blocks`` blocks (a table of >= 2 x blocks slots)."""
        slots = _pow2_at_least(2 * blocks)
        self._block_rows = np.full((blocks, 64), -1, dtype=np.int32)
        self._block_keys = np.zeros(blocks, dtype=np.int64)
        self._table = np.full(slots, _EMPTY, dtype=np.int64)
        self._row = np.zeros(slots, dtype=np.int64)  # here: the block number of each table slot
        self._shift = np.uint64(64 - (slots.bit_length() - 1))

    # -- state
    def __len__(self) -> int:
        return self._n

    @property
    def _w(self) -> np.ndarray:
        return self._sums[:, 0]

    @property
    def _keys(self) -> np.ndarray:
        """(M, 3) int64 voxel coordinates, in the map's (insertion) order."""
        p = self._packed[: self._n]
        half, mask = 1 << (_PACK_BITS - 1), (1 << _PACK_BITS) - 1
        return np.stack([(p >> (2 * _PACK_BITS)) & mask, (p >> _PACK_BITS) & mask, p & mask], axis=1) - half

    @property
    def points(self) -> np.ndarray:
        """(M, 3) float32 weighted mean position per voxel (a copy)."""
        return self._means()[0].astype(np.float32)

    def cloud(self) -> tuple[np.ndarray, np.ndarray]:
        """(M, 3) float32 mean positions and (M, 3) uint8 mean colours from one pass over the sums
        (``points`` and ``colors`` together, for writers that need both; the compiled backend reads
        each row once, about 5x faster for a million voxels, with the same values)."""
        if self.backend == "compiled":
            points, colors = np.empty((self._n, 3), np.float32), np.empty((self._n, 3), np.uint8)
            fusion_compiled.cloud(self._sums, self._n, points, colors)
            return points, colors
        xyz, rgb = self._means()
        return xyz.astype(np.float32), _to_uint8(rgb)

    @property
    def colors(self) -> np.ndarray:
        """(M, 3) uint8 weighted mean colour per voxel."""
        return _to_uint8(self._means()[1])

    def _means(self) -> tuple[np.ndarray, np.ndarray]:
        """(M, 3) float64 weighted mean positions and colours (new arrays)."""
        sums = self._sums[: self._n]
        w = sums[:, :1]
        return sums[:, 1:4] / w, sums[:, 4:7] / w

    @property
    def weights(self) -> np.ndarray:
        """(M,) float64 summed weight per voxel (a copy)."""
        return self._w[: self._n].copy()

    @property
    def nbytes(self) -> int:
        """Bytes the map's arrays hold: the index (hash table, blocks), and the rows' arrays up to their
        capacity when reserved, else up to the most rows used (their pages are taken as rows are first
        written: a growing compiled map with a cap reserves address space for 2 x max_points rows,
        :data:`_LAZY_ROWS_MAX`, and holds only what it has used)."""
        index = self._table.nbytes + self._row.nbytes
        if self.backend == "compiled":
            index += self._block_rows.nbytes + self._block_keys.nbytes
        rows = len(self._packed) if self.reserve else self._rows_written
        return int(rows * (self._packed.itemsize + self._sums.strides[0] + self._tag.itemsize) + index)

    def __repr__(self) -> str:
        return (
            f"PointMap({len(self)} points, voxel_size={self.voxel_size:g}, "
            f"max_points={self.max_points}, backend={self.backend}, {self.nbytes / 2**20:.1f} MiB)"
        )

    # -- updates
    @property
    def tags(self) -> np.ndarray:
        """(M,) int32 tag per voxel: the ``tag`` of the :meth:`add` that created it (a copy)."""
        return self._tag[: self._n].copy()

    def add(self, points: np.ndarray, colors: np.ndarray, weights: np.ndarray | None = None, tag: int = 0) -> None:
        """Merge points (N, 3), colours (N, 3) uint8 and optional weights (N,) (default 1 each).

        Each voxel keeps the weighted mean of everything that fell in it, over all batches; a voxel
        this batch creates gets ``tag`` (an int32, e.g. the window number).
        """
        p, c, w = _check_points(points, colors, weights)
        tag = int(tag)
        if not -(2**31) <= tag < 2**31:
            raise ValueError(f"tag: expected an int32, got {tag}")
        if self.backend == "compiled":
            self._add_compiled(p, c, w, np.array([tag], np.int32))
        else:
            while True:
                cells, take = self._usable(p, w)
                xyz, rgb, wt = (p, c, w) if take is None else (p[take], c[take], w[take])
                merged = self._merge(cells, xyz.astype(np.float64, copy=False), rgb, wt, tag)
                self._rows_written = max(self._rows_written, self._n)
                if merged:
                    break
                self._coarsen()  # reserved arrays full: coarsen the map first, then bin the batch again
        self._enforce_cap()

    def _add_compiled(self, p: np.ndarray, c: np.ndarray, w: np.ndarray, tags: np.ndarray) -> None:
        """The compiled loop over a batch (:mod:`edgescene.runtime.fusion_compiled`). Where the rows or
        blocks run out it makes room and goes on from the point it stopped at: a reserved map coarsens
        (its memory stays as reserved), an over-full one too, else the rows grow or the blocks double.
        The result is the numpy path's (sums add, and a coarser grid nests the finer one), except that
        a reserved map of points scattered at under 4 voxels a block may coarsen once more."""
        p = np.ascontiguousarray(p, dtype=np.float64)
        c = np.ascontiguousarray(c)
        w = np.ascontiguousarray(w, dtype=np.float64)
        tags = np.ascontiguousarray(tags, dtype=np.int32)
        start = 0
        while True:
            start, self._n, self._n_blocks, probes, status = fusion_compiled.accumulate(
                p, c, w, tags, 1.0 / self.voxel_size,
                self._packed, self._sums, self._tag, self._n,
                self._block_rows, self._block_keys, self._n_blocks, self._table, self._row, self._shift,
                start,
            )  # fmt: skip
            self.probes += int(probes)
            self._rows_written = max(self._rows_written, self._n)
            if status == fusion_compiled.DONE:
                return
            if status == fusion_compiled.NEED_BLOCKS and not self.reserve:
                self._grow_blocks()
            elif self.reserve or (self.max_points is not None and self._n > self.max_points):
                # reserved memory is full (rows, or blocks for points scattered at under 4 voxels a block)
                self._coarsen()
            else:
                self._grow_for(len(self._w) + 1)

    def _grow_blocks(self) -> None:
        """Twice the compiled backend's blocks; the table is rebuilt for them."""
        n, rows, keys = self._n_blocks, self._block_rows, self._block_keys
        self._allocate_blocks(2 * len(keys))
        self._block_rows[:n], self._block_keys[:n] = rows[:n], keys[:n]
        self.probes += int(fusion_compiled.reinsert_blocks(self._block_keys, n, self._table, self._row, self._shift))

    def _usable(self, p: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Voxel cells (M, 3) float64 (integer-valued) of the usable points (finite, weight > 0, within
        the packable range) and which points those are (None: all of them, the usual case, found
        without a per-point mask)."""
        scaled = np.multiply(p, 1.0 / self.voxel_size, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            np.floor(scaled, out=scaled)
            half = float(1 << (_PACK_BITS - 1))
            lo, hi = (scaled.min(), scaled.max()) if len(p) else (np.nan, np.nan)
            if np.isfinite(lo) and np.isfinite(hi) and lo >= -half and hi < half and w.min() > 0:
                return scaled, None
            ok = np.all((scaled >= -half) & (scaled < half), axis=1) & (w > 0)  # False for nan too
        return scaled[ok], ok

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
        xyz = apply_sim3(self._means()[0], float(s), R, t)
        self.voxel_size *= float(s)
        self._rebin(xyz)
        self._enforce_cap()

    def transform_tags(self, transforms: dict[int, Sim3]) -> None:
        """Move each voxel by the similarity of its tag: ``tag -> Sim3`` (s, R (3, 3), t (3,)),
        ``p -> s R p + t``; voxels whose tag is absent stay. Then re-bin on the same grid (the voxel
        size is unchanged), merging voxels that now coincide: a place mapped twice before a loop
        was closed becomes one surface again."""
        n = self._n
        xyz = self._means()[0]
        tags = self._tag[:n].astype(np.int64)
        if transforms and n:
            # one gather per row instead of one pass over the map per tag (a long video has thousands)
            keys = np.array(sorted(transforms), np.int64)
            scales = np.array([float(transforms[k].s) for k in keys])
            bad = ~(scales > 0)
            if bad.any():
                raise ValueError(f"transforms[{int(keys[bad][0])}]: expected a scale > 0, got {scales[bad][0]}")
            rotations = np.stack([np.asarray(transforms[k].R, np.float64) for k in keys])
            shifts = np.stack([np.asarray(transforms[k].t, np.float64) for k in keys])
            slot = np.clip(np.searchsorted(keys, tags), 0, len(keys) - 1)
            rows = np.flatnonzero(keys[slot] == tags)  # voxels whose tag has a transform
            k = slot[rows]
            xyz[rows] = scales[k, None] * np.einsum("nij,nj->ni", rotations[k], xyz[rows]) + shifts[k]
        self._rebin(xyz)
        self._enforce_cap()

    def clear(self) -> None:
        """Drop every point (the voxel size stays as it is)."""
        self._reset()

    # -- internals
    def _merge(
        self, cells: np.ndarray, xyz: np.ndarray, rgb: np.ndarray, w: np.ndarray, tags: np.ndarray | int
    ) -> bool:
        """Combine a batch with the map by weighted mean per voxel (``cells``: (N, 3) integer-valued
        float64 voxel coordinates within the packable range). A new voxel takes ``tags`` (one int for
        the whole batch, or the least tag of the batch's points in it: the earliest window's).

        Returns False, changing nothing, when reserved arrays cannot take the batch's new voxels.
        """
        if len(cells) == 0:
            return True
        if isinstance(tags, (int, np.integer)):  # one tag: group by one sort, sum by bincount
            uniq, sums = _grouped_sums(cells, w, xyz, rgb)
            first_tags = np.full(len(uniq), int(tags), np.int32)
        else:
            packed = _pack(cells.astype(np.int64))
            uniq, inverse = np.unique(packed, return_inverse=True)
            inverse = inverse.reshape(-1)
            bw, (bxyz, brgb) = _weighted_sums(inverse, len(uniq), w, xyz, rgb)
            sums = np.concatenate([bw[:, None], bxyz, brgb, np.zeros((len(bw), 1))], axis=1)
            first_tags = np.full(len(uniq), np.iinfo(np.int32).max, np.int32)
            np.minimum.at(first_tags, inverse, tags)
        # reserved: refuse a batch whose new voxels do not fit (only counted when they might not)
        if (
            self.reserve
            and self._n + len(uniq) > len(self._w)
            and self._n + int((self._lookup(uniq) < 0).sum()) > len(self._w)
        ):
            return False
        self._grow_for(self._n + len(uniq))
        start = self._n
        rows, new = self._find_or_insert(uniq)
        old = np.flatnonzero(~new)
        old = old[np.argsort(rows[old])]  # in row order: the map is read and written front to back
        at = rows[old]  # voxels already in the map (rows are unique: no lost update)
        updated = self._sums.take(at, axis=0)
        updated += sums.take(old, axis=0)
        _put_rows(self._sums, at, updated)
        fresh = np.flatnonzero(new)  # new voxels took the rows start.. in some order: put each in its own
        placed = np.empty((len(fresh), _COLUMNS))
        _put_rows(placed, rows[fresh] - start, sums.take(fresh, axis=0))
        self._sums[start : self._n] = placed
        tags_placed = np.empty(len(fresh), np.int32)
        tags_placed[rows[fresh] - start] = first_tags[fresh]
        self._tag[start : self._n] = tags_placed
        return True

    def _slots(self, packed: np.ndarray) -> np.ndarray:
        return ((packed.astype(np.uint64) * _FIB) >> self._shift).astype(np.int64)

    def _lookup(self, packed: np.ndarray) -> np.ndarray:
        """Rows of unique packed keys, -1 where absent (nothing inserted)."""
        return self._probe(packed, insert=False)[0]

    def _find_or_insert(self, packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of unique packed keys, inserting the missing ones (appended); (rows, newly inserted)."""
        return self._probe(packed, insert=True)

    def _probe(self, packed: np.ndarray, insert: bool) -> tuple[np.ndarray, np.ndarray]:
        """Linear probing for all keys at once: each round looks at one slot per pending key.

        A key stops at its own slot (found) or at a free one: absent (row -1) when not inserting,
        else it claims the slot; when several keys want one free slot, one wins and the others look
        at it again next round (now taken by another key, they move on).
        """
        rows = np.full(len(packed), -1, dtype=np.int64)
        new = np.zeros(len(packed), dtype=bool)
        slot = self._slots(packed)
        pending = np.arange(len(packed))
        mask = len(self._table) - 1
        while pending.size:
            self.probes += int(pending.size)
            s = slot[pending]
            occupant = self._table[s]
            found = occupant == packed[pending]
            rows[pending[found]] = self._row[s[found]]
            empty = occupant == _EMPTY
            done = found | empty
            if insert:
                at, claim_slots = self._claim(s, empty, packed[pending])  # one winner per free slot
                winners = pending[at]
                fresh = np.arange(self._n, self._n + len(winners))
                self._row[claim_slots] = fresh
                self._packed[fresh] = packed[winners]
                rows[winners], new[winners] = fresh, True
                self._n += len(winners)
                done = found.copy()
                done[at] = True  # losers of a claim retry the same slot
            collided = ~found & ~empty  # slot taken by another key: probe the next one
            slot[pending[collided]] = (s[collided] + 1) & mask
            pending = pending[~done]
        return rows, new

    def _claim(self, slots: np.ndarray, empty: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Write ``keys`` (unique) into their free ``slots`` (where ``empty``); when several want one
        slot, one write lands and its key wins (no sort: read back what each slot holds). Returns
        the winners' positions (into ``slots``) and their slots."""
        e = np.flatnonzero(empty)
        s, k = slots[e], keys[e]
        self._table[s] = k
        won = self._table[s] == k
        return e[won], s[won]

    def _grow_for(self, rows: int) -> None:
        """Make room for ``rows`` voxels (doubling; reserved arrays never grow: :meth:`add` coarsens)."""
        capacity = len(self._w)
        if rows <= capacity or self.reserve:
            return
        target = max(_pow2_at_least(rows), 4 * capacity)  # x4: fewer re-hashes of a growing map
        if self.max_points is not None and not self.reserve:
            target = max(rows, min(target, self.max_points * 2))
        n = self._n
        packed, sums, tag = self._packed[:n], self._sums[:n], self._tag[:n]
        self._allocate_rows(target)
        self._packed[:n], self._sums[:n], self._tag[:n] = packed, sums, tag  # rows keep their order
        # numpy: the table is sized for the rows, so it is rebuilt; compiled: the blocks hold row numbers, which stay
        if self.backend == "numpy":
            self._allocate_index(target)
            self._rehash(packed)

    def _rehash(self, packed: np.ndarray) -> None:
        """Enter the map's unique keys (row i holds ``packed[i]``) into an empty table: probing as in
        :meth:`_probe`, but no key can be found and every row is known, so nothing moves."""
        rows = np.arange(len(packed))
        slot = self._slots(packed)
        pending = rows
        mask = len(self._table) - 1
        while pending.size:
            self.probes += int(pending.size)
            s = slot[pending]
            empty = self._table[s] == _EMPTY
            at, claim_slots = self._claim(s, empty, packed[pending])  # one winner per free slot
            self._row[claim_slots] = pending[at]
            done = np.zeros(len(pending), dtype=bool)
            done[at] = True  # losers retry the same slot (now taken: they move on)
            taken = ~empty
            slot[pending[taken]] = (s[taken] + 1) & mask
            pending = pending[~done]

    def _rebin(self, xyz: np.ndarray) -> None:
        """Recompute the voxels of the stored means ``xyz`` (M, 3) at the current voxel size and merge
        those that now share one (a merged voxel keeps the least of their tags: the earliest window's)."""
        n = self._n
        rgb, w, tags = self._means()[1], self._w[:n].copy(), self._tag[:n].copy()
        self._n = 0
        self._table.fill(_EMPTY)
        if self.backend == "compiled":  # the means bin into at most n voxels: only blocks can run out
            self._block_rows[: self._n_blocks] = -1
            self._n_blocks = 0
            self._add_compiled(xyz, rgb, w, tags)
            return
        cells, take = self._usable(xyz, w)
        if take is not None:
            xyz, rgb, w, tags = xyz[take], rgb[take], w[take], tags[take]
        self._merge(cells, xyz, rgb, w, tags)

    def _coarsen(self) -> None:
        before = len(self)
        self.voxel_size *= 2.0
        self._rebin(self._means()[0])
        log.info(
            "point map: %d points reach max_points=%s; voxel size doubled to %g -> %d points",
            before,
            self.max_points,
            self.voxel_size,
            len(self),
        )

    def _enforce_cap(self) -> None:
        if self.max_points is None:
            return
        while len(self) > self.max_points:
            self._coarsen()
