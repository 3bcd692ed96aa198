"""Frames to model input, and model pixels back to the original image.

Upstream-exact VGGT input (the default everywhere a frame meets the model):

- :func:`load_and_preprocess_images` ``(paths, mode) -> (S, 3, H, W) float32 in [0, 1]``, with the
  name and behaviour of upstream's ``vggt/utils/load_fn.py``: decoded by :mod:`edgescene.core.images`
  (the one decoder: PIL, RGBA composited on white, ``convert("RGB")``); ``"crop"``: width 518,
  height ``round(h * (518 / w) / 14) * 14`` (a slight stretch), PIL bicubic, centre-cropped to 518
  rows when taller; ``"pad"``: longest side 518, the other rounded the same way, padded with 1.0 to
  518 x 518 (the floor half of the padding goes left / top); images of different shapes in one call
  are padded with 1.0 to the largest H and W.
- :func:`preprocess_frames` does the same for decoded frames (``(H0, W0, 3)`` uint8 RGB arrays, e.g.
  video frames) and also returns each frame's :class:`Resize`; :func:`upstream_resize` is the size
  rule alone, :func:`place` puts a result on a larger model canvas (white, floor half left / top).

The cover / fit mapping (:func:`fit`, :func:`prepare`, :func:`prepare_batch`: aspect ratio kept, OpenCV
kernels) stays for training crops. :class:`Resize` records either mapping so results (intrinsics,
pixels, depth maps) can be expressed in the original image: ``u = scale_x * x + offset_x``,
``v = scale_y * y + offset_y`` (:meth:`Resize.to_source_points`, :func:`depth_to_source`).

Coordinates are continuous pixel coordinates in which an image of width W spans [0, W] (its centre
is W / 2, the convention of ``cx = W / 2`` in :mod:`edgescene.core.geometry`): PIL's resize maps
[0, W0] onto [0, W], and crops and pads shift by whole pixels, so the mapping is exact for the
upstream path. Imports numpy, Pillow, OpenCV and the standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgescene.core.images import (
    DEFAULT_MAX_PIXELS,
    ORIENTATIONS,
    check_pixels,
    decode_image,
    decode_image_float,
    max_pixels,
    open_image_checked,
    probe_image,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "check_pixels",
    "max_pixels",
    "open_image_checked",
    "Resize",
    "fit",
    "prepare",
    "prepare_batch",
    "model_size_for",
    "MODES",
    "PAD_VALUE",
    "TARGET_SIZE",
    "ORIENTATIONS",
    "load_and_preprocess_images",
    "preprocess_frames",
    "upstream_resize",
    "place",
    "resize_pixels",
    "decode_image",
    "depth_to_source",
    "upstream_size",
    "choose_model_size",
]

MODES = ("crop", "pad")
PAD_VALUE = 1.0  # white, as upstream's pad mode
TARGET_SIZE = 518  # upstream's long side (VGGT-1B was trained at 518)


PATCH = 14


@dataclass(frozen=True)
class Resize:
    """Mapping from source pixels (x, y) to model pixels (u, v): ``u = scale * x + offset_x``.

    ``mode="crop"``: offsets <= 0 (the source overhangs the target); ``"pad"``: offsets >= 0.
    """

    src_h: int
    src_w: int
    dst_h: int
    dst_w: int
    scale: float  # x scale (and y scale unless scale_y is given)
    offset_x: float
    offset_y: float
    mode: str
    scale_y: float | None = None  # upstream's size rule stretches y slightly (height rounded to 14)
    resized_h: int | None = None  # whole-pixel size the source was resized to (upstream path)
    resized_w: int | None = None

    @property
    def scale_x(self) -> float:
        return self.scale

    @property
    def sy(self) -> float:
        return self.scale if self.scale_y is None else self.scale_y

    def matrix(self) -> np.ndarray:
        """(3, 3) float64 homogeneous map from source to model pixels."""
        return np.array([[self.scale, 0.0, self.offset_x], [0.0, self.sy, self.offset_y], [0.0, 0.0, 1.0]])

    @classmethod
    def from_provenance(cls, record: dict) -> Resize:
        """The mapping back from a :meth:`describe` record (report.json ``preprocessing.frames``,
        cameras_source.json ``frames``, or a depth NPZ's arrays)::

            npz = np.load("out/depth/00000.npz")
            depth_in_photo = depth_to_source(npz["depth"], Resize.from_provenance(npz))
        """

        def get(key):
            value = record[key]
            return value.tolist() if hasattr(value, "tolist") else value

        (sh, sw), (mh, mw), (rh, rw) = get("source_hw"), get("model_hw"), get("resized_hw")
        (ox, oy), (sx, sy) = get("offset_xy"), get("scale_xy")
        return cls(
            int(sh),
            int(sw),
            int(mh),
            int(mw),
            float(sx),
            float(ox),
            float(oy),
            str(get("mode")),
            scale_y=float(sy),
            resized_h=int(rh),
            resized_w=int(rw),
        )

    def describe(self) -> dict:
        """JSON-ready provenance: source size, resized size, crop / pad offsets, model input size.

        ``offset_x`` / ``offset_y`` are where the resized image's top-left corner lands in the model
        input (negative: that many pixels were cropped away; positive: padding).
        """
        rh, rw, y0, x0 = self.placement()
        return {
            "source_hw": [self.src_h, self.src_w],
            "resized_hw": [rh, rw],
            "offset_xy": [x0, y0],
            "model_hw": [self.dst_h, self.dst_w],
            "scale_xy": [self.scale, self.sy],
            "mode": self.mode,
        }

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
        scale = np.array([self.scale, self.sy])
        p = points.astype(np.float64)
        return ((p - off) / scale if to_source else p * scale + off).astype(dt)

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
        if self.resized_h is not None and self.resized_w is not None:
            return self.resized_h, self.resized_w, int(self.offset_y), int(self.offset_x)
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
        mask[max(y0, 0) : min(y0 + rh, self.dst_h), max(x0, 0) : min(x0 + rw, self.dst_w)] = True
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
        raise ValueError(
            f"rgb is {rgb.shape[0]}x{rgb.shape[1]} but resize expects "
            f"{resize.src_h}x{resize.src_w}; call fit() with this image's size"
        )
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
    out[:, ty0:ty1, tx0:tx1] = img[ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0].transpose(2, 0, 1)
    return out


def prepare_batch(
    frames: Sequence[np.ndarray], dst_h: int, dst_w: int, mode: Literal["crop", "pad"] = "crop"
) -> tuple[np.ndarray, list[Resize]]:
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
        raise ValueError(
            f"long_side must be a multiple of {multiple} (the patch size), got {long_side}; "
            f"e.g. {max(multiple, round(long_side / multiple) * multiple)}"
        )
    short = min(src_h, src_w) * long_side / max(src_h, src_w)
    short = max(multiple, round(short / multiple) * multiple)
    return (long_side, short) if src_h > src_w else (short, long_side)


def prepare_depth(depth: np.ndarray, resize: Resize) -> np.ndarray:
    """GT depth (H0, W0) -> (dst_h, dst_w) through the same mapping as :func:`prepare`.

    Nearest-neighbour sampling (depth is never blended across edges); pixels outside the image
    (padding) and non-finite ones become 0 (no depth).
    """
    import cv2

    d: np.ndarray = np.asarray(depth, dtype=np.float32)
    if d.shape != (resize.src_h, resize.src_w):
        raise ValueError(f"depth is {d.shape[0]}x{d.shape[1]} but the image is {resize.src_h}x{resize.src_w}")
    d = np.where(np.isfinite(d), d, 0.0).astype(np.float32)
    rh, rw, y0, x0 = resize.placement()
    if (rh, rw) != d.shape:
        d = cv2.resize(d, (rw, rh), interpolation=cv2.INTER_NEAREST_EXACT)
    out = np.zeros((resize.dst_h, resize.dst_w), dtype=np.float32)
    ty0, tx0 = max(y0, 0), max(x0, 0)
    ty1, tx1 = min(y0 + rh, resize.dst_h), min(x0 + rw, resize.dst_w)
    out[ty0:ty1, tx0:tx1] = d[ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0]
    return out


def load_rgb(path) -> np.ndarray:
    """A dataset image for :func:`prepare`: (H, W, 3) RGB under the one decoding policy
    (:mod:`edgescene.core.images`: pixels as stored, RGBA on white, grey replicated): uint8, or
    float32 in [0, 1] for 16-bit grey / 32-bit / float files, which keep their precision
    (:func:`~edgescene.core.images.decode_image_float`). ValueError when it cannot be read."""
    if probe_image(path).bits > 8:
        return decode_image_float(path)
    return decode_image(path)


# ----------------------------------------------------------------------------- upstream-exact path


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(repr(m) for m in MODES)}, got {mode!r}")


def upstream_size(
    src_h: int, src_w: int, mode: Literal["crop", "pad"] = "crop", target_size: int = TARGET_SIZE, patch: int = PATCH
) -> tuple[int, int]:
    """Upstream's resized ``(h, w)`` before its crop / pad (Python's ``round``: halves go to even).

    ``"crop"``: w = target, h = ``round(src_h * (target / src_w) / 14) * 14``. ``"pad"``: the longest
    side (width on ties) = target, the other rounded the same way. ``patch``: 14 as upstream (16 for
    a VGGT with a DINOv3 patch embedding).
    """
    src_h, src_w = _positive_int(src_h, "src_h"), _positive_int(src_w, "src_w")
    target, patch = _positive_int(target_size, "target_size"), _positive_int(patch, "patch")
    _check_mode(mode)
    if target % patch:
        raise ValueError(f"target_size must be a multiple of the patch size {patch}, got {target}")
    if mode == "pad" and src_h > src_w:
        h, w = target, round(src_w * (target / src_h) / patch) * patch
    else:
        h, w = round(src_h * (target / src_w) / patch) * patch, target
    if h < patch or w < patch:
        raise ValueError(
            f"a {src_w}x{src_h} (W x H) image is too elongated for a {target}-pixel model input: "
            f"its short side would round to {min(h, w)} pixels (under one {patch}-pixel patch); "
            f"crop it to an aspect ratio under {target // patch}:1 first"
        )
    return h, w


def upstream_resize(
    src_h: int, src_w: int, mode: Literal["crop", "pad"] = "crop", target_size: int = TARGET_SIZE, patch: int = PATCH
) -> Resize:
    """The :class:`Resize` of upstream's ``load_and_preprocess_images`` for one image.

    ``"crop"``: model input ``min(h, target) x target``, rows centre-cropped (floor half on top);
    ``"pad"``: ``target x target``, the image centred with the floor half of the padding left / top.
    """
    rh, rw = upstream_size(src_h, src_w, mode, target_size, patch)
    if mode == "crop":
        dst_h, dst_w = min(rh, target_size), rw
        y0, x0 = -((rh - dst_h) // 2), 0
    else:
        dst_h = dst_w = target_size
        y0, x0 = (target_size - rh) // 2, (target_size - rw) // 2
    return Resize(
        src_h,
        src_w,
        dst_h,
        dst_w,
        rw / src_w,
        float(x0),
        float(y0),
        mode,
        scale_y=rh / src_h,
        resized_h=rh,
        resized_w=rw,
    )


def place(resize: Resize, dst_h: int, dst_w: int) -> Resize:
    """``resize`` put on a larger ``dst_h x dst_w`` canvas, centred, the floor half of the padding
    left / top (upstream's padding of mixed shapes, and a fixed-size artifact larger than the input)."""
    dst_h, dst_w = _positive_int(dst_h, "dst_h"), _positive_int(dst_w, "dst_w")
    if dst_h < resize.dst_h or dst_w < resize.dst_w:
        raise ValueError(f"cannot place a {resize.dst_h}x{resize.dst_w} input on a smaller {dst_h}x{dst_w} canvas")
    rh, rw, y0, x0 = resize.placement()
    dy, dx = (dst_h - resize.dst_h) // 2, (dst_w - resize.dst_w) // 2
    return Resize(
        resize.src_h,
        resize.src_w,
        dst_h,
        dst_w,
        resize.scale,
        float(x0 + dx),
        float(y0 + dy),
        resize.mode,
        scale_y=resize.sy,
        resized_h=rh,
        resized_w=rw,
    )


def resize_pixels(rgb: np.ndarray, resize: Resize) -> np.ndarray:
    """``(H0, W0, 3)`` uint8 RGB -> ``(3, dst_h, dst_w)`` float32 in [0, 1] through ``resize``.

    Resized with PIL bicubic on uint8, then ``/ 255`` in float32 (upstream's ``to_tensor``), cropped
    or padded with 1.0 as ``resize`` places it. Float input (in [0, 1]) is resized channel by channel
    with PIL's float bicubic.
    """
    from PIL import Image

    rgb = _as_uint8_or_float(rgb)
    if rgb.shape[:2] != (resize.src_h, resize.src_w):
        raise ValueError(f"rgb is {rgb.shape[0]}x{rgb.shape[1]} but resize expects {resize.src_h}x{resize.src_w}")
    rh, rw, y0, x0 = resize.placement()
    if rgb.dtype == np.uint8:
        img = (
            rgb
            if (rh, rw) == rgb.shape[:2]
            else np.asarray(Image.fromarray(rgb, "RGB").resize((rw, rh), Image.Resampling.BICUBIC))
        )
        img = img.astype(np.float32) / np.float32(255.0)
    else:
        img = (
            np.stack(
                [
                    np.asarray(
                        Image.fromarray(np.ascontiguousarray(rgb[..., c]), "F").resize(
                            (rw, rh), Image.Resampling.BICUBIC
                        )
                    )
                    for c in range(3)
                ],
                axis=-1,
            )
            if (rh, rw) != rgb.shape[:2]
            else rgb
        )
        img = np.clip(img, 0.0, 1.0).astype(np.float32)
    out = np.full((3, resize.dst_h, resize.dst_w), PAD_VALUE, dtype=np.float32)
    ty0, tx0 = max(y0, 0), max(x0, 0)
    ty1, tx1 = min(y0 + rh, resize.dst_h), min(x0 + rw, resize.dst_w)
    out[:, ty0:ty1, tx0:tx1] = img[ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0].transpose(2, 0, 1)
    return out


def preprocess_frames(
    frames: Sequence[np.ndarray], mode: Literal["crop", "pad"] = "crop", target_size: int = TARGET_SIZE
) -> tuple[np.ndarray, list[Resize]]:
    """Decoded frames (``(H0, W0, 3)`` uint8 RGB arrays, or objects with an ``rgb`` array) ->
    ``images (S, 3, H, W) float32 in [0, 1]`` exactly as upstream preprocesses image files, and one
    :class:`Resize` per frame (mixed shapes padded with 1.0 to the largest H and W)."""
    arrays = [np.asarray(getattr(f, "rgb", f)) for f in frames]
    if not arrays:
        raise ValueError("preprocess_frames needs at least one frame")
    resizes = []
    for i, rgb in enumerate(arrays):
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"frame {i}: expected (H, W, 3) RGB, got {rgb.shape}")
        resizes.append(upstream_resize(rgb.shape[0], rgb.shape[1], mode, target_size))
    height, width = max(r.dst_h for r in resizes), max(r.dst_w for r in resizes)
    resizes = [place(r, height, width) for r in resizes]
    images = np.empty((len(arrays), 3, height, width), np.float32)
    for i, (rgb, r) in enumerate(zip(arrays, resizes, strict=True)):
        images[i] = resize_pixels(rgb, r)
    return images, resizes


