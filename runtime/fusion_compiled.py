"""Fusion's inner loops, compiled with numba: the point map's (a batch of points, each found in, or
added to, a voxel-block index and added to its voxel's weighted sums), and the
stream's choice and unprojection of a frame's pixels (:func:`select_depth_points`).

Imports numpy and the standard library, and numba when it is installed (the ``runtime`` extras
bring it). Without numba :data:`AVAILABLE` is False and :class:`edgescene.runtime.fusion.PointMap`
runs its numpy implementation, which gives the same voxels, weights and tags (sums equal up to the
order of floating-point additions, rows perhaps in another order: ``tests/runtime/test_fusion.py``
holds them to that).

Why compiled, and why blocks: numpy needs about thirty passes over a batch (voxel keys, a sort to
group it, bincounts, a vectorised probe of a hash table, row gathers and scatters), and a hash table
of single voxels sends each point to a random place in a table larger than the cache. Here a few
loops walk the batch; voxels are indexed in blocks of 4 x 4 x 4 (the voxel-block hashing of KinectFusion
successors, open3d's and nvblox's too): a small hash table finds a block, and neighbouring pixels,
which land in the same or a neighbouring block, then find their voxel's row in the block's 64 slots,
already in cache. ``docs/bench/runtime/runtime_capacity.md`` has the measured effect; open3d's own hash
map, called from Python on the same stream, is slower than both (``fusion_backends.md``).

Layout (shared with ``fusion.py``):

- voxel ``k = floor(p * (1 / voxel_size))`` per axis, packed into one int64 key
  ``(kx + 2**20) << 42 | (ky + 2**20) << 21 | (kz + 2**20)``; the block is the key with the two low
  bits of each axis cleared, the voxel's slot in it ``(kx & 3) << 4 | (ky & 3) << 2 | (kz & 3)``;
- rows: ``packed (R,) int64``, ``sums (R, 8) float64`` = ``[w, w x, w y, w z, w r, w g, w b, 0]``,
  ``row_tags (R,) int32``, of which the first ``n`` are used, in order of creation;
- blocks: ``block_rows (B, 64) int32`` (row of each voxel slot, -1 when empty) and ``block_keys (B,)``
  int64, of which the first ``n_blocks`` are used; a table ``table (T,) int64`` (block key, -1 free)
  and ``table_ids (T,) int64`` (block number), T a power of two >= 2 B, Fibonacci hash
  ``(key * 0x9E3779B97F4A7C15) >> shift`` with ``shift = 64 - log2(T)``, linear probing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

numba: Any
try:  # an optional accelerator: the numpy map is the fallback
    import numba
except ImportError:  # pragma: no cover - exercised where numba is absent (the GPU device image)
    numba = None

__all__ = [
    "AVAILABLE", "DONE", "NEED_BLOCKS", "NEED_ROWS", "accumulate", "cloud", "reinsert_blocks", "select_depth_points",
    "warm_up",
]  # fmt: skip

AVAILABLE = numba is not None

log = logging.getLogger(__name__)

DONE, NEED_ROWS, NEED_BLOCKS = 0, 1, 2  # why accumulate() returned


def _compile(function):
    """``function`` compiled by numba: nogil, so the pipeline's other threads (decoding, the model's
    session) run while a window is fused; cached, so it is compiled once per machine and Python and
    then loaded from ``__pycache__`` beside this file or numba's user cache (``NUMBA_CACHE_DIR``).
    Where neither can be written (a read-only install without a home folder), numba refuses to cache:
    then each process compiles it anew (about 2.5 s, once), which is logged. Without numba the
    function is returned as it is (nothing calls it then)."""
    if not AVAILABLE:
        return function
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError as exc:  # "cannot cache function ...: no locator available"
        log.info("fusion: numba cannot cache %s here (%s); compiling it in this process", function.__name__, exc)
        return numba.njit(cache=False, nogil=True)(function)


# The map's loop is four loops over the batch, each with one job, so that each one's loads do not
# wait on one another and the core overlaps their cache misses: voxel keys, the block of each key,
# the row of each voxel, the sums. Measured on the runtime-capacity walk's 1.1 M-voxel map (392x518,
# 100 k points a frame): 4.7 ms a frame, against 6.1 for the same four loops in one function body
# (whose optimisation LLVM does worse), 8 for two loops and about 3x that for one.


@_compile
def _voxel_keys_of(points, weights, start, inv_voxel, keys):
    """``keys[i]``: the packed voxel key of ``points[start + i]``, or -1 for a point that is skipped
    (not finite, weight not > 0, or 2**20 voxels or more from the origin)."""
    half = 1 << 20
    for i in range(len(keys)):
        keys[i] = -1
        if not (weights[start + i] > 0.0):
            continue
        fx = np.floor(points[start + i, 0] * inv_voxel)
        fy = np.floor(points[start + i, 1] * inv_voxel)
        fz = np.floor(points[start + i, 2] * inv_voxel)
        if not (-half <= fx < half and -half <= fy < half and -half <= fz < half):  # False for nan too
            continue
        keys[i] = ((np.int64(fx) + half) << 42) | ((np.int64(fy) + half) << 21) | (np.int64(fz) + half)


@_compile
def _find_blocks(keys, table, table_ids, shift, block_keys, n_blocks, blocks):
    """``blocks[i]``: the block number of key ``keys[i]`` (>= 0), found in the table or added to it.
    Returns ``(stop, n_blocks, probes)``: keys from ``stop`` on have no block (the blocks ran out at
    ``stop``; ``len(keys)`` when they did not), the blocks now used and the table slots examined."""
    fib = np.uint64(0x9E3779B97F4A7C15)
    mask = np.int64(len(table) - 1)
    low = ~np.int64((3 << 42) | (3 << 21) | 3)  # a key's block: the two low bits of each axis cleared
    capacity = len(block_keys)
    probes = 0
    last_block = np.int64(-1)
    last_id = np.int64(-1)
    for i in range(len(keys)):
        if keys[i] < 0:
            continue
        block = keys[i] & low
        if block != last_block:  # neighbouring pixels share blocks: the table is probed once a run
            slot = np.int64((np.uint64(block) * fib) >> shift)
            while True:
                probes += 1
                occupant = table[slot]
                if occupant == block:
                    last_id = table_ids[slot]
                    break
                if occupant == -1:
                    if n_blocks >= capacity:
                        return i, n_blocks, probes
                    last_id = np.int64(n_blocks)
                    table[slot] = block
                    table_ids[slot] = last_id
                    block_keys[last_id] = block
                    n_blocks += 1
                    break
                slot = (slot + 1) & mask
            last_block = block
        blocks[i] = last_id
    return len(keys), n_blocks, probes


@_compile
def _find_rows(keys, blocks, stop, point_tags, start, packed, sums, row_tags, n, block_rows, rows):
    """``rows[i]`` for ``i < stop``: the row of voxel ``keys[i]`` in block ``blocks[i]``, or a new
    row (zero sums, the tag) if the voxel is new; -1 for a skipped point (key -1). point_tags: (1,)
    the new rows' tag, or (N,) each point's (a re-bin: a voxel keeps the least). Returns
    ``(stop, n)``: rows from ``stop`` on are not found (the rows ran out there), and the rows now used."""
    capacity = len(packed)
    one_tag = len(point_tags) == 1
    for i in range(stop):
        key = keys[i]
        if key < 0:
            rows[i] = -1
            continue
        cell = (((key >> 42) & 3) << 4) | (((key >> 21) & 3) << 2) | (key & 3)
        row = block_rows[blocks[i], cell]
        if row < 0:
            if n >= capacity:
                return i, n
            row = n
            block_rows[blocks[i], cell] = row
            packed[row] = key
            for j in range(8):
                sums[row, j] = 0.0
            row_tags[row] = point_tags[0] if one_tag else point_tags[start + i]
            n += 1
        elif not one_tag and point_tags[start + i] < row_tags[row]:
            row_tags[row] = point_tags[start + i]  # merging voxels (a re-bin): the earliest window's tag
        rows[i] = row
    return stop, n


@_compile
def _add_sums(points, colors, weights, start, rows, stop, sums):
    """Add points ``start .. start + stop - 1`` to their rows' weighted sums (row -1: skipped), in
    the batch's order."""
    for i in range(stop):
        row = rows[i]
        if row < 0:
            continue
        p = start + i
        w = weights[p]
        sums[row, 0] += w
        sums[row, 1] += w * points[p, 0]
        sums[row, 2] += w * points[p, 1]
        sums[row, 3] += w * points[p, 2]
        sums[row, 4] += w * colors[p, 0]
        sums[row, 5] += w * colors[p, 1]
        sums[row, 6] += w * colors[p, 2]


