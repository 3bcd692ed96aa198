"""How cost grows with the number of frames: a growth label for batch mode and the streaming run.

Batch mode (every frame in one model call): the suite's per-frame-count timings and peak memories
are fitted as ``y = a * frames ** k`` (least squares in log-log); :func:`classify_growth` names
``k``. Streaming mode (:mod:`edgescene.bench.streaming_memory`): the per-frame cost and the memory at
frames 10, 100 and the last are compared; within ``tolerance`` of the first checkpoint is "constant".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# exponent k of y ~ frames**k -> label (upper bounds, exclusive)
GROWTH_LABELS = (
    (0.15, "constant"),
    (0.75, "sublinear"),
    (1.3, "linear"),
    (1.75, "superlinear"),
    (math.inf, "quadratic or worse"),
)


def growth_exponent(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares k of ``y = a x^k`` over the positive points; None with fewer than 2 distinct x."""
    pts = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if x and y and x > 0 and y > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def classify_growth(xs: Sequence[float], ys: Sequence[float], tolerance: float = 0.10) -> dict[str, Any]:
    """{"exponent": k, "label": ...}; "constant" also when every y is within ``tolerance`` of the first."""
    k = growth_exponent(xs, ys)
    if k is None:
        return {"exponent": None, "label": "unknown (fewer than 2 frame counts)"}
    first = float(ys[0])
    if first > 0 and all(abs(float(y) / first - 1) <= tolerance for y in ys):
        return {"exponent": round(k, 3), "label": "constant"}
    label = next(name for bound, name in GROWTH_LABELS if k < bound)
    return {"exponent": round(k, 3), "label": label}


@dataclass
class BatchScale:
    """One format's batch-mode growth over the requested frame counts."""

    format: str
    frames: list[int]
    latency_ms: list[float]
    peak_rss_mb: list[float | None]
    activation_mb: list[float | None]  # peak RSS during the runs minus RSS before them
    latency_growth: dict[str, Any] = field(default_factory=dict)
    memory_growth: dict[str, Any] = field(default_factory=dict)


@dataclass
class StreamScale:
    """The streaming run: per-frame cost and memory at the checkpoints, with growth labels."""

    model: str
    format: str
    frames: int
    size: list[int]
    window: int
    overlap: int
    backend: str
    checkpoints: dict[str, dict[str, Any]]
    latency_change: float  # last / first checkpoint - 1
    rss_change: float
    latency_label: str
    memory_label: str
    render_s_excluded: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    render_size: list[int] | None = None  # the synthetic video's frame size before the runtime resizes it
    warmup_calls: int = 0  # blank windows run before frame 1
    reserve_map: bool = False  # the point map's bound allocated up front
    pipelined: bool = False  # model thread and write-behind on (the runtime's default)
    fps: float | None = None  # end to end: frames / the stream's wall time (rendering excluded)
    model_only_fps: float | None = None  # the model alone: (window - overlap) frames per call


def stream_label(change: float, tolerance: float = 0.10) -> str:
    """'constant (+4.1 %)' or 'grows (+37 %)' / 'shrinks (-12 %)' between the first and last checkpoint."""
    pct = f"{change * 100:+.1f} %"
    if abs(change) <= tolerance:
        return f"constant ({pct})"
    return f"{'grows' if change > 0 else 'shrinks'} ({pct})"


def batch_scale(row) -> BatchScale | None:
    """Growth of one suite row (``edgescene.bench.suite.FormatRow``) over its timed frame counts."""
    timed = [r for r in row.results if r.timing]
    if len(timed) < 1:
        return None
    frames = [r.frames for r in timed]
    latency = [r.timing.median_ms for r in timed]
    peaks = [r.peak_rss_mb for r in timed]
    activation = [
        None if r.peak_rss_mb is None or r.rss_before_mb is None else max(r.peak_rss_mb - r.rss_before_mb, 0.0)
        for r in timed
    ]
    scale = BatchScale(row.format, frames, latency, peaks, activation)
    scale.latency_growth = classify_growth(frames, latency)
    mem = [a for a in activation if a is not None]
    if len(mem) == len(frames):
        # activation memory is near 0 at 1 frame on small models: 1 MiB floor keeps the fit finite
        scale.memory_growth = classify_growth(frames, [max(a, 1.0) for a in mem])
    return scale
