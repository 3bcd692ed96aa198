"""Metric scale (and, with GPS, position and heading) for a reconstruction: the keyframes' camera
centres fitted to where the cameras really were (:mod:`edgescene.runtime.positions`).

:func:`known_positions` reads what the source knows (:class:`KnownPositions`): a GPS or pose
track's samples, each matched to the camera centre interpolated at its time between the keyframes
around it; a photo's EXIF GPS; or, for a baseline, the two named frames. :func:`fit_positions` then
fits a similarity ``p_metric = s R p_map + t``:

- **full** (position, heading and scale): at least 3 positions that are not collinear (the second
  principal spread at least ``COLLINEAR`` of the first). Robust: least median of squares over
  3-point samples (all of them up to ``LMEDS_SAMPLES``, else that many drawn with a fixed seed),
  inliers within 2.5 robust standard deviations of it, then least squares (Umeyama) on the inliers.
  Up to half the positions may be gross outliers (a GPS jump, a bad fix).
- **scale only**: 2 positions, or positions on a line (a straight flight): the scale is the median
  ratio of true to reconstructed distances over the pairs at least a tenth of the largest distance
  apart; the map keeps its own frame (orientation and origin are not observable).

The fit's report (:meth:`MetricFit.report`) says which, how many positions were used and kept,
the residuals in metres (labelled by frame, track time or photo), and the local ENU origin for
geodetic sources.

Imports numpy and the core only (never torch).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgescene.core.geometry import umeyama_sim3
from edgescene.core.sim3 import Sim3
from edgescene.runtime.positions import (
    PositionError,
    ScaleSource,
    exif_geodetic,
    geodetic_to_enu,
    read_gps_track,
    read_tum,
)

__all__ = [
    "COLLINEAR",
    "KnownPositions",
    "MetricFit",
    "check_input_kind",
    "fit_positions",
    "known_positions",
    "lmeds_sim3",
]

COLLINEAR = 0.05  # sqrt(second / first principal variance) below this: a line, scale only
LMEDS_SAMPLES = 2000
INLIER_SIGMAS = 2.5


@dataclass(frozen=True)
class MetricFit:
    """``map_to_metric`` moves the map into metres; the rest is what report.json says of the fit."""

    map_to_metric: Sim3
    mode: str  # "full" | "scale"
    source: str
    frame: str  # what the metric frame is
    used: list[int]  # rows of the positions given to the fit
    inliers: list[int]  # of those, the ones the fit kept
    residuals_m: list[float]  # per used row, after the fit
    labels: list[str]  # per used row, what it is (a frame, a track time, a photo)
    enu_origin: tuple[float, float, float] | None = None  # latitude, longitude, altitude
    note: str = ""

    @property
    def inlier_residuals(self) -> np.ndarray:
        """(n,) residuals, metres, of the positions the fit kept."""
        kept = set(self.inliers)
        return np.array([r for k, r in zip(self.used, self.residuals_m, strict=True) if k in kept])

    def report(self) -> dict:
        kept = self.inlier_residuals
        return {
            "scale_source": self.source,
            "mode": self.mode,
            "units": "metres",
            "frame": self.frame,
            "scale": self.map_to_metric.s,
            "rotation": np.asarray(self.map_to_metric.R).tolist(),
            "translation": np.asarray(self.map_to_metric.t).tolist(),
            "positions_used": len(self.used),
            "inliers": len(self.inliers),
            "outliers": [label for k, label in zip(self.used, self.labels, strict=True) if k not in set(self.inliers)],
            "residual_rmse_m": float(np.sqrt(np.mean(kept**2))) if kept.size else None,
            "residual_median_m": float(np.median(kept)) if kept.size else None,
            "residual_max_m": float(kept.max()) if kept.size else None,
            "residuals_m": {label: round(r, 6) for label, r in zip(self.labels, self.residuals_m, strict=True)},
            **(
                {"enu_origin": {"lat": self.enu_origin[0], "lon": self.enu_origin[1], "alt": self.enu_origin[2]}}
                if self.enu_origin is not None
                else {}
            ),
            **({"note": self.note} if self.note else {}),
        }


def _residuals(s: float, R: np.ndarray, t: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    return np.linalg.norm(dst - (s * src @ R.T + t), axis=1)


def lmeds_sim3(src: np.ndarray, dst: np.ndarray, seed: int = 0) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Robust similarity ``dst ~ s R src + t`` (see the module docstring): (s, R, t, inlier mask)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    n = len(src)
    if n < 3:
        raise PositionError(f"a full fit needs at least 3 positions, got {n}")
    combos = itertools.combinations(range(n), 3)
    count = n * (n - 1) * (n - 2) // 6
    if count > LMEDS_SAMPLES:
        rng = np.random.default_rng(seed)
        samples: Sequence[Sequence[int]] = [rng.choice(n, 3, replace=False).tolist() for _ in range(LMEDS_SAMPLES)]
    else:
        samples = list(combos)
    best = None
    for sample in samples:
        idx = list(sample)
        try:
            s, R, t = umeyama_sim3(src[idx], dst[idx])
        except ValueError:  # collinear sample
            continue
        if not s > 0:
            continue
        med = float(np.median(_residuals(s, R, t, src, dst) ** 2))
        if best is None or med < best[0]:
            best = (med, s, R, t)
    if best is None:
        raise PositionError("every 3 positions are collinear: the reconstruction's cameras do not span a plane")
    med, s, R, t = best
    extent = float(np.max(np.linalg.norm(dst[:, None] - dst[None], axis=-1)))
    inliers = np.ones(n, bool)
    for _ in range(2):  # inliers of the LMedS model, then of the least-squares fit on them
        sigma = 1.4826 * (1 + 5 / max(n - 3, 1)) * np.sqrt(med)
        r = _residuals(s, R, t, src, dst)
        inliers = r <= max(INLIER_SIGMAS * sigma, 1e-9 * extent)
        if inliers.sum() < 3:
            raise PositionError(
                f"only {int(inliers.sum())} positions agree with any fit: the track does not match the video"
            )
        s, R, t = umeyama_sim3(src[inliers], dst[inliers])
        med = float(np.median(_residuals(s, R, t, src[inliers], dst[inliers]) ** 2))
    return float(s), np.asarray(R, np.float64), np.asarray(t, np.float64), inliers


def _spread_ratio(points: np.ndarray) -> float:
    """sqrt(second / first) principal variance of (N, 3) points: 0 on a line, 1 for a round cloud."""
    if len(points) < 2:
        return 0.0
    var = np.linalg.eigvalsh(np.cov((points - points.mean(0)).T, bias=True))  # ascending
    return float(np.sqrt(max(var[1], 0.0) / var[2])) if var[2] > 0 else 0.0


def fit_positions(
    centres: np.ndarray, targets: np.ndarray, source: str, frame: str, labels: Sequence[str] | None = None, **extra
) -> MetricFit:
    """Fit the (n, 3) reconstructed camera ``centres`` to (n, 3) metric ``targets`` (NaN rows: no
    position); ``labels``: what each row is, for the report (default: its index). ``extra``:
    ``enu_origin``, ``note`` for the report."""
    centres, targets = np.asarray(centres, np.float64), np.asarray(targets, np.float64)
    if centres.shape != targets.shape or centres.ndim != 2 or centres.shape[1] != 3:
        raise ValueError(f"centres {centres.shape} and targets {targets.shape} must both be (K, 3)")
    used = np.flatnonzero(np.isfinite(targets).all(1))
    if len(used) < 2:
        raise PositionError(
            f"{source}: {len(used)} position(s) fall within the video's keyframes; metric scale needs at least 2 "
            "(3 not on a line to also place and orient the map): check that the track covers the video's time "
            "(--gps-offset) or that the photos carry GPS"
        )
    src, dst = centres[used], targets[used]
    note = extra.pop("note", "")
    if len(used) >= 3 and _spread_ratio(dst) >= COLLINEAR:
        s, R, t, inliers = lmeds_sim3(src, dst)
        mode = "full"
    else:
        d_dst = np.linalg.norm(dst[:, None] - dst[None], axis=-1)
        d_src = np.linalg.norm(src[:, None] - src[None], axis=-1)
        pairs = np.triu(d_dst >= 0.1 * d_dst.max(), 1) & (d_src > 0)
        if d_dst.max() <= 0 or not pairs.any():
            raise PositionError(
                f"{source}: the positions (or the reconstructed cameras) do not move: no scale to measure"
            )
        ratios = d_dst[pairs] / d_src[pairs]
        s = float(np.median(ratios))
        R, t = np.eye(3), np.zeros(3)
        inliers = np.ones(len(used), bool)
        mode = "scale"
        why = "2 positions" if len(used) == 2 else "the positions lie on a line"
        note = (note + "; " if note else "") + f"scale only ({why}): the map keeps its own origin and orientation"
        frame = "the reconstruction's own frame (first keyframe's camera), in metres"
    fit = Sim3(s, R, t)
    residuals = (
        _residuals(s, R, t, src, dst)
        if mode == "full"
        else np.abs(np.linalg.norm(dst - dst[0], axis=1) - s * np.linalg.norm(src - src[0], axis=1))
    )
    return MetricFit(
        fit,
        mode,
        source,
        frame,
        [int(k) for k in used],
        [int(k) for k in used[inliers]],
        [float(r) for r in residuals],
        [str(labels[int(k)]) if labels is not None else str(int(k)) for k in used],
        note=note,
        **extra,
    )


def check_input_kind(source: ScaleSource, frames: str) -> None:
    """PositionError, before any frame runs, when ``source`` cannot serve this input (``frames``:
    ``"video"`` or ``"image(s)"``): EXIF GPS is in photos; a GPS track is matched on a video's clock."""
    if source.kind == "exif" and frames == "video":
        raise PositionError("--scale-from exif reads GPS from photos; for a video give its track: gps:FILE")
    if source.kind == "gps" and frames != "video":
        raise PositionError(
            "gps:FILE matches keyframes by the video's clock; for photos with GPS in their EXIF use --scale-from exif"
        )