def _accumulate(
    points, colors, weights, point_tags, inv_voxel,
    packed, sums, row_tags, n,
    block_rows, block_keys, n_blocks, table, table_ids, shift,
    start,
):  # fmt: skip
    """Add ``points[start:]`` into the map (layout: module docstring), stopping where the rows or
    the blocks run out.

    points: (N, 3) float64; colors: (N, 3) uint8 or float64 in 0..255; weights: (N,) float64 >= 0;
    point_tags: (N,) or (1,) int32: of length 1, the tag of the voxels the batch creates; of length
    N (a re-bin of the map's own voxels), each point's tag, and a voxel keeps the least of its
    points' tags (the earliest window's); inv_voxel: 1 / voxel size.

    Points that are not finite, have weight 0 or lie 2**20 voxels or more from the origin are skipped.
    Returns ``(next, n, n_blocks, probes, status)``: the first point not added (N when all were), the
    rows and blocks now used, the table slots examined and :data:`DONE`, :data:`NEED_ROWS` or
    :data:`NEED_BLOCKS`; a caller that gets one of the latter makes room and calls again from ``next``
    (blocks added for points after ``next`` stay: empty until their points come again).
    The sums are added in the batch's order, whatever the loops: the same bits as one loop.
    """
    count = len(points) - start
    keys = np.empty(count, dtype=np.int64)
    _voxel_keys_of(points, weights, start, inv_voxel, keys)
    blocks = np.empty(count, dtype=np.int64)
    stop, n_blocks, probes = _find_blocks(keys, table, table_ids, shift, block_keys, n_blocks, blocks)
    status = DONE if stop == count else NEED_BLOCKS
    rows = np.empty(count, dtype=np.int64)
    found, n = _find_rows(keys, blocks, stop, point_tags, start, packed, sums, row_tags, n, block_rows, rows)
    if found < stop:
        status, stop = NEED_ROWS, found
    _add_sums(points, colors, weights, start, rows, stop, sums)
    return start + stop, n, n_blocks, probes, status


