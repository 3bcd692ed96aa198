"""Training windows from footage without depth or cameras: what self-supervised VGGT training reads.

A dataset folder is either a manifest folder (``edgescene preprocess`` / ``synth`` output, with or
without depth and cameras) or raw footage: videos, image sequences (one folder of images per
sequence) or both. Raw footage is first run through ``edgescene preprocess`` into
``OUT_DIR/data`` (:func:`prepare_unlabeled`): the same decoding as everywhere else (IR stays
single-channel with its bit depth, 16-bit and satellite imagery are handled there), kept and reused
by the next run (the preprocessing is incremental).

Sequences: the manifest's own (``sequence``: a video, a synthetic scene) and, for images that belong
to none, one per folder (the images of a folder, in name order, are taken as consecutive frames;
tiles of one large image are not a sequence and are left out). A sample is a window of consecutive
frames, brought to the training size as the supervised trainer does (random crop and zoom, colour
jitter for training; the runtime's preprocessing for validation). Single-channel images (IR) are
replicated to three channels, as the DINOv3 trainer does, and 16-bit ones mapped from their
2nd..98th percentile to [0, 1] (each frame on its own: thermal cameras use a few hundred of the
65,536 levels). Returns ``images`` (S, 3, H, W) float32 in [0, 1], and the ground truth where the
manifest has it on every frame of the window and ``with_gt`` asks for it (``has_gt``), so held-out
scores can include it; and the camera's known intrinsics (``known_intrinsics`` (S, 3, 3) in training
pixels, ``has_intrinsics``) where every frame of the window carries them (``edgescene preprocess
--metadata-json`` with ``intrinsics``, or a manifest camera): self-supervision then warps through
the true calibration instead of the camera head's; and the cameras themselves (``known_extrinsics``
(S, 3, 4) camera-from-world, ``has_extrinsics``) where the manifest has them on every frame
(``edgescene preprocess --poses colmap``, or extrinsics in the metadata JSON).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgescene.core.manifest import MANIFEST_NAME, Entry, read_manifest, resolve_inside
from edgescene.core.preprocess import choose_model_size, fit, load_rgb, prepare, prepare_depth, resize_pixels
from edgescene.train.data.colmap_poses import sequence_groups
from edgescene.train.vggt.data import MAX_ZOOM, SequenceDataset, as_pinhole, colour_jitter

__all__ = [
    "UnlabeledSequenceDataset",
    "footage_warning",
    "hold_out_end",
    "known_intrinsics",
    "load_frame",
    "prepare_unlabeled",
    "unlabeled_sequences",
]

IR_PERCENTILES = (2.0, 98.0)


def prepare_unlabeled(dataset_dir: str | Path, out_dir: str | Path, size: int = 518, max_video_frames: int = 300,
                      log=print, metadata_json: str | Path | None = None) -> Path:  # fmt: skip
    """The manifest folder to train from: ``dataset_dir`` itself when it has a manifest, else
    ``out_dir/data`` made (or brought up to date) by ``edgescene preprocess`` (with the user's
    ``metadata_json``: known intrinsics and the like, see :mod:`edgescene.train.data.preprocess`)."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"--dataset-dir {dataset_dir} is not a folder")
    if (dataset_dir / MANIFEST_NAME).is_file():
        if metadata_json is not None:
            raise ValueError(
                f"--dataset-dir {dataset_dir} is already preprocessed (it has a {MANIFEST_NAME}): --metadata-json "
                "applies while preprocessing; give it to `edgescene preprocess` instead, or point --dataset-dir at "
                "the raw footage"
            )
        return dataset_dir
    from edgescene.train.data.preprocess import PreprocessConfig, preprocess_folder

    if metadata_json is not None:  # a wrong calibration must stop the run, not drop frames one by one
        from edgescene.train.data.metadata import load_metadata, metadata_problem

        problems = [f"{key}: {problem}" for key, meta in load_metadata(metadata_json).items()
                    if (problem := metadata_problem(meta)) is not None]  # fmt: skip
        if problems:
            raise ValueError(
                f"--metadata-json {metadata_json}: {len(problems)} entr{'y is' if len(problems) == 1 else 'ies are'} "
                f"wrong, the first {problems[0]}; fix the file and run again"
            )
    target = Path(out_dir) / "data"
    log(f"data: {dataset_dir} has no {MANIFEST_NAME}: preprocessing its videos and images into {target}")
    summary = preprocess_folder(
        PreprocessConfig(
            input_dir=dataset_dir,
            output_dir=target,
            size=size,
            max_video_frames=max_video_frames,
            metadata_json=None if metadata_json is None else Path(metadata_json),
        )  # fmt: skip
    )
    log(f"data: {summary.format()}")
    return target


