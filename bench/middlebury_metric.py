"""Depth in metres on a real photo pair: Middlebury 2014 Motorcycle with its calibration.

The pair (:mod:`edgescene.train.data.middlebury`, shipped by scikit-image) is reconstructed by the
runtime as a user with a calibrated stereo rig would:

    edgescene reconstruct images/ --intrinsics calibration.json --scale-from baseline:0.193001

(per-image intrinsics: f = 994.978 px, the right principal point shifted by doffs; the 193.001 mm
baseline between the two cameras). Each output depth map (metres, model pixels) is taken back to
the photo's pixels (:func:`edgescene.core.preprocess.depth_to_source`, the depth files' own
provenance) and scored against the structured-light ground truth where it has one:

- ``metric_abs_rel``: mean |d - d*| / d*, the depth used as it comes out (no median scaling);
- ``median_scaled_abs_rel``: the same after scaling each map by median(d*) / median(d) (what
  ``edgescene eval`` reports: the shape of the depth alone);
- ``constant_abs_rel``: a constant depth at each map's true median (the baseline to beat);
- ``depth_scale``: median(d / d*), how far the metric depth's scale is off (1: right).

    python -m edgescene.bench.middlebury_metric [--model MODEL] [--out OUT.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from edgescene.core.preprocess import Resize, depth_to_source

BASELINE_SPEC = "baseline:0.193001"


def _abs_rel(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - truth) / truth))


def measure(model: str | Path, work: Path) -> dict:
    """Reconstruct the pair into ``work`` and score its metric depth (see the module docstring)."""
    from edgescene.runtime.reconstruct import ReconstructConfig, reconstruct_to_folder
    from edgescene.train.data.middlebury import BASELINE_M, cameras, write_middlebury_motorcycle

    data = write_middlebury_motorcycle(work / "motorcycle")
    k_left, _, k_right, _ = cameras()
    calibration = work / "calibration.json"
    calibration.write_text(json.dumps({"left.png": {"intrinsics": k_left}, "right.png": {"intrinsics": k_right}}))
    out = work / "reconstruction"
    config = ReconstructConfig(intrinsics=str(calibration), scale_from=BASELINE_SPEC, keyframe_threshold=0.0)
    report = reconstruct_to_folder(data / "images", model, out, config, overwrite=True, progress=False)
    if report["keyframes"] != 2:
        raise RuntimeError(f"expected both views as keyframes, got {report['keyframes']}")
    rows = {}
    for k, name in enumerate(("left", "right")):
        npz = np.load(out / "depth" / f"{k:05d}.npz")
        pred = depth_to_source(npz["depth"], Resize.from_provenance(npz))
        truth = np.load(data / "depth" / f"{name}.npy")
        valid = (truth > 0) & np.isfinite(pred) & (pred > 0)
        p, t = pred[valid].astype(np.float64), truth[valid].astype(np.float64)
        rows[name] = {
            "pixels": int(valid.sum()),
            "metric_abs_rel": _abs_rel(p, t),
            "median_scaled_abs_rel": _abs_rel(p * np.median(t) / np.median(p), t),
            "constant_abs_rel": _abs_rel(np.full_like(t, np.median(t)), t),
            "depth_scale": float(np.median(p / t)),
        }
    mean = {
        key: float(np.mean([r[key] for r in rows.values()])) for key in next(iter(rows.values())) if key != "pixels"
    }
    return {
        "command": f"edgescene reconstruct images/ --intrinsics calibration.json --scale-from {BASELINE_SPEC}",
        "baseline_m": BASELINE_M,
        "fit": {k: report["metric"][k] for k in ("mode", "scale", "positions_used")},
        "focal_ratio_median": report["intrinsics"]["focal_ratio_median"],
        "views": rows,
        "mean": mean,
    }


def main(argv: list[str] | None = None) -> int:
    from edgescene.assets import default_model_dir

    parser = argparse.ArgumentParser(
        prog="python -m edgescene.bench.middlebury_metric", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", default=None, help="a VGGT model (default: the bundled demo model)")
    parser.add_argument("--out", type=Path, help="write the figures here (JSON)")
    args = parser.parse_args(argv)
    model = args.model or str(default_model_dir())
    with tempfile.TemporaryDirectory(prefix="edgescene-middlebury-") as tmp:
        figures = measure(model, Path(tmp))
    figures["model"] = Path(model).name
    m = figures["mean"]
    print(
        f"Middlebury Motorcycle, {figures['model']}, {figures['command']}: metric depth AbsRel "
        f"{m['metric_abs_rel']:.3f} (depth scale {m['depth_scale']:.3f}); "
        f"median-scaled {m['median_scaled_abs_rel']:.3f}; "
        f"constant depth {m['constant_abs_rel']:.3f}"
    )
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
