"""The parity gate: an artifact is accepted only if it reproduces PyTorch on fixed inputs.

Inputs are frames of the bundled sample video resized to the export resolution (real images, the
same every time), at several frame counts. For every output the gate reports the p99 and max
absolute error, the p99 of the *normalised* error ``|a - b| / max(1, |b|)`` (absolute for small
values, relative for large ones such as far depths) and the cosine similarity. What must hold:

fp32 (same math, different kernels): normalised error p99 <= 1e-4 on values, <= 1e-3 on
confidences (``1 + exp(c)`` amplifies the last bits of ``c``).

fp16 and int8 (different math): checked where users feel it, after decoding, with limits from
what each precision can carry. fp16 keeps ~3 significant digits per op; over 2 x 24 transformer
blocks the token error is ~1e-3 relative, which moves depth (``exp`` of a head output) by well
under 1 % and camera rotations by hundredths of a degree. Dynamic int8 quantizes every
activation per tensor to 256 levels (~1e-2 relative per MatMul), an order of magnitude more.

==========================  ============  ============
decoded quantity            fp16 limit    int8 limit
==========================  ============  ============
depth, median rel. error    1 %           3 %
depth, p95 rel. error       5 %           10 %
confidence, median rel.     5 %           15 %
point map, median rel.      2 %           6 %
rotation error (max)        0.5 deg       2 deg
translation / scene scale   2 %           6 %
field of view, rel. error   1 %           3 %
track, median px error      1 px          3 px
DINOv3 token cosine, mean   0.999         0.99
DINOv3 token cosine, min    0.99          0.95
==========================  ============  ============
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from edgescene.core.geometry import decode_pose
from edgescene.export.graphs import CONFIDENCE_OUTPUTS

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

FP32_LIMITS = {"value": 1e-4, "confidence": 1e-3}
DECODED_LIMITS = {
    "fp16": {
        "depth_median_rel": 0.01,
        "depth_p95_rel": 0.05,
        "conf_median_rel": 0.05,
        "points_median_rel": 0.02,
        "rotation_deg": 0.5,
        "translation_rel": 0.02,
        "fov_rel": 0.01,
        "track_median_px": 1.0,
        "cosine_mean": 0.999,
        "cosine_min": 0.99,
    },
    "int8": {
        "depth_median_rel": 0.03,
        "depth_p95_rel": 0.10,
        "conf_median_rel": 0.15,
        "points_median_rel": 0.06,
        "rotation_deg": 2.0,
        "translation_rel": 0.06,
        "fov_rel": 0.03,
        "track_median_px": 3.0,
        "cosine_mean": 0.99,
        "cosine_min": 0.95,
    },
}
# Limits are upper bounds except the cosine ones, which are lower bounds.
LOWER_BOUNDS = {"cosine_mean", "cosine_min"}


@dataclass
class OutputError:
    name: str
    p99_abs: float
    max_abs: float
    p99_normalised: float
    cosine: float


@dataclass
class Case:
    frames: int
    outputs: list[OutputError]
    checks: dict[str, float]  # metric -> measured value
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class ParityReport:
    precision: str
    family: str
    cases: list[Case]
    limits: dict[str, float]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    def to_json(self) -> dict:
        return {
            "passed": self.passed,
            "precision": self.precision,
            "limits": self.limits,
            "cases": [{**asdict(c), "passed": c.passed} for c in self.cases],
        }

    def format(self) -> str:
        lines = [f"parity gate ({self.precision}): {'PASSED' if self.passed else 'FAILED'}"]
        for case in self.cases:
            lines.append(f"  frames={case.frames}: {'ok' if case.passed else 'FAILED'}")
            for o in case.outputs:
                lines.append(
                    f"    {o.name:<18} p99|d| {o.p99_abs:.2e}  max|d| {o.max_abs:.2e}  "
                    f"p99 norm {o.p99_normalised:.2e}  cos {o.cosine:.6f}"
                )
            for metric, value in case.checks.items():
                lines.append(f"    {metric:<26} {value:.4g} (limit {self.limits.get(metric, float('nan')):.4g})")
            lines += [f"    FAIL: {f}" for f in case.failures]
        return "\n".join(lines)


def output_error(name: str, got: np.ndarray, ref: np.ndarray) -> OutputError:
    if got.shape != ref.shape:
        raise ValueError(f"output {name}: shape {got.shape} differs from PyTorch's {ref.shape}")
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    normalised = diff / np.maximum(1.0, np.abs(ref))
    a, b = got.reshape(-1).astype(np.float64), ref.reshape(-1).astype(np.float64)
    cosine = float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-30))
    finite = np.isfinite(diff)
    if not finite.all():
        return OutputError(name, float("inf"), float("inf"), float("inf"), cosine)
    return OutputError(
        name, float(np.percentile(diff, 99)), float(diff.max()), float(np.percentile(normalised, 99)), cosine
    )


def _rotation_deg(ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
    cos = (np.trace(ra @ np.swapaxes(rb, -1, -2), axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def decoded_checks(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], height: int, width: int) -> dict[str, float]:
    """VGGT outputs compared the way a user sees them: depth, points, cameras, tracks."""
    checks = {}
    rel = np.abs(got["depth"] - ref["depth"]) / np.maximum(ref["depth"], 1e-6)
    checks["depth_median_rel"] = float(np.median(rel))
    checks["depth_p95_rel"] = float(np.percentile(rel, 95))
    conf_rel = np.abs(got["depth_conf"] - ref["depth_conf"]) / ref["depth_conf"]
    checks["conf_median_rel"] = float(np.median(conf_rel))
    point_err = np.linalg.norm(got["world_points"] - ref["world_points"], axis=-1)
    checks["points_median_rel"] = float(
        np.median(point_err) / max(np.median(np.linalg.norm(ref["world_points"], axis=-1)), 1e-6)
    )
    extr_g, intr_g = decode_pose(got["pose_enc"].astype(np.float64), (height, width))
    extr_r, intr_r = decode_pose(ref["pose_enc"].astype(np.float64), (height, width))
    checks["rotation_deg"] = float(_rotation_deg(extr_g[:, :, :3], extr_r[:, :, :3]).max())
    scale = max(float(np.median(ref["depth"])), float(np.linalg.norm(extr_r[:, :, 3], axis=-1).max()), 1e-6)
    checks["translation_rel"] = float(np.linalg.norm(extr_g[:, :, 3] - extr_r[:, :, 3], axis=-1).max() / scale)
    fov_g, fov_r = got["pose_enc"][:, 7:], ref["pose_enc"][:, 7:]
    checks["fov_rel"] = float((np.abs(fov_g - fov_r) / np.maximum(np.abs(fov_r), 1e-6)).max())
    if "track" in ref:
        checks["track_median_px"] = float(np.median(np.linalg.norm(got["track"] - ref["track"], axis=-1)))
    return checks


def feature_checks(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """DINOv3 outputs: cosine similarity of every token (CLS and patches)."""

    def token_cosines(a, b):
        a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
        return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)

    cos = np.concatenate([token_cosines(got[n], ref[n]) for n in ("cls", "patch_tokens")])
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}


def run_gate(
    candidate: Runner,
    cases: list[dict[str, np.ndarray]],
    references: list[dict[str, np.ndarray]],
    family: str,
    precision: str,
    height: int,
    width: int,
) -> ParityReport:
    """Compare ``candidate`` on every case of inputs with the PyTorch ``references`` computed for them
    (computed beforehand, so the PyTorch model can be freed first); see the module docstring."""
    limits = dict(FP32_LIMITS) if precision == "fp32" else dict(DECODED_LIMITS[precision])
    results = []
    for feeds, ref in zip(cases, references, strict=True):
        got = candidate(feeds)
        missing = sorted(set(ref) - set(got))
        if missing:
            raise ValueError(f"the artifact does not produce {missing}")
        outputs = [output_error(name, got[name], ref[name]) for name in ref]
        case = Case(frames=int(feeds["images"].shape[0]), outputs=outputs, checks={})
        if precision == "fp32":
            for o in outputs:
                kind = "confidence" if o.name in CONFIDENCE_OUTPUTS else "value"
                if not o.p99_normalised <= limits[kind]:
                    case.failures.append(f"{o.name}: p99 normalised error {o.p99_normalised:.2e} > {limits[kind]:.0e}")
        else:
            case.checks = decoded_checks(got, ref, height, width) if family == "vggt" else feature_checks(got, ref)
            for metric, value in case.checks.items():
                limit = limits[metric]
                ok = value >= limit if metric in LOWER_BOUNDS else value <= limit
                if not ok:
                    case.failures.append(f"{metric} = {value:.4g}, limit {limit:.4g}")
        results.append(case)
    return ParityReport(precision, family, results, limits)


def gate_frame_counts(frames_range: tuple[int, int, int]) -> list[int]:
    """Frame counts the gate runs: min, opt, max, and 1/2/5 when inside the range."""
    low, opt, high = frames_range
    return sorted({low, opt, high} | {n for n in (1, 2, 5) if low <= n <= high})


def gate_images(height: int, width: int, frames: int) -> np.ndarray:
    """(frames, 3, H, W) float32 in [0, 1]: frames of the bundled sample video, resized (fixed inputs).

    Decoded with OpenCV's FFmpeg reader (the same pixels as PyAV on this file, max |d| = 0), so the
    gate needs no PyAV.
    """
    import cv2

    from edgescene.assets import sample_dir

    capture = cv2.VideoCapture(str(sample_dir() / "sample.mp4"))
    decoded = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    if not decoded:
        raise RuntimeError(
            f"OpenCV could not decode {sample_dir() / 'sample.mp4'}: its build lacks FFmpeg; "
            "install opencv-python-headless from PyPI"
        )
    picks = [decoded[(i * 7) % len(decoded)] for i in range(frames)]  # distinct, spread out, repeatable
    resized = [
        cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA if f.shape[1] > width else cv2.INTER_CUBIC)
        for f in picks
    ]
    return np.stack(resized).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