def unlabeled_sequences(root: str | Path, min_frames: int, source: str | Path | None = None) -> dict[str, list[Entry]]:
    """Sequences of at least ``min_frames`` frames: the manifest's, plus one per folder of loose images.
    ``source``: the folder the user gave, named in the error when ``root`` is its preprocessed copy."""
    manifest = read_manifest(root)
    groups = sequence_groups(manifest.entries)
    usable = {n: es for n, es in groups.items() if len(es) >= min_frames}
    if not usable:
        longest = max((len(es) for es in groups.values()), default=0)
        where = root if source is None or Path(source) == Path(root) else f"{source} (preprocessed into {root})"
        raise ValueError(
            f"dataset {where} has no sequence of {min_frames} frames or more for self-supervised training "
            f"({len(manifest.entries)} entries in {len(groups)} sequences, the longest {longest} frames): it needs "
            "videos or folders of consecutive images (one folder per sequence)"
        )
    return usable


# How the depth gain grew with footage: the median change of depth AbsRel (%) over 5 scene seeds
# never used while tuning, by the number of sequences adapted on (12 frames each, thermal-like,
# calibration given, the self-supervised defaults, a fifth held out to pick best.pt):
# docs/bench/self_supervised/seeds (python -m edgescene.bench.self_supervised_seeds).
FOOTAGE_CURVE: dict[int, float] = {2: 0.0, 4: 0.0, 8: -2.08, 16: -4.92}
RELIABLE_SEQUENCES = 16  # the least footage with a median gain of 5 % or more; none reached it, 16 came closest


def footage_warning(sequences: int) -> str | None:
    """The warning for footage of fewer than :data:`RELIABLE_SEQUENCES` sequences, with the gains the
    bench measured at each amount of footage; None with enough of it."""
    if sequences >= RELIABLE_SEQUENCES:
        return None
    curve = ", ".join(f"{change:+.1f} % with {n}" for n, change in sorted(FOOTAGE_CURVE.items()))
    return (
        f"warning: {sequences} sequence(s) of footage. On the thermal-like bench the median depth AbsRel change was "
        f"{curve} sequences (docs/self_supervised.md): with fewer than {RELIABLE_SEQUENCES}, expect little or no "
        "gain, and best.pt may stay the model you started from. Give more sequences (separate clips or scenes, one "
        "folder or video each)"
    )


HELD_OUT_END = " (held-out end)"  # the name of a sequence's held-out end: part of that sequence, not another


def hold_out_end(
    sequences: dict[str, list[Entry]], fraction: float, frames: tuple[int, int]
) -> tuple[dict[str, list[Entry]], list[str], list[str]]:
    """Footage of one sequence has none to hold out whole: its last ``fraction`` of frames (at least
    one window of ``frames[1]``) become the held-out sequence, if a window's worth stays to train on.
    Returns (sequences, training names, held-out names); nothing held out when it is too short."""
    ((name, entries),) = sequences.items()
    held = max(frames[1], round(fraction * len(entries)))
    if len(entries) - held < frames[1]:
        return sequences, [name], []
    end = f"{name}{HELD_OUT_END}"
    return {name: entries[:-held], end: entries[-held:]}, [name], [end]


def load_frame(path: Path) -> np.ndarray:
    """(H, W, 3) RGB for :func:`prepare`: uint8 as stored; 16-bit (IR) percentile-scaled to float32 in [0, 1];
    single-channel replicated to three (decoding: :func:`edgescene.core.preprocess.load_rgb`)."""
    img = load_rgb(path)
    if img.dtype == np.uint8:
        return img
    low, high = np.percentile(img, IR_PERCENTILES)  # load_rgb's /65535 is linear: the stretch is the same
    return np.clip((img - low) / max(float(high - low), 1e-6), 0.0, 1.0).astype(np.float32)


def validation_windows(dataset: UnlabeledSequenceDataset, frames: int, per_sequence: int = 4, limit: int = 64) -> list:
    """Fixed held-out windows: up to ``per_sequence`` windows of ``frames`` frames spread evenly along
    each sequence (a sequence's first frames alone can be its least telling: a camera that has not
    started moving), at most ``limit`` in all."""
    keys = []
    for i, n in enumerate(dataset.lengths):
        f = min(frames, n)
        starts = sorted({round(k * (n - f) / max(per_sequence - 1, 1)) for k in range(per_sequence)})
        keys += [(i, f, s) for s in starts]
    return keys[:limit]


