"""Accuracy of a VGGT model (artifact, checkpoint or preset) on a dataset with ground truth.

    edgescene eval --model exports/vggt_onnx --dataset data/synth_val [--baselines]

(the command line over :func:`evaluate` and :func:`evaluate_baselines`). For every sequence of the
dataset's manifest whose frames all have depth and cameras (``edgescene synth`` writes such data),
``frames`` frames evenly spaced over the sequence (first included) reach the model as the runtime
feeds them (upstream VGGT's preprocessing, :func:`edgescene.core.preprocess.choose_model_size` +
``resize_pixels``: the whole frame, padded into a fixed-size artifact, at upstream's own size for
the PyTorch backend; GT depth follows the same mapping with nearest-neighbour sampling, GT
intrinsics through ``Resize.to_model_intrinsics``), the session runs once on them, and
:mod:`edgescene.bench.metrics` scores depth (AbsRel, delta < 1.25 after one median scale per
sequence), pose AUC@30 over all frame pairs (2+ frames), ATE after Sim(3) alignment (3+ frames;
also relative to the extent of the GT trajectory) and the focal length error (mean of
|f_pred - f_gt| / f_gt over fx, fy and frames).

Trivial baselines are scored by the same code on the same frames (:data:`BASELINES`); a model that
does not beat them has learnt nothing about the scene:

- ``constant_depth``: every pixel at the same depth (after median scaling any constant is equal);
- ``identity_poses``: every camera at the identity (no motion);
- ``constant_velocity``: a straight forward walk, camera i at ``(0, 0, i)`` looking down +z.

Sessions come from :func:`edgescene.runtime.session.open_session`, which picks the backend; this
module imports neither torch nor ``edgescene.models``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgescene.bench.metrics import ate, camera_centres, depth_metrics, pose_auc
from edgescene.core.geometry import decode_pose, relative_pose_to_first
from edgescene.core.manifest import Entry, read_manifest, resolve_inside
from edgescene.core.preprocess import choose_model_size, decode_image, prepare_depth, resize_pixels

__all__ = [
    "BASELINES",
    "METRICS",
    "EvalReport",
    "Prediction",
    "SequenceData",
    "SequenceRow",
    "evaluate",
    "evaluate_baselines",
    "frame_indices",
    "load_sequences",
    "score",
]

# column key -> (table header, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "abs_rel": ("AbsRel", False),
    "delta_1_25": ("d<1.25", True),
    "auc_30": ("AUC@30", True),
    "ate_rmse": ("ATE", False),
    "ate_rel": ("ATE/ext", False),
    "focal_rel_err": ("focal err", False),
    "metric_abs_rel": ("AbsRel m", False),
    "metric_ate": ("ATE m", False),
}
FIT_MODE = "crop"


# ---------------------------------------------------------------------------------------- data
@dataclass
class SequenceData:
    """One sequence at model resolution: what the model sees and what it is scored against."""

    name: str
    indices: list[int]  # positions in the sequence (frame order of the manifest)
    images: np.ndarray | None  # (S, 3, H, W) float32 in [0, 1]; None when not loaded
    depth: np.ndarray  # (S, H, W) float32 GT z-depth, 0 = none
    valid: np.ndarray  # (S, H, W) bool: GT depth present and inside the image
    extrinsics: np.ndarray  # (S, 3, 4) GT camera-from-world, frame 0 = world
    intrinsics: np.ndarray  # (S, 3, 3) GT in model pixels


def frame_indices(length: int, frames: int) -> list[int]:
    """``frames`` indices evenly spaced over ``range(length)``, first (and last) included."""
    if length < 1 or frames < 1:
        raise ValueError(f"frame_indices needs length >= 1 and frames >= 1, got {length} and {frames}")
    frames = min(frames, length)
    return [int(i) for i in np.round(np.linspace(0, length - 1, frames)).astype(int)]


def _usable(entries: list[Entry]) -> bool:
    return all(e.depth is not None and e.camera is not None for e in entries)


def load_sequences(
    dataset_dir: str | Path,
    size: tuple[int, int],
    frames: int | None,
    max_sequences: int | None = None,
    load_images: bool = True,
    skipped: list[dict] | None = None,
    any_size: bool = False,
) -> Iterator[SequenceData]:
    """Yield the usable sequences of a manifest at model size ``(H, W)``, sorted by name.

    ``any_size`` (a model that serves every multiple of 14, the PyTorch backend): each sequence at
    upstream's own size for its frames, with long side ``max(size)``; otherwise every frame is
    placed whole into ``size``.

    ``frames`` per sequence (evenly spaced, clipped to the sequence length; None = all frames).
    Sequences lacking depth or cameras on any frame are left out and, when ``skipped`` is a list,
    recorded there as ``{"sequence", "reason"}``. At most ``max_sequences`` are yielded.
    """
    root = Path(dataset_dir).resolve()
    manifest = read_manifest(root)
    height, width = size
    count = 0
    for name, entries in sorted(manifest.sequences().items()):
        if max_sequences is not None and count >= max_sequences:
            return
        if not _usable(entries):
            if skipped is not None:
                skipped.append({"sequence": name, "reason": "frames without depth or camera"})
            continue
        indices = frame_indices(len(entries), frames or len(entries))
        images, depth, valid, extrinsics, intrinsics = [], [], [], [], []
        for i in indices:
            e = entries[i]
            gt = np.load(resolve_inside(root, e.depth), allow_pickle=False)
            if gt.ndim == 3 and gt.shape[-1] == 1:
                gt = gt[..., 0]
            r, _ = choose_model_size(
                gt.shape[0], gt.shape[1], FIT_MODE, None if any_size else [(height, width)], max(height, width)
            )
            if load_images:
                rgb = decode_image(resolve_inside(root, e.path))
                if rgb.shape[:2] != gt.shape:
                    raise ValueError(f"{e.id}: image {rgb.shape[:2]} and depth {gt.shape} sizes differ")
                images.append(resize_pixels(rgb, r))
            d = prepare_depth(gt, r)
            depth.append(d)
            valid.append(r.valid_mask() & (d > 0))
            extrinsics.append(np.asarray(e.camera["extrinsics"], dtype=np.float64))
            intrinsics.append(r.to_model_intrinsics(np.asarray(e.camera["intrinsics"], dtype=np.float64)))
        count += 1
        yield SequenceData(
            name,
            indices,
            np.stack(images) if load_images else None,
            np.stack(depth),
            np.stack(valid),
            relative_pose_to_first(np.stack(extrinsics)),
            np.stack(intrinsics),
        )


# ------------------------------------------------------------------------------------- scoring
@dataclass
class Prediction:
    """What a method predicts for one sequence; None where it predicts nothing."""

    depth: np.ndarray | None = None  # (S, H, W)
    extrinsics: np.ndarray | None = None  # (S, 3, 4) camera-from-world
    intrinsics: np.ndarray | None = None  # (S, 3, 3) model pixels


def score(pred: Prediction, gt: SequenceData, metric: bool = False) -> dict[str, float | None]:
    """Every metric of :data:`METRICS` (plus ``median_scale``) for one sequence; None where the
    prediction lacks the output or the sequence is too short (pose AUC needs 2 frames, ATE 3).

    ``metric``: also ``metric_abs_rel`` and ``metric_ate``, scored as a run with a scale source would
    be (``reconstruct --scale-from poses:``): the predicted camera centres are fitted to the true ones
    (:func:`edgescene.runtime.metric.fit_positions`: a similarity from 3 positions not on a line,
    else the scale alone), the depth is multiplied by that fit's scale and scored with no median
    scaling, and ``metric_ate`` is the RMSE of the fitted centres against the true ones (for a scale-only
    fit, of the distances from the first camera), in the dataset's units."""
    out: dict[str, float | None] = {k: None for k in METRICS}
    out["median_scale"] = None
    if pred.depth is not None:
        out.update(depth_metrics(pred.depth, gt.depth, gt.valid))
    if pred.extrinsics is not None and len(gt.indices) >= 2:
        out.update(pose_auc(pred.extrinsics, gt.extrinsics, thresholds=(30,)))
    if pred.extrinsics is not None and len(gt.indices) >= 3:
        out.update(ate(camera_centres(pred.extrinsics), camera_centres(gt.extrinsics)))
    if pred.intrinsics is not None:
        K, G = np.asarray(pred.intrinsics, np.float64), gt.intrinsics
        err = (np.abs(K[:, 0, 0] - G[:, 0, 0]) / G[:, 0, 0] + np.abs(K[:, 1, 1] - G[:, 1, 1]) / G[:, 1, 1]) / 2
        out["focal_rel_err"] = float(np.mean(err))
    if metric and pred.depth is not None and pred.extrinsics is not None and len(gt.indices) >= 2:
        out.update(_metric_scores(pred, gt))
    return out


