"""Where a streamed trajectory's error comes from: the model inside each window, or the chaining.

The stream (:mod:`edgescene.runtime.stream`) runs the model on overlapping windows of keyframes and
chains them by a Sim(3) fitted on the overlap's points. A chained trajectory can be wrong because
each window is (the model) or because the windows are put together badly (the chaining). This
reconstructs a sequence with the real runtime, keeps every window's raw prediction, and reports per
window:

- ``local_ate_rel``: ATE of the window's own predicted camera centres after their own Sim(3) fit
  to the truth, over the window's true extent: the model's error with chaining taken out;
- ``camera_scale``: that fit's scale (true units per window unit, from the cameras);
- ``depth_scale``: median true depth over median predicted depth of the window's frames (true units
  per window unit, from the depth maps; the true depth at the source size, the prediction at the
  model's: medians of whole frames, which the resize barely moves);
- ``steps_over_depth``: ``depth_scale / camera_scale``, how long the window's camera steps are
  against its own depth (1: they agree; 2: the steps are twice too long). The stream aligns windows
  on points, that is at the depth's scale, so each window's steps enter the map this much too long
  or short: 1 everywhere keeps the trajectory at one scale; a spread means the model's
  translations and depths disagree from window to window, which no chaining of the windows undoes.

and for the whole sequence ``chained_ate_rel`` (ATE / extent of the stream's trajectory after one
Sim(3)) and ``path_ratio`` (its path length after that Sim(3) over the true path length).

Sequences: the bundled sample video (``sample``, its ``sample_gt.npz``) and held-out synthetic
sequences rendered here (:func:`edgescene.train.data.synthetic.dataset.render_sequence`, orbit /
walk / handheld in turn, seeds ``seed``, ``seed + 1``, ...), at the stream's defaults.

    python -m edgescene.bench.window_consistency --model edgescene/assets/models/vggt_small_synthetic \
        --synthetic 9 --seed 9100 --out window_consistency.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgescene.bench.metrics import ate, camera_centres
from edgescene.core.geometry import decode_pose, umeyama_sim3

if TYPE_CHECKING:
    from edgescene.runtime.session import Session


class RecordingSession:
    """A session that keeps every call's ``pose_enc`` (and the depth) while answering as ``inner`` does."""

    def __init__(self, inner: Session) -> None:
        self.inner = inner
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []  # (extrinsics (S, 3, 4), depth (S, H, W))

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.inner(feeds)
        depth = np.asarray(out["depth"], np.float32)
        if depth.ndim == 4 and depth.shape[-1] == 1:
            depth = depth[..., 0]
        extrinsics, _ = decode_pose(np.asarray(out["pose_enc"], np.float64), depth.shape[-2:])
        self.calls.append((extrinsics, depth))
        return out


@dataclass(frozen=True)
class WindowFigures:
    keyframes: list[int]  # positions in the sequence's keyframes
    local_ate_rel: float
    camera_scale: float
    depth_scale: float
    steps_over_depth: float


@dataclass(frozen=True)
class SequenceFigures:
    name: str
    keyframes: int
    chained_ate_rel: float
    path_ratio: float
    windows: list[WindowFigures]

    def summary(self) -> dict:
        ratios = np.array([w.steps_over_depth for w in self.windows])
        return {
            "name": self.name,
            "keyframes": self.keyframes,
            "windows": len(self.windows),
            "chained_ate_rel": self.chained_ate_rel,
            "path_ratio": self.path_ratio,
            "median_local_ate_rel": float(np.median([w.local_ate_rel for w in self.windows])),
            "steps_over_depth_min": float(ratios.min()),
            "steps_over_depth_max": float(ratios.max()),
        }