def known_intrinsics(entry: Entry) -> np.ndarray | None:
    """The frame's known 3x3 intrinsics in its manifest pixels: its camera's, or those ``edgescene
    preprocess --metadata-json`` recorded alone (``metadata["intrinsics_scaled"]``); None if neither."""
    if entry.camera is not None and entry.camera.get("intrinsics") is not None:
        return np.asarray(entry.camera["intrinsics"], np.float64)
    scaled = entry.metadata.get("intrinsics_scaled") if entry.metadata else None
    return None if scaled is None else np.asarray(scaled, np.float64)


class UnlabeledSequenceDataset(SequenceDataset):
    """Windows of consecutive frames keyed by ``(sequence index, frame count, seed)``, as
    :class:`edgescene.train.vggt.data.SequenceDataset` (the same :class:`StepBatchSampler` drives it)."""

    def __init__(
        self,
        root: str | Path,
        sequences: dict[str, list[Entry]],
        height: int,
        width: int,
        augment: bool,
        with_gt: bool = False,
        max_stride: int = 1,
    ) -> None:
        super().__init__(root, sequences, height, width, augment, max_stride)
        self.with_gt = with_gt  # training never reads it: batches then collate whatever the sequences hold

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        entries, frames, seed, rng = self._sequence(key)
        # training: a random window; validation: the key's seed is the first frame (see validation_windows)
        if self.augment:
            window = self._window(entries, frames, rng)
        else:
            start = min(seed, len(entries) - frames)
            window = entries[start : start + frames]
        zoom = float(rng.uniform(1.0, MAX_ZOOM)) if self.augment else 1.0
        has_gt = self.with_gt and all(e.depth is not None and e.camera is not None for e in window)
        known = [known_intrinsics(e) for e in window]
        has_intrinsics = all(k is not None for k in known)
        cameras = [e.camera.get("extrinsics") if e.camera else None for e in window]
        has_extrinsics = has_intrinsics and all(c is not None for c in cameras)
        images, depths, extr, intr = [], [], [], []
        known_model: list[np.ndarray] = []
        for entry, calibration in zip(window, known, strict=True):
            rgb = load_frame(resolve_inside(self.root, entry.path))
            depth = None
            if has_gt:
                depth = np.load(resolve_inside(self.root, entry.depth), allow_pickle=False).astype(np.float32)
            rgb, depth = as_pinhole(entry, rgb, depth)
            h0, w0 = rgb.shape[:2]
            ch, cw = max(1, round(h0 / zoom)), max(1, round(w0 / zoom))
            y0, x0 = (h0 - ch) // 2, (w0 - cw) // 2
            rgb = rgb[y0 : y0 + ch, x0 : x0 + cw]
            if self.augment:
                resize = fit(ch, cw, self.height, self.width, "crop")
                images.append(prepare(rgb, resize))
            else:
                resize, _ = choose_model_size(ch, cw, "crop", [(self.height, self.width)], max(self.height, self.width))
                images.append(resize_pixels(rgb, resize))
            shift = np.array([[0, 0, x0], [0, 0, y0], [0, 0, 0]], np.float64)
            if calibration is not None and has_intrinsics:
                known_model.append(resize.to_model_intrinsics(calibration - shift))
            if depth is not None:
                depths.append(prepare_depth(depth[y0 : y0 + ch, x0 : x0 + cw], resize))
                intr.append(resize.to_model_intrinsics(np.asarray(entry.camera["intrinsics"], np.float64) - shift))
                extr.append(np.asarray(entry.camera["extrinsics"], np.float64))
        images_np = np.stack(images).astype(np.float32)
        if self.augment:
            images_np = colour_jitter(images_np, rng)
        sample = {
            "images": torch.from_numpy(images_np),
            "has_gt": torch.tensor(has_gt),
            # the camera's calibration where the data carry it (every window has the key, so batches collate)
            "has_intrinsics": torch.tensor(has_intrinsics),
            "known_intrinsics": torch.from_numpy(
                np.stack(known_model).astype(np.float32) if has_intrinsics else np.zeros((frames, 3, 3), np.float32)
            ),
            # cameras the manifest carries (structure-from-motion's, a rig's): the warp goes through them
            "has_extrinsics": torch.tensor(has_extrinsics),
            "known_extrinsics": torch.from_numpy(
                np.stack([np.asarray(c, np.float32)[:3] for c in cameras])
                if has_extrinsics
                else np.zeros((frames, 3, 4), np.float32)
            ),
        }
        if has_gt:
            depth_np = np.stack(depths)
            valid = np.isfinite(depth_np) & (depth_np > 0)
            sample.update(
                depth=torch.from_numpy(np.where(valid, depth_np, 0.0).astype(np.float32)),
                extrinsics=torch.from_numpy(np.stack(extr).astype(np.float32)),
                intrinsics=torch.from_numpy(np.stack(intr).astype(np.float32)),
                valid=torch.from_numpy(valid),
            )
        return sample