def _metric_scores(pred: Prediction, gt: SequenceData) -> dict[str, float]:
    from edgescene.runtime.metric import fit_positions

    assert pred.depth is not None and pred.extrinsics is not None  # checked by score
    fit = fit_positions(camera_centres(pred.extrinsics), camera_centres(gt.extrinsics), "the true cameras", "dataset")
    depth = np.asarray(pred.depth, np.float64) * fit.map_to_metric.s
    truth = np.asarray(gt.depth, np.float64)
    valid = np.isfinite(truth) & (truth > 0) & np.isfinite(depth)
    if gt.valid is not None:
        valid &= np.asarray(gt.valid, bool)
    residuals = np.asarray(fit.residuals_m)
    return {
        "metric_abs_rel": float(np.mean(np.abs(depth[valid] - truth[valid]) / truth[valid])),
        "metric_ate": float(np.sqrt(np.mean(residuals**2))),
    }


def _constant_depth(s: int, h: int, w: int) -> Prediction:
    return Prediction(depth=np.ones((s, h, w), np.float32))


def _identity_poses(s: int, h: int, w: int) -> Prediction:
    return Prediction(extrinsics=np.tile(np.eye(3, 4), (s, 1, 1)))


def _constant_velocity(s: int, h: int, w: int) -> Prediction:
    E = np.tile(np.eye(3, 4), (s, 1, 1))
    E[:, 2, 3] = -np.arange(s, dtype=np.float64)  # centre (0, 0, i): t = -R c
    return Prediction(extrinsics=E)


