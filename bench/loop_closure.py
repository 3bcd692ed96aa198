"""Loop closure on synthetic loops: ATE with and without closure, per model, in one table.

    python -m edgescene.bench.loop_closure --out docs/bench/loop_closure

Renders the two loop trajectories of ``edgescene synth`` (``loop_orbit``: 1.25 turns around the
scene; ``figure_eight``: crosses its own path) and reconstructs each twice, without and with loop
closure (revisits by image retrieval and ORB verification, :mod:`edgescene.runtime.loops`; the
Sim(3) pose graph by GTSAM, :func:`edgescene.mapping.pose_graph.solve`). ATE is the RMSE of the
keyframes' camera centres after a Sim(3) alignment to the ground truth, divided by the ground
truth's extent (``ate_rel``; :func:`edgescene.bench.metrics.ate`).

Predictors:

- ``drifting``: :class:`DriftingGroundTruth`, each window predicted from the ground truth (depth,
  cameras, intrinsics), normalised as VGGT normalises, with a drift per frame inside the window
  (``--drift-deg`` of rotation about the first camera's vertical axis and ``--drift-scale`` of
  scale): the error a real model makes, chained window after window as the stream chains VGGT's
  windows. It tells what closure recovers when windows are locally good.
- a model (``--model``, default the bundled ``vggt_small_synthetic``): the real runtime
  (:func:`edgescene.runtime.reconstruct.reconstruct_to_folder`).

Writes ``loop_closure.json``, ``loop_closure.md`` and ``trajectories.png`` (top views, aligned).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgescene.bench.metrics import ate
from edgescene.bench.oracle import StandInSession
from edgescene.core.geometry import encode_pose, inverse_se3, relative_pose_to_first, umeyama_sim3
from edgescene.core.sim3 import Sim3, move_camera
from edgescene.runtime.reconstruct import ReconstructConfig, Reconstructor, run
from edgescene.runtime.stream import PoseGraphSolver, WindowPrediction
from edgescene.train.data.synthetic import render_sequence
from edgescene.train.data.synthetic.dataset import SceneSequence

LOOPS = ("loop_orbit", "figure_eight")


def _yaw(degrees: float) -> np.ndarray:
    """Rotation about the camera's y axis (OpenCV: down, i.e. vertical for a level camera)."""
    a = np.radians(degrees)
    return np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])


class DriftingGroundTruth:
    """A Predictor that answers from the ground truth with a known drift inside every window.

    Frame k of a window (k = 0 first) is predicted in a window frame moved by
    ``D_k = Sim3((1 + drift_scale)^k, yaw(k * drift_deg), 0)``: its camera and depth are those of
    the true scene seen through ``D_k``, so each frame is self-consistent but frames drift apart
    within the window, and the stream's overlap alignment carries that drift from window to window
    (``(window - overlap) * drift_deg`` degrees per window). With zero drift it is exact. Scale is
    normalised per window by the first frame's mean depth, as VGGT normalises. Frames are found by
    their pixels (a hash), so the stream's windows and overlaps are free to be what they are.
    """

    def __init__(self, seq: SceneSequence, drift_deg: float = 0.3, drift_scale: float = 0.005) -> None:
        self.seq = seq
        self.drift_deg = float(drift_deg)
        self.drift_scale = float(drift_scale)
        self.index = {self._key(self.image(i)): i for i in range(len(seq.frames))}
        self.calls: list[list[int]] = []

    def image(self, i: int) -> np.ndarray:
        """(3, H, W) float32 in [0, 1]: frame i as the stream is given it."""
        return (self.seq.frames[i].transpose(2, 0, 1) / 255.0).astype(np.float32)

    @staticmethod
    def _key(image: np.ndarray) -> str:
        return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()

    def __call__(self, images: np.ndarray) -> WindowPrediction:
        ids = [self.index[self._key(img)] for img in images]
        self.calls.append(ids)
        extrinsics = relative_pose_to_first(self.seq.extrinsics[ids]).astype(np.float64)
        depth = self.seq.depth[ids].astype(np.float64)
        norm = float(depth[0][depth[0] > 0].mean())
        extrinsics[:, :, 3] /= norm
        depth /= norm
        for k in range(len(ids)):
            drift = Sim3((1.0 + self.drift_scale) ** k, _yaw(k * self.drift_deg), np.zeros(3))
            extrinsics[k] = move_camera(extrinsics[k], drift)
            depth[k] *= drift.s
        conf = np.where(depth > 0, 2.0, 0.0).astype(np.float32)
        intrinsics = np.repeat(self.seq.intrinsics[None], len(ids), axis=0)
        return WindowPrediction(extrinsics, intrinsics, depth.astype(np.float32), conf)


