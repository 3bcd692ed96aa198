"""Images of a manifest folder as DINOv3 multi-crop samples (follows ``dinov3/data/augmentations.py``).

Reading: OpenCV, 8- or 16-bit, 1 or 3 channels. 8-bit is scaled by 1/255; 16-bit by the image's own
1st..99th percentile to [0, 1] (IR and satellite sensors use a small part of the 16-bit range).
Single-channel images (IR) are **replicated to 3 channels**, so released RGB backbones apply
unchanged (the alternative, a new 1-channel patch embedding, would discard the pretrained one).

Augmentation ``DataAugmentationDINO``: 2 global + N local RandomResizedCrops (bicubic, antialiased),
each with its own horizontal flip (p 0.5), colour jitter (brightness 0.4, contrast 0.4, saturation
0.2, hue 0.1; p 0.8; skipped for single-channel sources), grayscale (p 0.2); then gaussian blur
(kernel 9, sigma 0.1..2) with p 1.0 on global crop 1, p 0.1 + solarize p 0.2 on global crop 2,
p 0.5 on local crops; then normalisation with the preset's mean/std.

Every random draw comes from a ``random.Random`` seeded by the sample's key, which the sampler
derives from (seed, step, rank, slot): a batch depends only on its step, whatever the number of
loader workers, so ``--resume`` replays exactly the batches an uninterrupted run would see.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from edgescene.core.images import decode_image_float, probe_image
from edgescene.core.manifest import read_manifest

LUMA = (0.299, 0.587, 0.114)


def read_image(path: str | Path) -> tuple[torch.Tensor, bool]:
    """-> (image (3, H, W) float32 in [0, 1] RGB, whether the source had a single channel).

    Decoded by the one decoder (:func:`edgescene.core.images.decode_image_float`: pixels as stored,
    RGBA on white, grey replicated, 16-bit grey kept at full precision); 16-bit (and 32-bit) sources
    are then stretched from their 1st..99th percentile to [0, 1] (thermal frames use a few hundred
    of their 65536 levels)."""
    info = probe_image(path, what=f"image {path}")
    img = decode_image_float(path, what=f"image {path}")
    if info.bits > 8:
        low, high = np.percentile(img[..., 0], (1.0, 99.0))
        span = max(float(high - low), 1.0 / 65535.0)
        img = np.clip((img - np.float32(low)) / np.float32(span), 0.0, 1.0).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), info.channels <= 2  # grey (+ alpha)


def random_resized_crop(
    img: torch.Tensor,
    size: int,
    scale: tuple[float, float],
    rng: random.Random,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """torchvision's RandomResizedCrop (10 tries, then a centre crop), bicubic with antialias."""
    _, h, w = img.shape
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
            break
    else:
        cw, ch = w, h
        if w / h < ratio[0]:
            ch = int(round(w / ratio[0]))
        elif w / h > ratio[1]:
            cw = int(round(h * ratio[1]))
        top, left = (h - ch) // 2, (w - cw) // 2
    crop = img[None, :, top : top + ch, left : left + cw]
    return F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True, align_corners=False)[0].clamp(0, 1)


def grayscale(img: torch.Tensor) -> torch.Tensor:
    return (LUMA[0] * img[0] + LUMA[1] * img[1] + LUMA[2] * img[2]).expand(3, -1, -1)