# name -> (S, H, W) -> Prediction; they never look at the data
BASELINES: dict[str, Callable[[int, int, int], Prediction]] = {
    "constant_depth": _constant_depth,
    "identity_poses": _identity_poses,
    "constant_velocity": _constant_velocity,
}


# -------------------------------------------------------------------------------------- report
@dataclass
class SequenceRow:
    method: str
    sequence: str
    frames: list[int]
    metrics: dict[str, float | None]


@dataclass
class EvalReport:
    """Per-sequence rows of one or more methods on one dataset, and their means."""

    dataset: str
    size: tuple[int, int]  # model input (H, W)
    frames: int | None  # requested frames per sequence (clipped to each sequence); None = all
    rows: list[SequenceRow] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # per method: backend, device, artifact
    any_size: bool = False  # each sequence at upstream's size (PyTorch backend), not placed into ``size``

    def scored_metrics(self) -> list[str]:
        """The metrics this report has: the metric ones only when some sequence was scored in metres."""
        scored = {k for r in self.rows for k, v in r.metrics.items() if v is not None}
        return [k for k in METRICS if not k.startswith("metric_") or k in scored]

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.rows))

    def means(self) -> dict[str, dict[str, float | None]]:
        """method -> metric -> mean over the sequences that have it (None if none)."""
        result = {}
        for method in self.methods:
            rows = [r for r in self.rows if r.method == method]
            means: dict[str, float | None] = {"sequences": float(len(rows))}
            for key in self.scored_metrics():
                values = [r.metrics[key] for r in rows if r.metrics.get(key) is not None]
                means[key] = float(np.mean(values)) if values else None
            result[method] = means
        return result

    def merged(self, other: EvalReport) -> EvalReport:
        """This report with ``other``'s rows appended (same dataset, size and frames)."""
        if (other.dataset, tuple(other.size), other.frames, other.any_size) != (
            self.dataset,
            tuple(self.size),
            self.frames,
            self.any_size,
        ):
            raise ValueError("cannot merge reports of different datasets, sizes or frame counts")
        skipped = self.skipped + [s for s in other.skipped if s not in self.skipped]
        return EvalReport(
            self.dataset,
            self.size,
            self.frames,
            self.rows + other.rows,
            skipped,
            {**self.info, **other.info},
            any_size=self.any_size,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "edgescene.eval",
            "version": 1,
            "dataset": self.dataset,
            "input_size": {"height": self.size[0], "width": self.size[1]},
            "frames": self.frames,
            "fit_mode": FIT_MODE,
            "preprocessing": "upstream VGGT (Pillow bicubic, sizes rounded to 14)",
            "any_size": self.any_size,
            "methods": self.methods,
            "info": self.info,
            "means": self.means(),
            "rows": [asdict(r) for r in self.rows],
            "skipped": self.skipped,
        }

    def format(self) -> str:
        """Plain-text tables: means per method, then every sequence."""
        keys = self.scored_metrics()

        def cell(v) -> str:
            return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

        def table(header: list[str], body: list[list[str]]) -> list[str]:
            widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
            line = lambda cells: "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            return [line(header), line(["-" * w for w in widths]), *(line(r) for r in body)]

        arrows = [METRICS[k][0] + (" ^" if METRICS[k][1] else " v") for k in keys]
        means = self.means()
        lines = [
            f"eval: {self.dataset}, input {self.size[0]}x{self.size[1]} ({FIT_MODE}), "
            f"frames per sequence {self.frames if self.frames is not None else 'all'} "
            "(^ higher is better, v lower is better)",
            "",
        ]
        lines += table(
            ["method", "seqs", *arrows],
            [[m, str(int(v["sequences"])), *(cell(v[k]) for k in keys)] for m, v in means.items()],
        )
        lines += ["", "per sequence:"]
        lines += table(
            ["sequence", "method", "frames", *arrows],
            [
                [r.sequence, r.method, str(len(r.frames)), *(cell(r.metrics.get(k)) for k in keys)]
                for r in sorted(self.rows, key=lambda r: (r.sequence, self.methods.index(r.method)))
            ],
        )
        for s in self.skipped:
            lines.append(f"skipped {s['sequence']}: {s['reason']}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------- evaluation
def _method_name(model, artifact) -> str:
    preset = (artifact.model or {}).get("preset") or Path(str(model)).name
    return f"{preset} ({artifact.format}, {artifact.precision})"


def evaluate(
    model: str | Path,
    dataset_dir: str | Path,
    frames: int | None = None,
    device: str = "cpu",
    max_sequences: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    session_options: dict[str, Any] | None = None,
    fast_attention: bool = False,
    metric: bool = False,
) -> EvalReport:
    """Score ``model`` (artifact folder, checkpoint or preset; see ``open_session``) on a dataset.

    frames: per sequence, default the model's ``artifact.frames["opt"]``; clipped to each sequence's
    length. Must lie within the model's ``frames`` min..max; sequences shorter than the model's min
    are skipped. The session runs once per sequence. ``progress(done, total)`` is called after each.
    ``fast_attention``: see :func:`edgescene.runtime.session.open_session`. ``metric``: also the
    metric scores of :func:`score`, the true cameras acting as the scale source.
    """
    from edgescene.runtime.session import open_session

    if frames is not None and (isinstance(frames, bool) or int(frames) != frames or frames < 1):
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    if max_sequences is not None and max_sequences < 1:
        raise ValueError(f"max_sequences must be >= 1, got {max_sequences}")
    session = open_session(model, device, fast_attention=fast_attention, **(session_options or {}))
    try:
        artifact = session.artifact
        outputs = {t.name for t in session.output_spec()}
        if not {"pose_enc", "depth"} <= outputs:
            raise ValueError(
                f"{model}: outputs {sorted(outputs)} lack pose_enc / depth; accuracy evaluation needs a VGGT model"
            )
        size = (int(artifact.input_size["height"]), int(artifact.input_size["width"]))
        fmin, fopt, fmax = (int(artifact.frames[k]) for k in ("min", "opt", "max"))
        frames = int(frames) if frames is not None else fopt
        if not fmin <= frames <= fmax:
            raise ValueError(f"frames {frames} is outside what {model} accepts ({fmin}..{fmax})")
        name = _method_name(model, artifact)
        report = EvalReport(
            str(dataset_dir),
            size,
            frames,
            info={
                name: {
                    "model": str(model),
                    "backend": session.backend,
                    "device": session.device,
                    "artifact": {
                        "format": artifact.format,
                        "precision": artifact.precision,
                        "model": artifact.model,
                        "frames": artifact.frames,
                    },
                }
            },
        )
        total = _count_usable(dataset_dir, max_sequences)
        report.any_size = artifact.served_sizes() is None
        sequences = load_sequences(
            dataset_dir, size, frames, max_sequences, skipped=report.skipped, any_size=report.any_size
        )
        for done, seq in enumerate(sequences, 1):
            if len(seq.indices) < fmin:
                report.skipped.append(
                    {"sequence": seq.name, "reason": f"{len(seq.indices)} frames, the model needs {fmin}"}
                )
            else:
                out = session({"images": seq.images})
                depth = np.asarray(out["depth"], np.float32)
                if depth.ndim == 4 and depth.shape[-1] == 1:
                    depth = depth[..., 0]
                extrinsics, intrinsics = decode_pose(np.asarray(out["pose_enc"], np.float64), depth.shape[-2:])
                report.rows.append(
                    SequenceRow(
                        name, seq.name, seq.indices, score(Prediction(depth, extrinsics, intrinsics), seq, metric)
                    )
                )
            if progress:
                progress(done, total)
    finally:
        session.close()
    if not report.rows:
        raise ValueError(_nothing_to_score(dataset_dir, report.skipped))
    return report


def _nothing_to_score(dataset_dir: str | Path, skipped: list[dict]) -> str:
    """Why no sequence could be scored, and what to do about it."""
    why = (
        f"{len(skipped)} sequence(s) lack depth or cameras on some frame"
        if skipped
        else "it holds no multi-frame sequence (its entries belong to none, or there are none)"
    )
    return (
        f"{dataset_dir}: nothing to evaluate: accuracy needs sequences with ground-truth depth and cameras, and {why}; "
        "make a dataset that has them (`edgescene synth`, or preprocess data that carries depth and cameras); "
        "footage without them is for self-supervised training (docs/self_supervised.md)"
    )


def evaluate_baselines(
    dataset_dir: str | Path,
    frames: int | None,
    size: Sequence[int],
    max_sequences: int | None = None,
    baselines: Sequence[str] | None = None,
    any_size: bool = False,
) -> EvalReport:
    """Score the trivial :data:`BASELINES` on the frames :func:`evaluate` would use.

    frames: per sequence (clipped to its length; None = all); size: model input ``(H, W)``;
    any_size: as the evaluated report's (:attr:`EvalReport.any_size`).
    """
    names = list(baselines) if baselines is not None else list(BASELINES)
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; known: {', '.join(BASELINES)}")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (H, W) with positive values, got {size!r}")
    size = (int(size[0]), int(size[1]))
    report = EvalReport(str(dataset_dir), size, frames, info={n: {"baseline": True} for n in names}, any_size=any_size)
    for seq in load_sequences(
        dataset_dir, size, frames, max_sequences, load_images=False, skipped=report.skipped, any_size=any_size
    ):
        for n in names:
            pred = BASELINES[n](len(seq.indices), *seq.depth.shape[-2:])
            report.rows.append(SequenceRow(n, seq.name, seq.indices, score(pred, seq)))
    if not report.rows:
        raise ValueError(_nothing_to_score(dataset_dir, report.skipped))
    return report


def _count_usable(dataset_dir, max_sequences) -> int:
    n = sum(_usable(e) for e in read_manifest(dataset_dir).sequences().values())
    return min(n, max_sequences) if max_sequences is not None else n
