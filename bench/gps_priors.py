"""GPS in the pose graph against GPS fitted afterwards, on drifting reconstructions.

The stream chains windows, so a model's small errors inside each window accumulate (drift). A GPS
track can be used two ways: fitted to the finished trajectory (one similarity: ``--scale-from gps:``
alone), or, with ``--loop-closure``, as priors in the Sim(3) pose graph, so that every window is
pulled toward its fixes and the drift bends back (:func:`edgescene.runtime.reconstruct.position_priors`).

Each case: a synthetic sequence (the two loops of :mod:`edgescene.bench.loop_closure` and a long
forward walk, 120 frames at 256 x 192, 10 frames a second), predicted by
:class:`~edgescene.bench.loop_closure.DriftingGroundTruth` (the truth with a known drift inside every
window: 0.3 degrees of yaw and 0.5 % of scale per frame), a GPS-like track from the true camera
centres (noise ``noise`` x the extent per axis, one fix every ``every`` frames), and three runs:

- ``fit``: no pose graph, the track fitted afterwards;
- ``loops + fit``: loop closure on revisits only (``--no-position-priors``), then the fit;
- ``loops + GPS priors``: the pose graph with the fixes as priors (and any revisits), then the fit:
  what ``--loop-closure`` does by default with a scale source.

Scored against the truth in the run's own East-North-Up frame: ``position_rel`` (RMSE of the camera
centres, no alignment, over the extent) and ``ate_rel`` (after a Sim(3): the trajectory's shape).

    python -m edgescene.bench.gps_priors --out docs/bench/metric   # seeds 10-14
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgescene.bench.metric_scale import FPS, gps_csv
from edgescene.bench.metrics import ate, camera_centres
from edgescene.bench.tables import run_meta, write_rows

RUNS = ("fit", "loops + fit", "loops + GPS priors")


@dataclass(frozen=True)
class PriorRow:
    trajectory: str
    seed: int
    run: str
    position_rel: float
    ate_rel: float
    loops_found: int
    priors: int


Y_UP_TO_ENU = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # y-up scenes: up = y, north = -z


def run_case(seq, seed: int, work: Path, every: int, noise: float) -> list[PriorRow]:
    import pymap3d

    from edgescene.bench.loop_closure import DriftingGroundTruth, DriftingSession
    from edgescene.mapping.pose_graph import solve
    from edgescene.runtime.frames import Frame
    from edgescene.runtime.reconstruct import ReconstructConfig, Reconstructor

    track = work / f"{seq.trajectory}_{seed}.csv"
    truth_geo = gps_csv(track, camera_centres(seq.extrinsics), every, noise, seed, Y_UP_TO_ENU, stream=17)
    frames = [
        Frame(index=i, timestamp_s=i / FPS, rgb=rgb, source=f"{seq.trajectory}#{i}") for i, rgb in enumerate(seq.frames)
    ]
    rows = []
    for name in RUNS:
        closure = name != "fit"
        config = ReconstructConfig(
            scale_from=f"gps:{track}",
            loop_closure=closure,
            position_priors=name == "loops + GPS priors",
            keyframe_threshold=0.0,
        )
        session = DriftingSession(DriftingGroundTruth(seq))
        result = Reconstructor(session, config).run(frames, solver=solve if closure else None)
        fit = result.report["metric"]
        o = fit["enu_origin"]
        index = [k["index"] for k in result.keyframes]
        g = truth_geo[index]
        truth = np.stack(pymap3d.geodetic2enu(g[:, 0], g[:, 1], g[:, 2], o["lat"], o["lon"], o["alt"]), axis=1)
        centres = camera_centres(result.extrinsics)
        extent = float(np.max(np.linalg.norm(truth[:, None] - truth[None], axis=-1)))
        lc = result.report.get("loop_closure", {})
        rows.append(
            PriorRow(
                trajectory=seq.trajectory,
                seed=seed,
                run=name,
                position_rel=float(np.sqrt(np.mean(np.sum((centres - truth) ** 2, axis=1)))) / extent,
                ate_rel=float(ate(centres, truth)["ate_rel"]),
                loops_found=len(lc.get("loops", [])),
                priors=int(lc.get("position_priors", 0)),
            )
        )
    return rows


def sequences(frames: int = 120):
    from edgescene.bench.loop_closure import loop_sequences
    from edgescene.train.data.synthetic.dataset import render_sequence

    return [*loop_sequences(frames), render_sequence(7 * 100003 + 5, "walk", frames, 256, 192)]


def summarise(rows: list[PriorRow]) -> dict:
    out: dict = {}
    for trajectory in dict.fromkeys(r.trajectory for r in rows):
        for run in RUNS:
            mine = [r for r in rows if r.trajectory == trajectory and r.run == run]
            out.setdefault(trajectory, {})[run] = {
                "position_rel": float(np.mean([r.position_rel for r in mine])),
                "ate_rel": float(np.mean([r.ate_rel for r in mine])),
            }
    return out


def markdown(rows: list[PriorRow], meta: dict) -> str:
    lines = [
        f"# GPS priors in the pose graph ({meta['date']})",
        "",
        f"`{meta['command']}`: the drifting oracle (0.3 deg and 0.5 % per frame inside each window), a GPS "
        f"track with noise {100 * meta['noise']:g} % of the extent per axis, one fix every {meta['every']} frames; "
        f"means over seeds {meta['seeds']}. Position: RMSE of the camera centres against the truth in ENU, no "
        "alignment, over the extent.",
        "",
        "| trajectory | " + " | ".join(f"{r}: position / ATE" for r in RUNS) + " |",
        "|---|" + "---|" * len(RUNS),
    ]
    for trajectory, runs in summarise(rows).items():
        cells = [f"{100 * runs[r]['position_rel']:.2f} % / {100 * runs[r]['ate_rel']:.2f} %" for r in RUNS]
        lines.append(f"| {trajectory} | " + " | ".join(cells) + " |")
    lines += ["", "Per seed: `gps_priors.json`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgescene.bench.gps_priors", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13, 14])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--gps-every", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows: list[PriorRow] = []
    with tempfile.TemporaryDirectory(prefix="gps_priors_") as tmp:  # the GPS tracks, gone with it
        for seq in sequences(args.frames):
            for seed in args.seeds:
                rows += run_case(seq, seed, Path(tmp), args.gps_every, args.noise)
    meta = run_meta(
        "edgescene.bench.gps_priors",
        argv,
        seeds=args.seeds,
        every=args.gps_every,
        noise=args.noise,
        frames=args.frames,
    )
    write_rows(args.out, "gps_priors.json", "gps_priors.md", meta, rows, summarise(rows), markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
