"""Textures for the synthetic scenes: procedural (value noise, checkers, stripes, bricks, marble)
or natural (crops of the photographs scikit-image ships, which load with no download).

Each texture is a small float32 RGB image in [0, 1] of shape (T, T, 3), sampled with wrap-around
bilinear interpolation at texture coordinates (u, v) in texels. Rich, multi-scale patterns give
matching-based models something to lock onto; Lambertian use keeps them view-independent. A natural
crop is mirrored into a 2x2 tile before it is shrunk to T, so it wraps around without a seam.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

TEXTURE_SIZE = 128


def _value_noise(rng: np.random.Generator, size: int, octaves: int = 4) -> np.ndarray:
    """Tileable multi-octave value noise (size, size) in [0, 1]."""
    out = np.zeros((size, size), np.float32)
    amplitude, total = 1.0, 0.0
    for octave in range(octaves):
        cells = 4 * 2**octave
        grid = rng.random((cells, cells)).astype(np.float32)
        coords = np.arange(size, dtype=np.float32) * cells / size
        i0 = np.floor(coords).astype(int)
        f = coords - i0
        f = f * f * (3 - 2 * f)  # smoothstep
        i1 = (i0 + 1) % cells
        rows = grid[i0][:, i0] * (1 - f)[None, :] + grid[i0][:, i1] * f[None, :]
        rows_next = grid[i1][:, i0] * (1 - f)[None, :] + grid[i1][:, i1] * f[None, :]
        out += amplitude * (rows * (1 - f)[:, None] + rows_next * f[:, None])
        total += amplitude
        amplitude *= 0.55
    return out / total


def _palette(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = rng.uniform(0.1, 0.9, 3).astype(np.float32)
    b = np.clip(a + rng.uniform(-0.6, 0.6, 3), 0.05, 1.0).astype(np.float32)
    return a, b


def random_texture(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """One random texture (size, size, 3) float32 in [0, 1]."""
    kind = rng.integers(5)
    c0, c1 = _palette(rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    noise = _value_noise(rng, size)
    if kind == 0:  # noise
        t = noise
    elif kind == 1:  # checker with noise
        n = int(rng.integers(2, 9))
        t = ((np.floor(xx * n) + np.floor(yy * n)) % 2) * 0.7 + 0.3 * noise
    elif kind == 2:  # stripes
        n = int(rng.integers(2, 9))
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * n + 0.3 * noise))
    elif kind == 3:  # bricks
        rows = int(rng.integers(3, 9))
        row = np.floor(yy * rows)
        shifted = (xx * rows / 2 + 0.5 * (row % 2)) % 1.0
        mortar = (np.minimum(shifted, 1 - shifted) < 0.06) | ((yy * rows) % 1.0 < 0.1)
        t = np.where(mortar, 0.1, 0.6 + 0.4 * noise)
    else:  # marble
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * 3 + 4 * noise))
    tex = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    return np.clip(tex, 0, 1).astype(np.float32)


# scikit-image's bundled photographs (no download). Left out: stereo_motorcycle (the Middlebury pair
# `edgescene eval` scores on), text-like and binary images, and the microscopy images.
NATURAL_SOURCES: tuple[str, ...] = (
    "astronaut", "brick", "camera", "cat", "chelsea", "coffee", "coins", "grass", "gravel", "moon", "rocket",
    "clock", "hubble_deep_field", "colorwheel",
)  # fmt: skip


@functools.cache
def _natural_source(name: str) -> np.ndarray:
    """One of :data:`NATURAL_SOURCES` as float32 RGB in [0, 1] (grey images repeated into 3 channels)."""
    from skimage import data

    image = np.asarray(getattr(data, name)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return (image[..., :3].astype(np.float32) / 255.0).copy()


def natural_texture(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A random square crop of a random :data:`NATURAL_SOURCES` photograph, randomly flipped and
    rotated, grey ones tinted, mirrored into a seamless tile and shrunk to (size, size, 3) float32."""
    source = _natural_source(NATURAL_SOURCES[int(rng.integers(len(NATURAL_SOURCES)))])
    h, w = source.shape[:2]
    side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = np.rot90(source[y : y + side, x : x + side], int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if np.allclose(crop[..., 0], crop[..., 1]) and np.allclose(crop[..., 1], crop[..., 2]):
        c0, c1 = _palette(rng)
        crop = c0[None, None] * (1 - crop) + c1[None, None] * crop
    tile = np.concatenate([crop, crop[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[::-1]], axis=0)  # mirrored 2x2: the texture wraps without a seam
    out = cv2.resize(np.ascontiguousarray(tile), (size, size), interpolation=cv2.INTER_AREA)
    return np.clip(out, 0, 1).astype(np.float32)


def sample_texture(texture: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear, wrap-around lookup. u, v: (N,) in texels (any real value) -> (N, 3)."""
    size_v, size_u = texture.shape[:2]
    u0 = np.floor(u)
    v0 = np.floor(v)
    fu = (u - u0)[:, None].astype(np.float32)
    fv = (v - v0)[:, None].astype(np.float32)
    iu0 = u0.astype(np.int64) % size_u
    iv0 = v0.astype(np.int64) % size_v
    iu1 = (iu0 + 1) % size_u
    iv1 = (iv0 + 1) % size_v
    top = texture[iv0, iu0] * (1 - fu) + texture[iv0, iu1] * fu
    bottom = texture[iv1, iu0] * (1 - fu) + texture[iv1, iu1] * fu
    return top * (1 - fv) + bottom * fv


def build_mipmaps(texture: np.ndarray) -> list[np.ndarray]:
    """Box-filtered pyramid of a square power-of-two texture, down to 4x4 texels."""
    levels = [texture]
    while levels[-1].shape[0] > 4:
        t = levels[-1]
        levels.append(0.25 * (t[0::2, 0::2] + t[1::2, 0::2] + t[0::2, 1::2] + t[1::2, 1::2]))
    return levels


def sample_texture_lod(mipmaps: list[np.ndarray], u: np.ndarray, v: np.ndarray, lod: np.ndarray) -> np.ndarray:
    """Trilinear lookup: bilinear in the two pyramid levels around ``lod`` (log2 of the pixel's
    footprint in texels), blended. u, v in level-0 texels. Removes the aliasing that makes the same
    surface look different from different distances."""
    lod = np.clip(lod, 0.0, len(mipmaps) - 1.0)
    low = np.floor(lod).astype(int)
    frac = (lod - low)[:, None].astype(np.float32)
    out = np.empty((len(u), 3), np.float32)
    for level in np.unique(low):
        sel = low == level
        scale = 0.5**level
        a = sample_texture(mipmaps[level], u[sel] * scale - 0.5 + 0.5 * scale, v[sel] * scale - 0.5 + 0.5 * scale)
        upper = min(level + 1, len(mipmaps) - 1)
        scale_up = 0.5**upper
        b = sample_texture(
            mipmaps[upper], u[sel] * scale_up - 0.5 + 0.5 * scale_up, v[sel] * scale_up - 0.5 + 0.5 * scale_up
        )
        out[sel] = a * (1 - frac[sel]) + b * frac[sel]
    return out