@dataclass(frozen=True)
class KnownPositions:
    """Where a scale source says the map's cameras were: row ``i`` puts the camera centre at
    ``(1 - weight[i]) * centres[first[i]] + weight[i] * centres[second[i]]`` (keyframe indices; the
    same keyframe with weight 0 for a photo's EXIF or a baseline's frame, the two keyframes around a
    track sample's time otherwise) at ``targets[i]`` (metres, in ``frame``)."""

    source: ScaleSource
    first: np.ndarray  # (n,) int
    second: np.ndarray  # (n,) int
    weight: np.ndarray  # (n,) in [0, 1]
    targets: np.ndarray  # (n, 3) metres
    labels: list[str]  # what each row is, for the report: "frame 12", "3.400 s", a photo's name
    frame: str
    origin: tuple[float, float, float] | None = None  # the ENU origin of geodetic sources
    note: str = ""

    def points(self, centres: np.ndarray) -> np.ndarray:
        """(n, 3) map positions of the rows, from the keyframes' (K, 3) camera ``centres``."""
        c = np.asarray(centres, np.float64)
        w = self.weight[:, None]
        return (1.0 - w) * c[self.first] + w * c[self.second]

    @property
    def nearest_keyframe(self) -> np.ndarray:
        """(n,) the keyframe each row is closest to in time."""
        return np.where(self.weight < 0.5, self.first, self.second)

    def fit(self, centres: np.ndarray) -> MetricFit:
        """The similarity from the map with keyframe camera ``centres`` (K, 3) into these metres."""
        return fit_positions(
            self.points(centres), self.targets, self.source.describe(), self.frame, labels=self.labels,
            enu_origin=self.origin, note=self.note,
        )  # fmt: skip