def _reinsert_blocks(block_keys, n_blocks, table, table_ids, shift):
    """Enter blocks ``0..n_blocks-1`` (unique keys) into an empty table (all -1): a grown index's
    re-hash. Returns the table slots examined."""
    fib = np.uint64(0x9E3779B97F4A7C15)
    mask = np.int64(len(table) - 1)
    probes = 0
    for bid in range(n_blocks):
        block = block_keys[bid]
        slot = np.int64((np.uint64(block) * fib) >> shift)
        probes += 1
        while table[slot] != -1:
            slot = (slot + 1) & mask
            probes += 1
        table[slot] = block
        table_ids[slot] = bid
    return probes


def _cloud(sums, n, points, colors):
    """The map's first ``n`` rows as a cloud, in one pass over the sums: ``points`` (n, 3) float32
    mean positions, ``colors`` (n, 3) uint8 mean colours (rounded half to even, clipped to 0..255):
    the same values as ``PointMap``'s numpy path (``(sums[:, 1:4] / w).astype(float32)``,
    ``clip(rint(sums[:, 4:7] / w), 0, 255).astype(uint8)``), from one read of the rows."""
    for i in range(n):
        w = sums[i, 0]
        for j in range(3):
            points[i, j] = np.float32(sums[i, 1 + j] / w)
            c = np.rint(sums[i, 4 + j] / w)
            colors[i, j] = np.uint8(min(max(c, 0.0), 255.0))


