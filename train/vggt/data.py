"""Multi-view training samples for VGGT from a manifest folder (upstream
``training/data/base_dataset.py``, ``dataset_util.py`` and the per-dataset loaders, reduced to one
manifest-driven loader).

A usable sequence is a video, a synthetic scene or a folder of images (see
:func:`edgescene.train.data.colmap_poses.sequence_groups`), of which the frames with a depth map and
a camera are used (depth may be sparse: ``preprocess --poses colmap``; only pixels with depth
count). A sample is a window of frames close in time (upstream's ``get_nearby``): consecutive, or
with ``max_stride`` > 1 every ``s``-th frame for a random ``s`` (wider motions in a window, as the
runtime's keyframe selection makes them), loaded as RGB in [0, 1], depth in metres (0 = invalid)
and the camera-from-world extrinsics / intrinsics of the processed images, then brought to the
training size: training samples with the cover-and-centre-crop of
:func:`edgescene.core.preprocess.fit` (``"crop"``, the random zoom needs it), validation samples
exactly as the runtime feeds frames (upstream VGGT's preprocessing,
:func:`~edgescene.core.preprocess.choose_model_size`: the whole frame, padded with white into the
training size; padded pixels carry no depth); intrinsics mapped by the :class:`Resize`. Frames
whose camera records a lens ``distortion`` are first resampled to the pinhole view of the same
intrinsics (:func:`edgescene.core.lens.to_pinhole`; depth by nearest neighbour, pixels the lens
did not cover get none), since the model and its losses are pinhole.

Augmentation (training only; one draw per sample, shared by all its frames, as a scene must stay
geometrically consistent): a random centred zoom of up to ``MAX_ZOOM`` (upstream scales by
0.8-1.2; zooming *into* the crop keeps the whole target covered) and, with probability 0.9,
colour jitter (brightness, contrast, saturation) plus occasional greyscale. Upstream also varies
the aspect ratio per batch; here the training size is fixed.

Sampling is a pure function of ``(seed, step, rank)`` (:class:`StepBatchSampler`): every step draws
one frame count for all processes (upstream's ``img_nums``), then each process draws its own
sequences, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from edgescene.core.lens import LensDistortion, to_pinhole
from edgescene.core.manifest import Entry, read_manifest, resolve_inside
from edgescene.core.preprocess import choose_model_size, fit, load_rgb, prepare, prepare_depth, resize_pixels
from edgescene.train.data.colmap_poses import sequence_groups

MAX_ZOOM = 1.25
JITTER_P, JITTER = 0.9, 0.2
GREY_P = 0.05


def usable_sequences(root: str | Path, min_frames: int) -> dict[str, list[Entry]]:
    """Sequences of the manifest in ``root`` with depth and a camera on every frame and at least
    ``min_frames`` frames; a ValueError says why when there are none."""
    manifest = read_manifest(root)
    groups = sequence_groups(manifest.entries)
    no_depth = [n for n, es in groups.items() if all(e.depth is None for e in es)]
    no_camera = [n for n, es in groups.items() if all(e.camera is None for e in es)]
    # frames without both (those SfM could not register, `preprocess --poses colmap`) are left out
    complete = {n: [e for e in es if e.depth is not None and e.camera is not None] for n, es in groups.items()}
    complete = {n: es for n, es in complete.items() if es}
    usable = {n: es for n, es in complete.items() if len(es) >= min_frames}
    if usable:
        return usable
    loose = sum(1 for e in manifest.entries if e.sequence is None)
    if complete:
        longest = max(len(es) for es in complete.values())
        raise ValueError(
            f"dataset {root} is unusable for VGGT training: too few frames: every sequence with depth and "
            f"cameras has fewer than {min_frames} frames (the longest has {longest}); lower the minimum "
            f"of --frames or use longer sequences"
        )
    raise ValueError(
        f"dataset {root} is unusable for VGGT training: no sequences with depth+cameras on every frame "
        f"({len(manifest.entries)} entries, {len(groups)} sequences, {loose} entries in no sequence; "
        f"{len(no_depth)} sequences lack depth maps, {len(no_camera)} lack cameras). VGGT needs multi-view "
        "sequences with ground-truth depth and camera-from-world poses: make them with `edgescene synth` or "
        "preprocess data that carries depth and cameras"
    )


def split_sequences(names: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic (train, val) split of sequence names: ``round(fraction * n)`` held out, at least one when
    the fraction is > 0, and at least one sequence stays for training."""
    names = sorted(names)
    n_val = min(max(1, round(val_fraction * len(names))), len(names) - 1) if val_fraction > 0 else 0
    order = np.random.default_rng(seed).permutation(len(names))
    val = sorted(names[i] for i in order[:n_val])
    return [n for n in names if n not in val], val