def _fit(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(ATE / true extent, scale) of the Sim(3) fit of predicted onto true centres (S, 3)."""
    s, R, t = umeyama_sim3(pred, truth)
    residual = truth - (s * pred @ np.asarray(R).T + np.asarray(t))
    extent = float(np.max(np.linalg.norm(truth[:, None] - truth[None], axis=-1)))
    return float(np.sqrt(np.mean(np.sum(residual**2, axis=1))) / extent), float(s)


def measure_sequence(
    session: Session,
    name: str,
    frames: list,
    truth_extrinsics: np.ndarray,
    truth_depth: np.ndarray,
    window: int = 8,
    overlap: int = 2,
) -> SequenceFigures:
    """Reconstruct ``frames`` (RGB arrays or :class:`~edgescene.runtime.frames.Frame`) with the
    runtime on ``session``; ``truth_extrinsics`` (N, 3, 4) camera-from-world and ``truth_depth``
    (N, H, W) per input frame."""
    from edgescene.runtime.reconstruct import ReconstructConfig, Reconstructor

    recording = RecordingSession(session)
    rec = Reconstructor(recording, ReconstructConfig(window=window, overlap=overlap, pipeline=False))  # type: ignore[arg-type]
    result = rec.run(frames)
    index = [int(k["index"]) for k in result.keyframes]
    truth = camera_centres(np.asarray(truth_extrinsics, np.float64)[index])
    rows, start = [], 0
    for extrinsics, depth in recording.calls:
        if start >= len(index):
            break  # a warm-up call would land here; run() makes none
        picks = list(range(start, start + len(extrinsics)))
        start += len(extrinsics) - overlap
        if len(picks) < 3:
            continue  # 2 cameras always fit a similarity exactly
        local, camera_scale = _fit(camera_centres(extrinsics), truth[picks])
        true_depth = np.asarray(truth_depth)[[index[p] for p in picks]]
        depth_scale = float(np.median(true_depth[true_depth > 0]) / np.median(depth[depth > 0]))
        rows.append(WindowFigures(picks, local, camera_scale, depth_scale, depth_scale / camera_scale))
    centres = camera_centres(result.extrinsics)
    _, scale = _fit(centres, truth)
    path = float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum()) * scale
    true_path = float(np.linalg.norm(np.diff(truth, axis=0), axis=1).sum())
    return SequenceFigures(name, len(index), float(ate(centres, truth)["ate_rel"]), path / true_path, rows)


def sample_sequence() -> tuple[str, list, np.ndarray, np.ndarray]:
    """The bundled sample video with its ground truth."""
    from edgescene.assets import sample_dir
    from edgescene.runtime.frames import open_frames

    gt = np.load(sample_dir() / "sample_gt.npz")
    return "sample", list(open_frames(sample_dir() / "sample.mp4")), gt["extrinsics"], gt["depth"]


def synthetic_sequences(count: int, seed: int, frames: int = 40) -> list[tuple[str, list, np.ndarray, np.ndarray]]:
    """``count`` held-out synthetic sequences at 256 x 192: orbit, walk, handheld in turn, seeds ``seed + i``."""
    from edgescene.train.data.synthetic.dataset import render_sequence
    from edgescene.train.data.synthetic.trajectories import TRAJECTORIES

    out = []
    for i in range(count):
        kind = TRAJECTORIES[i % len(TRAJECTORIES)]
        seq = render_sequence(seed + i, kind, frames, 256, 192)
        out.append((f"{kind}_{seed + i}", list(seq.frames), seq.extrinsics, seq.depth))
    return out


def main(argv: list[str] | None = None) -> int:
    from edgescene.runtime.session import open_session

    parser = argparse.ArgumentParser(
        prog="python -m edgescene.bench.window_consistency", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", required=True, help="a VGGT artifact, checkpoint or preset")
    parser.add_argument("--synthetic", type=int, default=9, help="held-out synthetic sequences (default 9)")
    parser.add_argument("--seed", type=int, default=9100, help="first synthetic seed (default 9100)")
    parser.add_argument("--no-sample", action="store_true", help="leave out the bundled sample video")
    parser.add_argument("--out", type=Path, help="write every window's figures here (JSON)")
    args = parser.parse_args(argv)
    if args.synthetic < 0:
        parser.error(f"--synthetic must be >= 0, got {args.synthetic}")
    sequences = ([] if args.no_sample else [sample_sequence()]) + synthetic_sequences(args.synthetic, args.seed)
    if not sequences:
        parser.error("nothing to measure: --no-sample with --synthetic 0")
    session = open_session(args.model)
    try:
        results = [measure_sequence(session, *seq) for seq in sequences]
    finally:
        session.close()
    print(
        "| sequence | chained ATE / extent | path ratio | median window ATE / extent | camera steps / depth, min-max |"
    )
    print("|---|---|---|---|---|")
    for r in results:
        s = r.summary()
        print(
            f"| {s['name']} | {s['chained_ate_rel']:.3f} | {s['path_ratio']:.2f} | {s['median_local_ate_rel']:.3f} | "
            f"{s['steps_over_depth_min']:.2f}-{s['steps_over_depth_max']:.2f} |"
        )
    if args.out:
        args.out.write_text(json.dumps({"model": str(args.model), "sequences": [asdict(r) for r in results]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