def load_and_preprocess_images(
    image_path_list,
    mode: Literal["crop", "pad"] = "crop",
    orientation: Literal["none", "exif"] = "none",
    target_size: int = TARGET_SIZE,
) -> np.ndarray:
    """Image files -> ``(S, 3, H, W) float32 in [0, 1]``, upstream's ``load_and_preprocess_images``.

    H and W are multiples of 14: ``"crop"`` gives ``min(round(h * 518 / w / 14) * 14, 518) x 518``
    for one image (e.g. 294 x 518 for 16:9), ``"pad"`` gives 518 x 518. Use
    :func:`preprocess_frames` on decoded arrays to get the :class:`Resize` of each image as well.
    """
    paths = (
        [image_path_list]
        if isinstance(image_path_list, (str, bytes)) or hasattr(image_path_list, "__fspath__")
        else list(image_path_list)
    )
    if not paths:
        raise ValueError("at least one image is required")
    _check_mode(mode)
    images, _ = preprocess_frames([decode_image(p, orientation) for p in paths], mode, target_size)
    return images


def choose_model_size(
    src_h: int,
    src_w: int,
    mode: Literal["crop", "pad"],
    served: Sequence[tuple[int, int]] | None,
    long_side: int = TARGET_SIZE,
    patch: int | None = None,
) -> tuple[Resize, str]:
    """The mapping of a ``src_h x src_w`` frame onto what a model serves, and a note when it differs
    from upstream's.

    ``served`` None: any size (the PyTorch backend): upstream's rule at ``long_side``. Otherwise the
    first that applies: upstream's size itself; the smallest served size that contains it (padded
    with white, the whole frame still seen); else the frame fitted inside the largest served size
    (smaller than upstream's input, still whole). ``patch``: the size rule's multiple (default 14 as
    upstream; with served sizes, the patch size they all share: 14, else 16, else 1).
    """
    if patch is None:
        dims = [d for size in served or () for d in size] + [long_side]
        patch = next((p for p in (PATCH, 16) if all(d % p == 0 for d in dims)), 1)
    base = upstream_resize(src_h, src_w, mode, long_side, patch)
    if served is None:
        return base, ""
    served = [(int(h), int(w)) for h, w in served]
    if (base.dst_h, base.dst_w) in served:
        return base, ""
    containing = [s for s in served if s[0] >= base.dst_h and s[1] >= base.dst_w]
    want = f"upstream would feed {base.dst_h}x{base.dst_w}"
    if containing:
        h, w = min(containing, key=lambda s: s[0] * s[1])
        return place(base, h, w), f"padded to {h}x{w}, the smallest size the model serves ({want})"
    h, w = max(served, key=lambda s: s[0] * s[1])
    fitted = fit(src_h, src_w, h, w, "pad")
    return fitted, (
        f"fitted whole inside {h}x{w}, the largest size the model serves ({want}; "
        "export the model at that size to feed it)"
    )


