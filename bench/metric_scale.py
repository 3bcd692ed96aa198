"""How well ``--scale-from gps:`` puts a reconstruction in metres: synthetic walks with a noisy,
sparse GPS track, scored against the exact ground truth.

Each case renders the room walk of :mod:`edgescene.bench.synthetic_scene` (``frames`` views at
``hw``, 10 frames a second, metres), makes a GPS-like track from the true camera centres (world
axes turned into East-North-Up: east = x, north = z, up = -y, placed at a fixed latitude and
longitude), one fix every ``gps_every`` frames with Gaussian noise of ``noise`` x the trajectory's
extent per axis, written as a CSV in plain seconds, and reconstructs the video with the runtime's
defaults and ``scale_from="gps:track.csv"``. Two models:

- ``oracle``: :class:`~edgescene.bench.oracle.OracleSession` (the ground truth with VGGT-like noise
  and a random scale per window): isolates the fit from the model;
- the bundled demo model (or ``--model``).

Figures per case (the truth in the reconstruction's own ENU frame, about its ``enu_origin``):

- ``scale_error``: |s - 1| for the least-squares similarity from the output camera centres onto the
  true ones (0: the cameras are in metres);
- ``depth_scale_error``: |median(output depth / true depth) - 1| over every keyframe's pixels: the
  depth maps' metres;
- ``position_rel``: RMSE of the output camera centres against the truth, no alignment at all, over
  the extent: where the map landed;
- ``ate_rel``: the same after a Sim(3) alignment (the trajectory's shape, for reference);
- ``metric_abs_rel``: depth AbsRel in metres, no median scaling.

    python -m edgescene.bench.metric_scale --out docs/bench/metric   # seeds 100-119
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgescene.bench.metrics import ate, camera_centres
from edgescene.bench.synthetic_scene import make_video
from edgescene.bench.tables import run_meta, write_rows
from edgescene.core.geometry import umeyama_sim3

ORIGIN = (46.5197, 6.6323, 372.0)  # latitude, longitude, altitude of the synthetic room
WORLD_TO_ENU = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # east = x, north = z, up = -y
FPS = 10.0


@dataclass(frozen=True)
class MetricRow:
    model: str
    seed: int
    keyframes: int
    fixes: int
    inliers: int
    mode: str
    scale_error: float
    depth_scale_error: float
    position_rel: float
    ate_rel: float
    metric_abs_rel: float


def gps_csv(
    path: Path,
    centres_world: np.ndarray,
    every: int,
    noise: float,
    seed: int,
    world_to_enu: np.ndarray = WORLD_TO_ENU,
    stream: int = 11,
) -> np.ndarray:
    """Write the GPS-like track of ``centres_world`` (F, 3) to ``path``; returns the true geodetic (F, 3).
    ``world_to_enu``: the rotation from the scene's axes to East-North-Up; ``stream``: which of the
    seed's random streams draws the noise (one per bench, so their tracks differ)."""
    import pymap3d

    enu = centres_world @ np.asarray(world_to_enu).T
    lat, lon, alt = pymap3d.enu2geodetic(enu[:, 0], enu[:, 1], enu[:, 2], *ORIGIN)
    truth = np.stack([lat, lon, alt], axis=1)
    extent = float(np.max(np.linalg.norm(enu[:, None] - enu[None], axis=-1)))
    rng = np.random.default_rng([seed, stream])
    rows = ["time,lat,lon,alt"]
    for i in range(0, len(enu), every):
        e, n, u = enu[i] + rng.normal(scale=noise * extent, size=3)
        la, lo, al = pymap3d.enu2geodetic(e, n, u, *ORIGIN)
        rows.append(f"{i / FPS:.3f},{float(la):.10f},{float(lo):.10f},{float(al):.4f}")
    path.write_text("\n".join(rows) + "\n")
    return truth


