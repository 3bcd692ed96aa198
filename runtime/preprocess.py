"""Frames to model input, and model pixels back to the original image.

- :func:`fit` chooses how a ``(src_h, src_w)`` image maps onto a ``(dst_h, dst_w)`` model input:
  ``"crop"`` scales to *cover* the target (aspect ratio kept) and centre-crops; ``"pad"`` scales to
  *fit inside*, centres and pads with white (1.0), like VGGT's ``load_and_preprocess_images``.
- :func:`prepare` / :func:`prepare_batch` apply it: ``images: (S, 3, H, W) float32 in [0, 1]``.
- :class:`Resize` records the mapping so that results (intrinsics, pixels) can be expressed in the
  original image: ``u = scale * x + offset_x``, ``v = scale * y + offset_y``.
- :func:`model_size_for` is upstream's size rule (long side 518, the other a multiple of 14).

Coordinates are continuous pixel coordinates in which an image of width W spans [0, W] (its centre
is W / 2, the convention of ``cx = W / 2`` in :mod:`edgescene.runtime.geometry`), so the source
centre maps exactly to the target centre. The pixels themselves are resized to whole sizes
(``round(scale * src)``) and placed at whole offsets, so they follow the mapping to within half a
model pixel. Imports numpy, OpenCV and the standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Resize", "fit", "prepare", "prepare_batch", "model_size_for", "MODES", "PAD_VALUE"]

MODES = ("crop", "pad")
PAD_VALUE = 1.0  # white, as upstream's pad mode


@dataclass(frozen=True)
class Resize:
    """Mapping from source pixels (x, y) to model pixels (u, v): ``u = scale * x + offset_x``.

    ``mode="crop"``: offsets <= 0 (the source overhangs the target); ``"pad"``: offsets >= 0.
    """

    src_h: int
    src_w: int
    dst_h: int
    dst_w: int
    scale: float
    offset_x: float
    offset_y: float
    mode: str

    def matrix(self) -> np.ndarray:
        """(3, 3) float64 homogeneous map from source to model pixels."""
        return np.array([[self.scale, 0.0, self.offset_x],
                         [0.0, self.scale, self.offset_y],
                         [0.0, 0.0, 1.0]])

    def to_source_intrinsics(self, K) -> np.ndarray:
        """Intrinsics in model pixels ``(..., 3, 3)`` -> the same camera in original image pixels.

        ``K_src = A^-1 K`` with ``A`` = :meth:`matrix`: ``fx / scale``, ``(cx - offset_x) / scale``.
        Keeps a floating dtype (integer input gives float64).
        """
        return self._apply(np.linalg.inv(self.matrix()), K, "K")

    def to_model_intrinsics(self, K) -> np.ndarray:
        """Inverse of :meth:`to_source_intrinsics`: original-image intrinsics -> model pixels."""
        return self._apply(self.matrix(), K, "K")

    def to_source_points(self, uv) -> np.ndarray:
        """Model pixel coordinates ``(..., 2)`` (u, v) -> original image coordinates (x, y)."""
        return self._map_points(uv, "uv", to_source=True)

    def to_model_points(self, xy) -> np.ndarray:
        """Original image coordinates ``(..., 2)`` (x, y) -> model pixel coordinates (u, v)."""
        return self._map_points(xy, "xy", to_source=False)

    def _map_points(self, points, name: str, to_source: bool) -> np.ndarray:
        """Undo (``to_source``) or apply the resize's scale and offset; float input keeps its dtype."""
        points = np.asarray(points)
        if points.ndim < 1 or points.shape[-1] != 2:
            raise ValueError(f"{name}: expected (..., 2), got {points.shape}")
        dt = points.dtype if np.issubdtype(points.dtype, np.floating) else np.dtype(np.float64)
        off = np.array([self.offset_x, self.offset_y])
        p = points.astype(np.float64)
        return ((p - off) / self.scale if to_source else p * self.scale + off).astype(dt)

    @staticmethod
    def _apply(A: np.ndarray, K, name: str) -> np.ndarray:
        K = np.asarray(K)
        if K.ndim < 2 or K.shape[-2:] != (3, 3):
            raise ValueError(f"{name}: expected (..., 3, 3), got {K.shape}")
        dt = K.dtype if np.issubdtype(K.dtype, np.floating) else np.dtype(np.float64)
        return np.matmul(A, K.astype(np.float64)).astype(dt)

    def placement(self) -> tuple[int, int, int, int]:
        """Whole-pixel layout used by :func:`prepare`: ``(resized_h, resized_w, y0, x0)``.

        The source is resized to ``resized_h x resized_w``; its top-left corner lands at model pixel
        ``(x0, y0)`` (negative in crop mode: that many columns / rows are cropped away).
        """
        rh = max(1, round(self.scale * self.src_h))
        rw = max(1, round(self.scale * self.src_w))
        if self.mode == "crop":
            rh, rw = max(rh, self.dst_h), max(rw, self.dst_w)
            return rh, rw, -((rh - self.dst_h) // 2), -((rw - self.dst_w) // 2)
        rh, rw = min(rh, self.dst_h), min(rw, self.dst_w)
        return rh, rw, (self.dst_h - rh) // 2, (self.dst_w - rw) // 2

    def valid_mask(self) -> np.ndarray:
        """``(dst_h, dst_w)`` bool: True where the model input shows the image, False on padding."""
        mask = np.zeros((self.dst_h, self.dst_w), dtype=bool)
        rh, rw, y0, x0 = self.placement()
        mask[max(y0, 0):min(y0 + rh, self.dst_h), max(x0, 0):min(x0 + rw, self.dst_w)] = True
        return mask


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def fit(src_h: int, src_w: int, dst_h: int, dst_w: int, mode: Literal["crop", "pad"] = "crop") -> Resize:
    """Map a ``src_h x src_w`` image onto a ``dst_h x dst_w`` model input.

    ``"crop"``: scale = max(dst_h / src_h, dst_w / src_w) (cover), centre crop.
    ``"pad"``: scale = min(dst_h / src_h, dst_w / src_w) (fit inside), centred, white padding.
    """
    src_h, src_w = _positive_int(src_h, "src_h"), _positive_int(src_w, "src_w")
    dst_h, dst_w = _positive_int(dst_h, "dst_h"), _positive_int(dst_w, "dst_w")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")
    sy, sx = dst_h / src_h, dst_w / src_w
    scale = max(sy, sx) if mode == "crop" else min(sy, sx)
    # centre maps to centre; the covering / fitting axis gets exactly 0
    off_x = 0.0 if scale == sx else (dst_w - scale * src_w) / 2.0
    off_y = 0.0 if scale == sy else (dst_h - scale * src_h) / 2.0
    return Resize(src_h, src_w, dst_h, dst_w, float(scale), float(off_x), float(off_y), mode)


def _as_uint8_or_float(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb: expected (H, W, 3) RGB, got {rgb.shape}")
    if rgb.dtype == np.uint8:
        return rgb
    if np.issubdtype(rgb.dtype, np.floating):
        return rgb.astype(np.float32)  # assumed in [0, 1]
    raise ValueError(f"rgb: expected uint8 (0..255) or float (0..1), got {rgb.dtype}")


def prepare(rgb: np.ndarray, resize: Resize) -> np.ndarray:
    """``(H0, W0, 3)`` uint8 RGB (or float in [0, 1]) -> ``(3, dst_h, dst_w)`` float32 in [0, 1].

    Resizes with ``cv2.INTER_AREA`` when shrinking and ``cv2.INTER_CUBIC`` when enlarging, then
    centre-crops or pads with white (1.0) as ``resize`` says.
    """
    import cv2

    rgb = _as_uint8_or_float(rgb)
    if rgb.shape[:2] != (resize.src_h, resize.src_w):
        raise ValueError(f"rgb is {rgb.shape[0]}x{rgb.shape[1]} but resize expects "
                         f"{resize.src_h}x{resize.src_w}; call fit() with this image's size")
    rh, rw, y0, x0 = resize.placement()
    if (rh, rw) != rgb.shape[:2]:
        shrinking = rh * rw < resize.src_h * resize.src_w
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
        rgb = cv2.resize(rgb, (rw, rh), interpolation=interp)  # uint8 saturates; float clipped below
    img = rgb.astype(np.float32)
    if rgb.dtype == np.uint8:
        img *= 1.0 / 255.0
    else:
        np.clip(img, 0.0, 1.0, out=img)
    out = np.full((3, resize.dst_h, resize.dst_w), PAD_VALUE, dtype=np.float32)
    # intersection of the placed image with the target, in both frames
    ty0, tx0 = max(y0, 0), max(x0, 0)
    ty1, tx1 = min(y0 + rh, resize.dst_h), min(x0 + rw, resize.dst_w)
    out[:, ty0:ty1, tx0:tx1] = img[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0].transpose(2, 0, 1)
    return out


def prepare_batch(frames: Sequence[np.ndarray], dst_h: int, dst_w: int,
                  mode: Literal["crop", "pad"] = "crop") -> tuple[np.ndarray, list[Resize]]:
    """Prepare several frames (arrays, or objects with an ``rgb`` array such as ``Frame``).

    Returns ``images: (S, 3, dst_h, dst_w) float32 in [0, 1]`` and one :class:`Resize` per frame
    (frames may have different sizes).
    """
    arrays = [np.asarray(getattr(f, "rgb", f)) for f in frames]
    if not arrays:
        raise ValueError("prepare_batch needs at least one frame")
    out = np.empty((len(arrays), 3, _positive_int(dst_h, "dst_h"), _positive_int(dst_w, "dst_w")), np.float32)
    resizes = []
    for i, rgb in enumerate(arrays):
        if rgb.ndim != 3:
            raise ValueError(f"frame {i}: expected (H, W, 3) RGB, got {rgb.shape}")
        r = fit(rgb.shape[0], rgb.shape[1], dst_h, dst_w, mode)
        out[i] = prepare(rgb, r)
        resizes.append(r)
    return out, resizes


def model_size_for(src_h: int, src_w: int, long_side: int = 518, multiple: int = 14) -> tuple[int, int]:
    """Upstream VGGT's size rule: the long side becomes ``long_side``, the other is scaled with the
    aspect ratio and rounded to a multiple of ``multiple`` (at least one multiple). Returns (h, w).

    >>> model_size_for(480, 640)
    (392, 518)
    """
    src_h, src_w = _positive_int(src_h, "src_h"), _positive_int(src_w, "src_w")
    long_side, multiple = _positive_int(long_side, "long_side"), _positive_int(multiple, "multiple")
    if long_side % multiple:
        raise ValueError(f"long_side must be a multiple of {multiple} (the patch size), got {long_side}; "
                         f"e.g. {max(multiple, round(long_side / multiple) * multiple)}")
    short = min(src_h, src_w) * long_side / max(src_h, src_w)
    short = max(multiple, round(short / multiple) * multiple)
    return (long_side, short) if src_h > src_w else (short, long_side)


def prepare_depth(depth: np.ndarray, resize: Resize) -> np.ndarray:
    """GT depth (H0, W0) -> (dst_h, dst_w) through the same mapping as :func:`prepare`.

    Nearest-neighbour sampling (depth is never blended across edges); pixels outside the image
    (padding) and non-finite ones become 0 (no depth).
    """
    import cv2

    d = np.asarray(depth, dtype=np.float32)
    if d.shape != (resize.src_h, resize.src_w):
        raise ValueError(f"depth is {d.shape[0]}x{d.shape[1]} but the image is {resize.src_h}x{resize.src_w}")
    d = np.where(np.isfinite(d), d, 0.0).astype(np.float32)
    rh, rw, y0, x0 = resize.placement()
    if (rh, rw) != d.shape:
        d = cv2.resize(d, (rw, rh), interpolation=cv2.INTER_NEAREST_EXACT)
    out = np.zeros((resize.dst_h, resize.dst_w), dtype=np.float32)
    ty0, tx0 = max(y0, 0), max(x0, 0)
    ty1, tx1 = min(y0 + rh, resize.dst_h), min(x0 + rw, resize.dst_w)
    out[ty0:ty1, tx0:tx1] = d[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0]
    return out


def load_rgb(path) -> np.ndarray:
    """A dataset image for :func:`prepare`: (H, W, 3) RGB, uint8 as stored or float32 in [0, 1] for
    16-bit files (grey replicated to 3 channels, alpha dropped). ValueError when it cannot be read."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = np.ascontiguousarray(img[..., 2::-1])  # BGR(A) -> RGB
    return img if img.dtype == np.uint8 else img.astype(np.float32) / np.iinfo(img.dtype).max