def depth_to_source(
    depth: np.ndarray, resize: Resize, interpolation: Literal["nearest", "linear"] = "nearest"
) -> np.ndarray:
    """A model-resolution map ``(dst_h, dst_w)`` (depth, confidence) -> ``(src_h, src_w)`` float32 in
    the original image's pixels.

    Each source pixel centre ``(x + 0.5, y + 0.5)`` is mapped through ``resize`` and sampled
    (nearest by default: depth is never blended across edges). Source pixels the model did not see
    (cropped away) are NaN. Depth values are unchanged (depth along the camera z axis does not
    depend on the image scale).
    """
    import cv2

    d = np.asarray(depth, dtype=np.float32)
    if d.shape != (resize.dst_h, resize.dst_w):
        raise ValueError(f"depth is {d.shape} but the model input of this resize is {resize.dst_h}x{resize.dst_w}")
    xs = (np.arange(resize.src_w) + 0.5) * resize.scale + resize.offset_x - 0.5
    ys = (np.arange(resize.src_h) + 0.5) * resize.sy + resize.offset_y - 0.5
    map_x = np.broadcast_to(xs[None, :], (resize.src_h, resize.src_w)).astype(np.float32)
    map_y = np.broadcast_to(ys[:, None], (resize.src_h, resize.src_w)).astype(np.float32)
    flag = cv2.INTER_NEAREST if interpolation == "nearest" else cv2.INTER_LINEAR
    out = cv2.remap(d, map_x, map_y, flag, borderMode=cv2.BORDER_CONSTANT, borderValue=float("nan"))
    outside = (map_x < -0.5) | (map_x > resize.dst_w - 0.5) | (map_y < -0.5) | (map_y > resize.dst_h - 0.5)
    out[outside] = np.nan
    return out