def colour_jitter(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """images (S, 3, H, W) in [0, 1]; one brightness / contrast / saturation draw for all frames."""
    if rng.random() >= JITTER_P:
        return images
    b, c, s = rng.uniform(1 - JITTER, 1 + JITTER, size=3)
    grey_w = np.array([0.299, 0.587, 0.114], np.float32)[None, :, None, None]
    out = images * b
    mean = (out * grey_w).sum(1, keepdims=True).mean((2, 3), keepdims=True)
    out = (out - mean) * c + mean
    grey = (out * grey_w).sum(1, keepdims=True)
    out = (out - grey) * s + grey
    if rng.random() < GREY_P:
        out = np.repeat((out * grey_w).sum(1, keepdims=True), 3, axis=1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


class SequenceDataset(Dataset):
    """Samples keyed by ``(sequence index, frame count, sample seed)``; see :class:`StepBatchSampler`.

    Returns ``images: (S, 3, H, W) float32 in [0, 1]``, ``depth: (S, H, W)`` (0 invalid),
    ``extrinsics: (S, 3, 4)`` camera-from-world, ``intrinsics: (S, 3, 3)`` in training pixels and
    ``valid: (S, H, W)`` bool.
    """

    def __init__(
        self,
        root: str | Path,
        sequences: dict[str, list[Entry]],
        height: int,
        width: int,
        augment: bool,
        max_stride: int = 1,
    ) -> None:
        if isinstance(max_stride, bool) or int(max_stride) != max_stride or max_stride < 1:
            raise ValueError(f"max_stride must be a whole number >= 1, got {max_stride!r}")
        self.root = Path(root).resolve()
        self.names = sorted(sequences)
        self.sequences = [sequences[n] for n in self.names]
        self.lengths = [len(es) for es in self.sequences]
        self.height, self.width, self.augment = height, width, augment
        self.max_stride = int(max_stride)

    def _window(self, entries: list[Entry], frames: int, rng: np.random.Generator) -> list[Entry]:
        """A training window: ``frames`` frames every ``s``-th frame from a random start, ``s`` drawn
        in 1..``max_stride`` (as far as the sequence allows; ``max_stride`` 1 draws nothing, so the
        random stream is the consecutive windows' own)."""
        stride = 1
        if self.max_stride > 1 and frames > 1:
            stride = int(rng.integers(1, min(self.max_stride, (len(entries) - 1) // (frames - 1)) + 1))
        span = (frames - 1) * stride + 1
        start = int(rng.integers(0, len(entries) - span + 1))
        return entries[start : start + span : stride]

    def __len__(self) -> int:
        return len(self.sequences)

    def _sequence(self, key: tuple[int, int, int]) -> tuple[list[Entry], int, int, np.random.Generator]:
        """The key's sequence, frame count, seed and the sample's random generator (checked)."""
        index, frames, seed = key
        entries = self.sequences[index]
        if not 1 <= frames <= len(entries):
            raise ValueError(f"sequence {self.names[index]} has {len(entries)} frames, {frames} were asked for")
        return entries, frames, seed, np.random.default_rng(seed)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        entries, frames, _, rng = self._sequence(key)
        window = self._window(entries, frames, rng) if self.augment else entries[:frames]
        zoom = float(rng.uniform(1.0, MAX_ZOOM)) if self.augment else 1.0
        images, depths, extr, intr = [], [], [], []
        for entry in window:
            rgb = load_rgb(resolve_inside(self.root, entry.path))
            depth = np.load(resolve_inside(self.root, entry.depth), allow_pickle=False).astype(np.float32)
            if depth.shape != rgb.shape[:2]:
                raise ValueError(f"{entry.depth}: depth is {depth.shape}, its image {rgb.shape[:2]}")
            rgb, depth = as_pinhole(entry, rgb, depth)
            K = np.asarray(entry.camera["intrinsics"], np.float64)
            h0, w0 = rgb.shape[:2]
            ch, cw = max(1, round(h0 / zoom)), max(1, round(w0 / zoom))  # centred zoom window
            y0, x0 = (h0 - ch) // 2, (w0 - cw) // 2
            rgb, depth = rgb[y0 : y0 + ch, x0 : x0 + cw], depth[y0 : y0 + ch, x0 : x0 + cw]
            K = K - np.array([[0, 0, x0], [0, 0, y0], [0, 0, 0]], np.float64)
            if self.augment:  # random crops: cover the training size
                resize = fit(ch, cw, self.height, self.width, "crop")
                images.append(prepare(rgb, resize))
            else:  # validation: the frame as the runtime feeds it (upstream preprocessing, whole, padded)
                resize, _ = choose_model_size(ch, cw, "crop", [(self.height, self.width)], max(self.height, self.width))
                images.append(resize_pixels(rgb, resize))
            depths.append(prepare_depth(depth, resize))
            intr.append(resize.to_model_intrinsics(K))
            extr.append(np.asarray(entry.camera["extrinsics"], np.float64))
        images_np = np.stack(images)
        if self.augment:
            images_np = colour_jitter(images_np, rng)
        depth_np = np.stack(depths)
        valid = np.isfinite(depth_np) & (depth_np > 0)
        return {
            "images": torch.from_numpy(images_np),
            "depth": torch.from_numpy(np.where(valid, depth_np, 0.0).astype(np.float32)),
            "extrinsics": torch.from_numpy(np.stack(extr).astype(np.float32)),
            "intrinsics": torch.from_numpy(np.stack(intr).astype(np.float32)),
            "valid": torch.from_numpy(valid),
        }


def as_pinhole(entry: Entry, rgb: np.ndarray, depth: np.ndarray | None = None):
    """``rgb`` (and ``depth``) as the pinhole camera of the entry's intrinsics would see them: as
    they are without a recorded lens distortion; else resampled (depth 0 where the lens saw nothing)."""
    distortion = entry.camera.get("distortion") if entry.camera else None
    if distortion is None:
        return rgb, depth
    lens = LensDistortion.from_list(distortion)
    k = np.asarray(entry.camera["intrinsics"], np.float64)
    rgb, _ = to_pinhole(rgb, k, lens)
    if depth is not None:
        depth, inside = to_pinhole(depth, k, lens, nearest=True)
        depth = np.where(inside, depth, 0.0).astype(np.float32)
    return rgb, depth


class StepBatchSampler(Sampler):
    """Yields, for steps ``start..total-1``, this process's batch: ``batch_size`` keys for :class:`SequenceDataset`.

    The frame count of a step comes from ``(seed, step)`` (the same on every process), the sequences
    and per-sample seeds from ``(seed, step, rank)``; only sequences at least that long are drawn.
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        frames: tuple[int, int],
        seed: int,
        start: int,
        total: int,
        rank: int = 0,
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.start, self.total, self.rank = batch_size, seed, start, total, rank
        self.frames = (frames[0], min(frames[1], int(self.lengths.max())))

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def batch(self, step: int) -> list[tuple[int, int, int]]:
        frames = int(np.random.default_rng([self.seed, step]).integers(self.frames[0], self.frames[1] + 1))
        eligible = np.flatnonzero(self.lengths >= frames)
        rng = np.random.default_rng([self.seed, step, self.rank])
        picks = rng.choice(eligible, size=self.batch_size, replace=True)
        return [(int(i), frames, int(rng.integers(2**31))) for i in picks]

    def __iter__(self):
        for step in range(self.start, self.total):
            yield self.batch(step)


def validation_keys(dataset: SequenceDataset, max_frames: int, limit: int = 16) -> list[tuple[int, int, int]]:
    """Fixed validation samples: the first ``min(max_frames, length)`` frames of up to ``limit`` sequences."""
    return [(i, min(max_frames, n), 0) for i, n in enumerate(dataset.lengths[:limit])]