def _select_depth_points(depth, conf, rgb, threshold, max_depth, stride, phase_row, phase_col, cut, scale, intr, extr,
                         out_points, out_colors, out_weights):  # fmt: skip
    """The pixels of one frame the stream fuses, unprojected into the map frame, in pixel order.

    depth, conf: (H, W) float32 (depth in window units); rgb: (H, W, 3) uint8. A pixel is kept when
    ``conf >= threshold`` and ``depth <= max_depth`` and, with ``stride`` > 1, it lies on the grid
    (row % stride == phase_row and col % stride == phase_col) or ``depth > cut`` (comparisons in
    float64 of float32 values: pass the thresholds as the float32 values numpy compares with).
    scale: the window's scale into the map; intr: (3, 3) float64, model pixels; extr: (3, 4) float64
    camera-from-map. A kept pixel (u = col, v = row) becomes ``R^T (X_cam - t)`` with X_cam =
    ((u - cx) d / fx, (v - cy) d / fy, d), d = scale x depth, evaluated in the order of
    ``StreamingReconstruction._map_points`` (bit for bit the numpy result). out_points (H W, 3)
    float64, out_colors (H W, 3) uint8, out_weights (H W,) float64 (the confidence): filled from 0.
    Returns how many pixels were kept.
    """
    h, w = depth.shape
    fx, fy, cx, cy = intr[0, 0], intr[1, 1], intr[0, 2], intr[1, 2]
    t0, t1, t2 = extr[0, 3], extr[1, 3], extr[2, 3]
    n = 0
    for r in range(h):
        row_on_grid = stride == 1 or r % stride == phase_row
        v = np.float64(r)
        for c in range(w):
            confidence = np.float64(conf[r, c])
            if not (confidence >= threshold):
                continue
            d32 = np.float64(depth[r, c])
            if not (d32 <= max_depth):
                continue
            if stride > 1 and not ((row_on_grid and c % stride == phase_col) or d32 > cut):
                continue
            d = scale * d32
            a = (np.float64(c) - cx) * d / fx - t0
            b = (v - cy) * d / fy - t1
            e = d - t2
            for j in range(3):
                out_points[n, j] = a * extr[0, j] + b * extr[1, j] + e * extr[2, j]
                out_colors[n, j] = rgb[r, c, j]
            out_weights[n] = confidence
            n += 1
    return n


def warm_up() -> float:
    """Load (or compile, the first time on a machine: about 2.5 s in all; later processes load from
    numba's cache in about 0.4 s) :func:`select_depth_points` for the arrays the stream passes it.
    :func:`edgescene.runtime.fusion.warm_up` does the map's loops with a real map, then this.
    Returns the seconds spent (0 without numba)."""
    if not AVAILABLE:
        return 0.0
    start = time.perf_counter()
    one = np.ones((1, 1), np.float32)
    select_depth_points(
        one, one, np.zeros((1, 1, 3), np.uint8), 0.0, np.inf, 1, 0, 0, 0.0, 1.0, np.eye(3), np.eye(3, 4),
        np.zeros((1, 3)), np.zeros((1, 3), np.uint8), np.zeros(1),
    )  # fmt: skip
    return time.perf_counter() - start


accumulate: Any = None  # the compiled functions (None without numba)
cloud: Any = None
reinsert_blocks: Any = None
select_depth_points: Any = None


if AVAILABLE:
    accumulate = _compile(_accumulate)
    cloud = _compile(_cloud)
    reinsert_blocks = _compile(_reinsert_blocks)
    select_depth_points = _compile(_select_depth_points)