@dataclass
class LoopRun:
    """One reconstruction of one sequence."""

    trajectory: str
    predictor: str
    loop_closure: bool
    keyframes: int
    windows: int
    ate_rel: float
    ate_rmse: float
    loops_found: int
    seconds: float
    centres: np.ndarray  # (K, 3) predicted camera centres, map frame
    truth: np.ndarray  # (K, 3) ground-truth centres
    report: dict

    def row(self) -> dict:
        return {
            "trajectory": self.trajectory,
            "predictor": self.predictor,
            "loop_closure": self.loop_closure,
            "keyframes": self.keyframes,
            "windows": self.windows,
            "ate_rel": round(self.ate_rel, 5),
            "ate_rmse": round(self.ate_rmse, 5),
            "loops_found": self.loops_found,
            "seconds": round(self.seconds, 3),
        }


class DriftingSession(StandInSession):
    """:class:`DriftingGroundTruth` behind the runtime's session interface, so the drifting study runs
    through :func:`edgescene.runtime.reconstruct.run` like any model: ``{"images"}`` in, VGGT's
    ``pose_enc`` (float64, no rounding added), ``depth`` and ``depth_conf`` out. It serves exactly
    the sequence's frame size (any multiple of 2 at that long side), so preprocessing leaves the
    frames as they are and the predictor recognises their pixels."""

    def __init__(self, predictor: DriftingGroundTruth) -> None:
        h, w = predictor.seq.frames[0].shape[:2]
        outputs = [("pose_enc", "float64", [9]), ("depth", "float32", [h, w]), ("depth_conf", "float32", [h, w])]
        super().__init__((h, w), "drifting-ground-truth", outputs, max_frames=64, any_size_multiple=2)
        self.predictor = predictor

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pred = self.predictor(feeds["images"])
        return {
            "pose_enc": encode_pose(pred.extrinsics, pred.intrinsics, self.hw),
            "depth": pred.depth,
            "depth_conf": pred.depth_conf,
        }


def run_drifting(
    seq: SceneSequence,
    solver: PoseGraphSolver | None,
    drift_deg: float = 0.3,
    drift_scale: float = 0.005,
    window: int = 8,
    overlap: int = 2,
) -> LoopRun:
    """Reconstruct ``seq`` with :class:`DriftingGroundTruth` as the model, through the runtime's one
    pipeline (:func:`~edgescene.runtime.reconstruct.run`, every frame a keyframe, every pixel fused);
    close loops when ``solver`` is given."""
    predictor = DriftingGroundTruth(seq, drift_deg, drift_scale)
    config = ReconstructConfig(
        window=window,
        overlap=overlap,
        conf_percentile=0,
        keyframe_threshold=0.0,
        max_keyframe_gap=1,  # every frame a keyframe
        pipeline=False,
        loop_closure=solver is not None,
    )
    start = time.perf_counter()
    stream = run(Reconstructor(DriftingSession(predictor), config), list(seq.frames), solver=solver).stream
    report = stream.loop_closure or {}
    seconds = time.perf_counter() - start
    centres = stream.camera_centers()
    truth = inverse_se3(seq.extrinsics)[:, :, 3]
    windows = len(stream.window_nodes)
    return _result(
        seq.trajectory, "drifting ground truth", solver is not None, centres, truth, windows, report, seconds
    )


def _result(trajectory, predictor, closed, centres, truth, windows: int, report, seconds) -> LoopRun:
    error = ate(centres, truth)
    return LoopRun(
        trajectory=trajectory,
        predictor=predictor,
        loop_closure=closed,
        keyframes=len(centres),
        windows=windows,
        ate_rel=error["ate_rel"],
        ate_rmse=error["ate_rmse"],
        loops_found=len(report.get("loops", [])),
        seconds=seconds,
        centres=centres,
        truth=truth,
        report=report,
    )


def run_model(seq: SceneSequence, model: str | Path, solver: PoseGraphSolver | None, work: Path) -> LoopRun:
    """Reconstruct ``seq``'s frames (written as PNGs) with the real runtime and ``model``."""
    from PIL import Image

    from edgescene.runtime.reconstruct import reconstruct_to_folder

    frames_dir = work / f"{seq.trajectory}_frames"
    if not frames_dir.exists():
        frames_dir.mkdir(parents=True)
        for i, rgb in enumerate(seq.frames):
            Image.fromarray(rgb).save(frames_dir / f"{i:04d}.png")
    out = work / f"{seq.trajectory}_{'closed' if solver else 'open'}"
    start = time.perf_counter()
    report = reconstruct_to_folder(
        frames_dir,
        model,
        out,
        ReconstructConfig(loop_closure=solver is not None),
        overwrite=True,
        progress=False,
        solver=solver,
    )
    seconds = time.perf_counter() - start
    cameras = json.loads((out / "cameras.json").read_text())
    index = [f["index"] for f in cameras["frames"]]
    centres = inverse_se3(np.array([f["extrinsics"] for f in cameras["frames"]]))[:, :, 3]
    truth = inverse_se3(seq.extrinsics[index])[:, :, 3]
    closed = solver is not None
    lc = report.get("loop_closure", {})
    return _result(seq.trajectory, Path(model).name, closed, centres, truth, int(report["windows"]), lc, seconds)