def known_positions(source: ScaleSource, infos: Sequence, frames: str) -> KnownPositions:
    """``source``'s positions of the keyframes described by ``infos``
    (:class:`~edgescene.runtime.stream.FrameInfo`: index, source, timestamp_s); ``frames``: "video"
    or "image(s)" (how times are read). Files are read here, once.

    A track (GPS, TUM poses) is used at its own samples: each sample inside the keyframes' time span
    is matched to the camera centre interpolated between the two keyframes around it. Each sample's
    noise then counts once, and nothing is extrapolated past the track's ends (holding a track's end
    position for the keyframes after it biased the scale). Only when fewer than two samples fall
    inside the span (a track sparser than the clip) is the track interpolated at the keyframes it
    covers instead."""
    k = len(infos)
    if source.kind == "baseline":
        return _baseline_positions(source, infos)
    check_input_kind(source, frames)
    if source.kind == "exif":
        geo = np.full((k, 3), np.nan)
        for i, info in enumerate(infos):
            position = exif_geodetic(info.source) if info.source else None
            if position is not None:
                geo[i] = position
        found = np.flatnonzero(np.isfinite(geo).all(1))
        labels = [Path(infos[int(i)].source).name for i in found]
        return _geodetic_positions(source, found, found, np.zeros(len(found)), geo[found], labels, "exif")
    assert source.path is not None
    if source.kind == "poses":
        track = read_tum(source.path)
        times = _keyframe_times(infos, frames, source, photos_by_index=True)
        assert track.xyz is not None
        first, second, weight, targets, labels = _track_rows(track.times, track.xyz, times, infos, source.offset_s)
        if not len(first):
            raise PositionError(
                f"{source.describe()}: no pose's time falls within the keyframes' times "
                f"({times.min():.3f}-{times.max():.3f} s); check the clock or --gps-offset"
            )
        return KnownPositions(
            source, first, second, weight, targets, labels, f"the frame of {source.path.name}, metres"
        )
    track = read_gps_track(source.path)
    times = _keyframe_times(infos, frames, source, photos_by_index=False)
    zero = track.times[0] if track.absolute else 0.0  # the video's first frame is the track's first fix
    assert track.geodetic is not None
    first, second, weight, geo, labels = _track_rows(
        track.times, track.geodetic, times + zero, infos, zero + source.offset_s
    )
    return _geodetic_positions(source, first, second, weight, geo, labels, f"gps:{source.path.name}")


