"""Does a model's camera head move as much as the cameras do? Its motion response on a dataset.

A camera head that learnt to stay near the identity still scores some pose AUC on small motions,
while its trajectories stay tiny (the bundled demo model's 1.6-1.9 degrees for true rotations of 4 to
106 degrees within a window). This measures that directly, per window of ``frames`` frames taken
every ``stride`` frames of each sequence (larger strides: larger motions):

- ``rotation_gain``: the least-squares slope through 0 of the predicted rotation angle of every
  frame relative to the window's first, against the true angle (1: moves as much; 0: frozen);
- ``rotation_error_deg``: the mean geodesic error of those relative rotations;
- ``path_ratio``: (predicted camera path length / predicted median depth of the first frame) over
  (true path length / true median depth): the scale-free size of the trajectory (1: right size);
- ``auc_30``: pose AUC@30 of the window (:func:`edgescene.bench.metrics.pose_auc`).

Rows are per window; :func:`summarise` gives the medians (path ratio) and pooled slopes per trajectory
kind (the ``trajectory`` of a synthetic manifest entry's metadata, else ``"unknown"``) and stride.
Inputs are brought to the model's size as the runtime does (:func:`edgescene.bench.accuracy.load_sequences`).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgescene.bench.accuracy import load_sequences
from edgescene.bench.metrics import camera_centres, pose_auc, rotation_error_deg
from edgescene.core.geometry import decode_pose, relative_pose_to_first
from edgescene.core.manifest import read_manifest

if TYPE_CHECKING:
    from edgescene.runtime.session import Session


@dataclass(frozen=True)
class WindowRow:
    sequence: str
    trajectory: str
    stride: int
    frames: int
    true_angles_deg: list[float]  # frames 1.. relative to frame 0
    pred_angles_deg: list[float]
    rotation_error_deg: float
    true_path_over_depth: float
    pred_path_over_depth: float
    auc_30: float


def _angles(extrinsics: np.ndarray) -> np.ndarray:
    """Rotation angle of every camera relative to the first, (S - 1,) degrees."""
    R = extrinsics[:, :, :3]
    return rotation_error_deg(R[1:], np.broadcast_to(R[0], R[1:].shape))


def _path_over_depth(extrinsics: np.ndarray, depth0: np.ndarray) -> float:
    centres = camera_centres(extrinsics)
    path = float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum())
    valid = depth0[np.isfinite(depth0) & (depth0 > 0)]
    return path / float(np.median(valid)) if valid.size else float("nan")


def _trajectories(dataset_dir: Path) -> dict[str, str]:
    kinds = {}
    for name, entries in read_manifest(dataset_dir).sequences().items():
        meta = entries[0].metadata or {}
        kinds[name] = str(meta.get("trajectory", "unknown"))
    return kinds


def motion_response(
    model: str | Path | Session,
    dataset_dir: str | Path,
    frames: int = 8,
    strides: Sequence[int] = (1, 2),
    max_sequences: int | None = None,
    device: str = "cpu",
) -> list[WindowRow]:
    """One :class:`WindowRow` per sequence and stride (windows that do not fit a sequence are left out).
    ``model``: anything :func:`~edgescene.runtime.session.open_session` opens, or an open session
    (left open)."""
    from edgescene.runtime.session import open_session

    if frames < 2:
        raise ValueError(f"frames must be >= 2 (motion is relative to the first frame), got {frames}")
    if not strides or any(int(s) < 1 for s in strides):
        raise ValueError(f"strides must be positive whole numbers, got {list(strides)}")
    dataset_dir = Path(dataset_dir)
    kinds = _trajectories(dataset_dir)
    owned = isinstance(model, (str, PathLike))
    session = open_session(model, device) if owned else model
    rows: list[WindowRow] = []
    try:
        size = (int(session.artifact.input_size["height"]), int(session.artifact.input_size["width"]))
        for seq in load_sequences(dataset_dir, size, None, max_sequences):
            assert seq.images is not None  # load_images=True
            for stride in strides:
                picks = list(range(0, len(seq.indices), int(stride)))[:frames]
                if len(picks) < frames:
                    continue
                out = session({"images": seq.images[picks]})
                depth = np.asarray(out["depth"], np.float32)
                if depth.ndim == 4 and depth.shape[-1] == 1:
                    depth = depth[..., 0]
                pred, _ = decode_pose(np.asarray(out["pose_enc"], np.float64), depth.shape[-2:])
                truth = relative_pose_to_first(seq.extrinsics[picks])
                true_angles, pred_angles = _angles(truth), _angles(pred)
                errors = rotation_error_deg(
                    pred[1:, :, :3] @ np.swapaxes(pred[:1, :, :3], -1, -2),
                    truth[1:, :, :3] @ np.swapaxes(truth[:1, :, :3], -1, -2),
                )
                rows.append(
                    WindowRow(
                        sequence=seq.name,
                        trajectory=kinds.get(seq.name, "unknown"),
                        stride=int(stride),
                        frames=frames,
                        true_angles_deg=np.round(true_angles, 4).tolist(),
                        pred_angles_deg=np.round(pred_angles, 4).tolist(),
                        rotation_error_deg=float(errors.mean()),
                        true_path_over_depth=_path_over_depth(truth, seq.depth[picks[0]]),
                        pred_path_over_depth=_path_over_depth(pred, depth[0]),
                        auc_30=pose_auc(pred, truth, thresholds=(30,))["auc_30"],
                    )
                )
    finally:
        if owned:
            session.close()
    if not rows:
        raise ValueError(f"{dataset_dir}: no sequence holds a window of {frames} frames at strides {list(strides)}")
    return rows


def _gain(rows: list[WindowRow]) -> float:
    true = np.concatenate([r.true_angles_deg for r in rows])
    pred = np.concatenate([r.pred_angles_deg for r in rows])
    return float(true @ pred / (true @ true)) if float(true @ true) > 0 else float("nan")


def summarise(rows: list[WindowRow]) -> list[dict]:
    """Per (trajectory, stride), and over all trajectories per stride: windows, the true and predicted
    mean rotation, the rotation gain, mean rotation error, median path ratio and mean AUC@30."""
    groups: dict[tuple[str, int], list[WindowRow]] = defaultdict(list)
    for r in rows:
        groups[(r.trajectory, r.stride)].append(r)
        groups[("all", r.stride)].append(r)
    out = []
    for (kind, stride), group in sorted(groups.items(), key=lambda kv: (kv[0][0] == "all", kv[0])):
        ratios = [r.pred_path_over_depth / r.true_path_over_depth for r in group if r.true_path_over_depth > 0]
        out.append(
            {
                "trajectory": kind,
                "stride": stride,
                "windows": len(group),
                "true_rotation_deg": round(float(np.mean(np.concatenate([r.true_angles_deg for r in group]))), 2),
                "pred_rotation_deg": round(float(np.mean(np.concatenate([r.pred_angles_deg for r in group]))), 2),
                "rotation_gain": round(_gain(group), 3),
                "rotation_error_deg": round(float(np.mean([r.rotation_error_deg for r in group])), 2),
                "path_ratio": round(float(np.median(ratios)), 3) if ratios else None,
                "auc_30": round(float(np.mean([r.auc_30 for r in group])), 3),
            }
        )
    return out


COLUMNS = {
    "trajectory": "trajectory",
    "stride": "stride",
    "windows": "windows",
    "true_rotation_deg": "true rot. (deg)",
    "pred_rotation_deg": "predicted rot. (deg)",
    "rotation_gain": "rotation gain",
    "rotation_error_deg": "rot. error (deg)",
    "path_ratio": "path ratio",
    "auc_30": "AUC@30",
}


def format_summary(summary: list[dict]) -> str:
    """The summary as a Markdown table."""
    lines = ["| " + " | ".join(COLUMNS.values()) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(s[k]) for k in COLUMNS) + " |" for s in summary]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="artifact folder, checkpoint or preset")
    parser.add_argument("--dataset", required=True, help="a manifest folder with depth and cameras (edgescene synth)")
    parser.add_argument("--frames", type=int, default=8, help="frames per window")
    parser.add_argument("--strides", type=int, nargs="+", default=[1, 2], help="take every Nth frame")
    parser.add_argument("--max-sequences", type=int, help="at most this many sequences")
    parser.add_argument("--json", help="write the rows and the summary here")
    args = parser.parse_args(argv)
    rows = motion_response(args.model, args.dataset, args.frames, args.strides, args.max_sequences)
    summary = summarise(rows)
    print(format_summary(summary))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"model": str(args.model), "summary": summary, "rows": [asdict(r) for r in rows]}, indent=1)
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