def loop_sequences(frames: int = 120, width: int = 256, height: int = 192, seed: int = 7) -> list[SceneSequence]:
    """The two synthetic loops (the scenes of ``edgescene synth --trajectories loop_orbit,figure_eight
    --seed 7``)."""
    return [render_sequence(seed * 100003 + i, name, frames, width, height) for i, name in enumerate(LOOPS)]


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"# Loop closure ({meta['date']}, {meta['machine']})",
        "",
        f"{meta['frames']} frames per loop at {meta['width']}x{meta['height']}; drifting ground truth: "
        f"{meta['drift_deg']} deg and {meta['drift_scale'] * 100:g} % scale of drift per frame inside a window. "
        "ATE/extent after Sim(3) alignment to the ground truth (lower is better).",
        "",
        "| loop | predictor | keyframes | windows | loops found | ATE/extent open | ATE/extent closed "
        "| closed / open |",
        "|---|---|---|---|---|---|---|---|",
    ]
    pairs: dict[tuple[str, str], dict[bool, dict]] = {}
    for r in rows:
        pairs.setdefault((r["trajectory"], r["predictor"]), {})[r["loop_closure"]] = r
    for (trajectory, predictor), pair in pairs.items():
        if False in pair and True in pair:
            o, c = pair[False], pair[True]
            ratio = c["ate_rel"] / o["ate_rel"] if o["ate_rel"] > 0 else float("nan")
            lines.append(
                f"| {trajectory} | {predictor} | {c['keyframes']} | {c['windows']} | {c['loops_found']} | "
                f"{o['ate_rel']:.4f} | {c['ate_rel']:.4f} | {ratio:.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot(runs: list[LoopRun], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r.trajectory, r.predictor) for r in runs})
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 4.5), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for r in (r for r in runs if (r.trajectory, r.predictor) == key):
            s, R, t = umeyama_sim3(r.centres, r.truth)
            aligned = s * r.centres @ R.T + t
            if not r.loop_closure:
                ax.plot(r.truth[:, 0], r.truth[:, 2], "k-", lw=1, label="ground truth")
            style = "-" if r.loop_closure else "--"
            label = f"{'closed' if r.loop_closure else 'open'} (ATE/ext {r.ate_rel:.3f})"
            ax.plot(aligned[:, 0], aligned[:, 2], style, lw=1.2, label=label)
        ax.set_title(f"{key[0]}\n{key[1]}", fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(fontsize=7)
    fig.suptitle("camera centres, top view (x, z), aligned to the ground truth", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for loop_closure.json / .md / trajectories.png")
    parser.add_argument("--frames", type=int, default=120, help="frames per loop (default: 120)")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--drift-deg", type=float, default=0.3, help="drifting ground truth: degrees per frame")
    parser.add_argument("--drift-scale", type=float, default=0.005, help="drifting ground truth: scale per frame")
    parser.add_argument("--model", default=None, help="a VGGT artifact or checkpoint (default: the bundled model)")
    parser.add_argument("--no-model", action="store_true", help="only the drifting ground truth")
    args = parser.parse_args(argv)

    from edgescene.assets import default_model_dir
    from edgescene.mapping.pose_graph import solve

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sequences = loop_sequences(args.frames, args.width, args.height)
    runs: list[LoopRun] = []
    for seq in sequences:
        for solver in (None, solve):
            runs.append(run_drifting(seq, solver, args.drift_deg, args.drift_scale))
            print(runs[-1].row())
    if not args.no_model:
        model = args.model or default_model_dir()
        with tempfile.TemporaryDirectory() as tmp:
            for seq in sequences:
                for solver in (None, solve):
                    runs.append(run_model(seq, model, solver, Path(tmp)))
                    print(runs[-1].row())
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "frames": args.frames,
        "width": args.width,
        "height": args.height,
        "drift_deg": args.drift_deg,
        "drift_scale": args.drift_scale,
    }
    rows = [r.row() for r in runs]
    (out / "loop_closure.json").write_text(
        json.dumps({"meta": meta, "runs": rows, "loop_reports": [r.report for r in runs]}, indent=1) + "\n"
    )
    (out / "loop_closure.md").write_text(markdown(rows, meta))
    plot(runs, out / "trajectories.png")
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