def _track_rows(
    track_times: np.ndarray, values: np.ndarray, key_times: np.ndarray, infos: Sequence, zero: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(first, second, weight, values, labels) of the track samples inside the keyframes' time span,
    else of the track interpolated at the keyframes it covers. ``key_times``: on the track's clock;
    ``zero``: the track time of the first frame (labels are in the video's seconds)."""
    order = np.argsort(key_times, kind="stable")
    sorted_t = key_times[order]
    eps = 1e-6
    inside = (track_times >= sorted_t[0] - eps) & (track_times <= sorted_t[-1] + eps)
    if len(key_times) >= 2 and inside.sum() >= 2:
        t = track_times[inside]
        j = np.clip(np.searchsorted(sorted_t, t, side="right") - 1, 0, len(sorted_t) - 2)
        t0, span = sorted_t[j], sorted_t[j + 1] - sorted_t[j]  # span 0: two keyframes at one time
        weight = np.divide(t - t0, span, out=np.zeros_like(t), where=span > 0).clip(0.0, 1.0)
        labels = [f"{v - zero:.3f} s" for v in t]
        return order[j], order[j + 1], weight, values[inside], labels
    covered = np.flatnonzero((key_times >= track_times[0] - eps) & (key_times <= track_times[-1] + eps))
    out = np.stack([np.interp(key_times[covered], track_times, values[:, a]) for a in range(3)], 1)
    labels = [f"frame {infos[int(i)].index}" for i in covered]
    return covered, covered, np.zeros(len(covered)), out, labels


def _baseline_positions(source: ScaleSource, infos: Sequence) -> KnownPositions:
    assert source.metres is not None
    if source.frames is None:
        if len(infos) < 2:
            raise PositionError("baseline: the reconstruction has fewer than 2 keyframes")
        a, b = 0, 1
    else:
        where = {int(info.index): i for i, info in enumerate(infos)}
        missing = [f for f in source.frames if f not in where]
        if missing:
            raise PositionError(
                f"baseline@{source.frames[0]},{source.frames[1]}: frame(s) {missing} are not keyframes "
                "(lower --keyframe-threshold, or name frames that are)"
            )
        a, b = where[source.frames[0]], where[source.frames[1]]
    rows = np.array([a, b])
    targets = np.array([[0.0, 0.0, 0.0], [source.metres, 0.0, 0.0]])
    labels = [f"frame {infos[a].index}", f"frame {infos[b].index}"]
    frame = "the reconstruction's own frame (first keyframe's camera), in metres"
    return KnownPositions(source, rows, rows, np.zeros(2), targets, labels, frame)


def _keyframe_times(infos: Sequence, frames: str, source: ScaleSource, photos_by_index: bool) -> np.ndarray:
    times = []
    for position, info in enumerate(infos):
        if info.timestamp_s is not None:
            times.append(float(info.timestamp_s))
        elif photos_by_index:
            times.append(float(info.index if info.index >= 0 else position))
        else:
            raise PositionError(f"{source.describe()}: keyframe {position} has no time to match the track")
    return np.asarray(times) + source.offset_s


def _geodetic_positions(
    source: ScaleSource,
    first: np.ndarray,
    second: np.ndarray,
    weight: np.ndarray,
    geo: np.ndarray,
    labels: list[str],
    what: str,
) -> KnownPositions:
    if not len(geo):
        raise PositionError(
            f"{what}: no keyframe has a GPS position (photos without EXIF GPS, or a track that does not cover the "
            "video's time: check --gps-offset)"
        )
    origin = tuple(float(v) for v in geo[0])
    targets = geodetic_to_enu(geo, np.array(origin))
    frame = "local East-North-Up (x east, y north, z up) metres about enu_origin"
    return KnownPositions(source, first, second, weight, targets, labels, frame, origin)  # type: ignore[arg-type]