def _rgb_to_hsv(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img
    maxc, minc = img.max(0).values, img.min(0).values
    flat = maxc == minc
    delta = maxc - minc
    s = delta / torch.where(flat, torch.ones_like(maxc), maxc)
    d = torch.where(flat, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = (maxc == r) * (bc - gc) + ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    h = h + ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    return torch.stack((torch.fmod(h / 6.0 + 1.0, 1.0), s, maxc))


def _hsv_to_rgb(img: torch.Tensor) -> torch.Tensor:
    h, s, v = img
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p, q, t = (v * (1 - s)).clamp(0, 1), (v * (1 - s * f)).clamp(0, 1), (v * (1 - s * (1 - f))).clamp(0, 1)
    select = (i.unsqueeze(0) == torch.arange(6).view(-1, 1, 1)).to(img.dtype)  # (6, H, W)
    table = torch.stack(
        (torch.stack((v, q, p, p, t, v)), torch.stack((t, v, v, q, p, p)), torch.stack((p, p, t, v, v, q)))
    )
    return torch.einsum("ijk,xijk->xjk", select, table)


def color_jitter(
    img: torch.Tensor,
    rng: random.Random,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    hue: float = 0.1,
) -> torch.Tensor:
    """torchvision's ColorJitter: the four adjustments in a random order, random factors."""
    order = [0, 1, 2, 3]
    rng.shuffle(order)
    for op in order:
        if op == 0:
            img = (img * rng.uniform(1 - brightness, 1 + brightness)).clamp(0, 1)
        elif op == 1:
            c = rng.uniform(1 - contrast, 1 + contrast)
            img = (c * img + (1 - c) * grayscale(img).mean()).clamp(0, 1)
        elif op == 2:
            s = rng.uniform(1 - saturation, 1 + saturation)
            img = (s * img + (1 - s) * grayscale(img)).clamp(0, 1)
        else:
            hsv = _rgb_to_hsv(img)
            hsv[0] = torch.remainder(hsv[0] + rng.uniform(-hue, hue), 1.0)
            img = _hsv_to_rgb(hsv)
    return img


def gaussian_blur(
    img: torch.Tensor, rng: random.Random, kernel: int = 9, sigma: tuple[float, float] = (0.1, 2.0)
) -> torch.Tensor:
    s = rng.uniform(*sigma)
    x = torch.arange(kernel, dtype=img.dtype) - (kernel - 1) / 2
    k = torch.exp(-(x**2) / (2 * s * s))
    k = (k / k.sum()).to(img.dtype)
    pad = kernel // 2
    out = F.pad(img[None], (pad, pad, pad, pad), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]


class MultiCropAugmentation:
    """image (3, H, W) in [0, 1] -> {"global_crops": (2, 3, G, G), "local_crops": (N, 3, L, L)}, normalised."""

    def __init__(
        self,
        global_size: int,
        local_size: int,
        local_number: int,
        global_scale: tuple[float, float],
        local_scale: tuple[float, float],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        horizontal_flips: bool = True,
    ) -> None:
        self.global_size, self.local_size, self.local_number = global_size, local_size, local_number
        self.global_scale, self.local_scale = global_scale, local_scale
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
        self.flip_p = 0.5 if horizontal_flips else 0.0

    def _crop(
        self,
        img: torch.Tensor,
        size: int,
        scale: tuple[float, float],
        blur_p: float,
        solarize_p: float,
        single_channel: bool,
        rng: random.Random,
    ) -> torch.Tensor:
        x = random_resized_crop(img, size, scale, rng)
        if rng.random() < self.flip_p:
            x = x.flip(-1)
        if not single_channel:
            if rng.random() < 0.8:
                x = color_jitter(x, rng)
            if rng.random() < 0.2:
                x = grayscale(x)
        if rng.random() < blur_p:
            x = gaussian_blur(x, rng)
        if rng.random() < solarize_p:
            x = torch.where(x >= 128 / 255, 1.0 - x, x)
        return (x - self.mean) / self.std

    def __call__(self, img: torch.Tensor, single_channel: bool, rng: random.Random) -> dict[str, torch.Tensor]:
        g = (self.global_size, self.global_scale)
        global_crops = [
            self._crop(img, *g, 1.0, 0.0, single_channel, rng),
            self._crop(img, *g, 0.1, 0.2, single_channel, rng),
        ]
        local_crops = [
            self._crop(img, self.local_size, self.local_scale, 0.5, 0.0, single_channel, rng)
            for _ in range(self.local_number)
        ]
        return {"global_crops": torch.stack(global_crops), "local_crops": torch.stack(local_crops)}


class ManifestImages(Dataset):
    """The images of a manifest folder; ``dataset[(index, seed)]`` is one multi-crop sample."""

    def __init__(self, dataset_dir: str | Path, augmentation: MultiCropAugmentation) -> None:
        self.root = Path(dataset_dir).resolve()
        self.entries = read_manifest(self.root).entries
        if not self.entries:
            raise ValueError(f"{self.root}/manifest.json lists no images")
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.entries)

    def path(self, index: int) -> Path:
        path = (self.root / self.entries[index].path).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"manifest entry {self.entries[index].id}: {path} is outside {self.root}")
        return path

    def __getitem__(self, key: tuple[int, str]) -> dict[str, torch.Tensor]:
        index, seed = key
        img, single = read_image(self.path(index))
        return self.augmentation(img, single, random.Random(seed))


class StepSampler(Sampler):
    """Endless keys ``(index, seed)``, ``batch_size`` per step from ``start_step`` on.

    Sample slot p = (step * world_size + rank) * batch_size + j walks epoch-wise random permutations
    (seeded by seed and epoch), so ranks see disjoint images and a step's batch never depends on
    what came before it.
    """

    def __init__(
        self, n_items: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        self.n, self.batch_size, self.seed = n_items, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size

    def _permutation(self, epoch: int) -> list[int]:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch)).tolist()

    def __iter__(self) -> Iterator[tuple[int, str]]:
        step, cache = self.start_step, {}
        while True:
            for j in range(self.batch_size):
                p = (step * self.world_size + self.rank) * self.batch_size + j
                epoch = p // self.n
                if epoch not in cache:
                    cache = {epoch: self._permutation(epoch)}
                yield cache[epoch][p % self.n], f"{self.seed}-{step}-{self.rank}-{j}"
            step += 1


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def build_loader(
    dataset: ManifestImages,
    batch_size: int,
    seed: int,
    start_step: int,
    rank: int,
    world_size: int,
    num_workers: int,
    pin_memory: bool = False,
) -> DataLoader:
    """An endless loader: each iteration is one step's batch of stacked crops (B, 2, 3, G, G) / (B, N, 3, L, L)."""
    sampler = StepSampler(len(dataset), batch_size, seed, start_step, rank, world_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if num_workers else None,
        persistent_workers=False,
    )