def run_case(
    model, name: str, seed: int, work: Path, frames: int, hw: tuple[int, int], every: int, noise: float
) -> MetricRow:
    """One reconstruction of one walk; ``model``: "oracle" or anything open_session opens."""
    import pymap3d

    from edgescene.bench.oracle import OracleNoise, OracleSession
    from edgescene.runtime.frames import Frame
    from edgescene.runtime.reconstruct import ReconstructConfig, Reconstructor

    video = make_video(frames, hw, seed=seed)
    track = work / f"gps_{seed}.csv"
    truth_geo = gps_csv(track, camera_centres(video.extrinsics), every, noise, seed)
    session = OracleSession(video, OracleNoise(seed=seed)) if model == "oracle" else model
    config = ReconstructConfig(scale_from=f"gps:{track}", keyframe_threshold=0.0)
    stream = [Frame(index=i, timestamp_s=i / FPS, rgb=video.rgb[i], source=f"walk#{i}") for i in range(frames)]
    result = Reconstructor(session, config).run(stream)
    fit = result.report["metric"]
    o = fit["enu_origin"]
    index = [k["index"] for k in result.keyframes]
    g = truth_geo[index]
    truth = np.stack(pymap3d.geodetic2enu(g[:, 0], g[:, 1], g[:, 2], o["lat"], o["lon"], o["alt"]), axis=1)
    centres = camera_centres(result.extrinsics)
    s, _, _ = umeyama_sim3(centres, truth)
    extent = float(np.max(np.linalg.norm(truth[:, None] - truth[None], axis=-1)))
    ratios, rel = [], []
    for k, i in enumerate(index):
        pred, true = result.depth[k], _true_depth(video.depth[i], result.depth[k].shape)
        valid = (true > 0) & np.isfinite(pred) & (pred > 0)
        ratios.append(pred[valid] / true[valid])
        rel.append(np.abs(pred[valid] - true[valid]) / true[valid])
    return MetricRow(
        model=name,
        seed=seed,
        keyframes=len(index),
        fixes=fit["positions_used"],
        inliers=fit["inliers"],
        mode=fit["mode"],
        scale_error=abs(float(s) - 1.0),
        depth_scale_error=abs(float(np.median(np.concatenate(ratios))) - 1.0),
        position_rel=float(np.sqrt(np.mean(np.sum((centres - truth) ** 2, axis=1)))) / extent,
        ate_rel=float(ate(centres, truth)["ate_rel"]),
        metric_abs_rel=float(np.mean(np.concatenate(rel))),
    )


def _true_depth(depth: np.ndarray, hw: tuple[int, ...]) -> np.ndarray:
    """The true depth at the model's size (nearest pixel; the walk's frames are resized, not cropped)."""
    h, w = depth.shape
    rows = np.minimum((np.arange(hw[0]) + 0.5) * h / hw[0], h - 1).astype(int)
    cols = np.minimum((np.arange(hw[1]) + 0.5) * w / hw[1], w - 1).astype(int)
    return depth[np.ix_(rows, cols)]


def summarise(rows: list[MetricRow]) -> dict:
    out: dict = {}
    for name in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == name]
        out[name] = {
            key: {
                "mean": float(np.mean([getattr(r, key) for r in mine])),
                "max": float(np.max([getattr(r, key) for r in mine])),
            }
            for key in ("scale_error", "depth_scale_error", "position_rel", "ate_rel", "metric_abs_rel")
        }
    return out


def markdown(rows: list[MetricRow], meta: dict) -> str:
    lines = [
        f"# Metric scale from GPS ({meta['date']}, {meta['machine']})",
        "",
        f"`{meta['command']}`: {meta['frames']} frames at {meta['hw'][1]}x{meta['hw'][0]}, one GPS fix every "
        f"{meta['every']} frames with noise {100 * meta['noise']:g} % of the extent per axis, seeds {meta['seeds']}.",
        "Mean (worst) over the seeds:",
        "",
        "| model | scale error (cameras) | scale error (depth) | position / extent, no alignment "
        "| ATE / extent after Sim(3) | metric depth AbsRel |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in summarise(rows).items():
        cells = [
            f"{100 * s[k]['mean']:.2f} % ({100 * s[k]['max']:.2f} %)"
            for k in ("scale_error", "depth_scale_error", "position_rel", "ate_rel")
        ]
        cells.append(f"{s['metric_abs_rel']['mean']:.3f} ({s['metric_abs_rel']['max']:.3f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Per seed: `metric_scale.json`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from edgescene.assets import default_model_dir
    from edgescene.runtime.session import open_session

    parser = argparse.ArgumentParser(prog="python -m edgescene.bench.metric_scale", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a VGGT model (default: the bundled demo model)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(100, 120)))
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--gps-every", type=int, default=4, help="one GPS fix every this many frames (default 4)")
    parser.add_argument(
        "--noise", type=float, default=0.02, help="GPS noise per axis, fraction of the extent (default 0.02)"
    )
    parser.add_argument("--oracle-only", action="store_true", help="only the oracle (the fit alone, no model)")
    parser.add_argument("--out", type=Path, required=True, help="folder for metric_scale.json and README.md")
    args = parser.parse_args(argv)
    if args.gps_every < 1 or args.frames < 8 or args.noise < 0:
        parser.error("--gps-every must be >= 1, --frames >= 8 and --noise >= 0")
    model_path = args.model or str(default_model_dir())
    session = None if args.oracle_only else open_session(model_path)
    hw = (args.height, args.width)
    rows: list[MetricRow] = []
    try:
        with tempfile.TemporaryDirectory(prefix="metric_scale_") as tmp:  # the GPS tracks, gone with it
            for seed in args.seeds:
                case = (seed, Path(tmp), args.frames, hw, args.gps_every, args.noise)
                rows.append(run_case("oracle", "oracle (ground truth + noise)", *case))
                if session is not None:
                    rows.append(run_case(session, Path(model_path).name, *case))
    finally:
        if session is not None:
            session.close()
    meta = run_meta(
        "edgescene.bench.metric_scale",
        argv,
        frames=args.frames,
        hw=list(hw),
        every=args.gps_every,
        noise=args.noise,
        seeds=args.seeds,
    )
    write_rows(args.out, "metric_scale.json", "README.md", meta, rows, summarise(rows), markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
