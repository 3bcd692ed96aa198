"""Image files and bytes to pixels: the one decoder every entry point reads images through.

:func:`decode_image` ``(source, orientation="none", what=None) -> (H, W, 3) uint8 RGB``, where
``source`` is a path or the file's bytes (a streamed frame). The policy is upstream VGGT's
``load_and_preprocess_images`` (what ``edgescene reconstruct`` feeds its model), the same wherever
an image enters, so the runtime, the service's ``/stream``, the trainers, the benches and the
viewer see the same pixels for the same file:

- Pillow decodes. The pixel limit (:func:`max_pixels`: ``EDGESCENE_MAX_PIXELS``, default
  :data:`DEFAULT_MAX_PIXELS`) is checked from the header, before any pixel is decoded.
- ``orientation="none"`` (the default, as upstream): pixels as stored, the EXIF Orientation tag is
  ignored (a phone's portrait JPEG stays landscape). ``"exif"``: the tag is applied (JPEG, PNG,
  WebP; Pillow's TIFF decoder applies it in both modes, as it does upstream).
- RGBA: composited on white (Pillow's 8-bit ``alpha_composite``), as upstream. Other alpha (grey +
  alpha, a palette's transparency) is dropped by ``convert("RGB")``, as upstream.
- Palette, grey, CMYK, YCbCr, 1-bit: ``convert("RGB")`` (grey replicated to three channels).
- 16-bit grey (``I;16``), 32-bit integer (``I``) and float (``F``) images, which Pillow would clip,
  are scaled linearly to 8 bit: ``rint(v * 255 / 65535)`` (an ``I`` image whose values all fit in
  0..255 is kept as is; ``F`` is clipped to [0, 1], NaN 0). 16-bit RGB / RGBA files keep the high
  byte of each sample (Pillow's 8-bit RGB modes).
- Problems are ``ValueError`` naming the file or frame (``what``) and the fix: empty data, data no
  decoder recognises, a truncated or corrupt file (:class:`UndecodableImage`, a ``ValueError``),
  and an image above the pixel limit.

:func:`decode_image_float` is the same policy in float32 for trainers that need 16-bit precision:
``(H, W, 3) float32 in [0, 1]``, the pixels of :func:`decode_image` divided by 255, except that
16-bit grey, ``I`` and ``F`` images keep their precision (``v / 65535``). Always
``np.rint(decode_image_float(x) * 255) == decode_image(x)``. :func:`probe_image` reads the header
only (size, channels, bits per sample). Imports numpy, Pillow and the standard library only.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ORIENTATIONS",
    "ImageInfo",
    "UndecodableImage",
    "check_pixels",
    "decode_image",
    "decode_image_float",
    "max_pixels",
    "open_image_checked",
    "probe_image",
]

Source = str | os.PathLike | bytes | bytearray | memoryview
ORIENTATIONS = ("none", "exif")
# Decompression-bomb guard: the most pixels one image or video frame may have (a 16-bit RGBA image of
# this size is 800 MB decoded). EDGESCENE_MAX_PIXELS overrides it; every decoder checks it from the
# file's header, before decoding.
DEFAULT_MAX_PIXELS = 100_000_000
_FIX = "re-save it as PNG or JPEG"
_HIGH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # scaled to 8 bit, not clipped


class UndecodableImage(ValueError):
    """Empty data, data no decoder recognises, or a truncated / corrupt image."""


@dataclass(frozen=True)
class ImageInfo:
    """What an image's header says: ``width x height``, ``channels`` (1 grey, 2 grey + alpha, 3, 4
    with alpha; a palette counts as 3, or 4 with transparency) and ``bits`` per sample as decoded (8;
    16 for 16-bit grey; 32 for ``I`` / ``F``; a 16-bit RGB file decodes to 8)."""

    width: int
    height: int
    channels: int
    bits: int
    mode: str  # Pillow's mode


def max_pixels() -> int:
    """The per-image pixel limit: ``EDGESCENE_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`."""
    value = os.environ.get("EDGESCENE_MAX_PIXELS", "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"EDGESCENE_MAX_PIXELS must be a positive integer, got {value!r}")
    return int(value)


def check_pixels(width: int, height: int, what: str, limit: int | None = None) -> None:
    """ValueError naming the size and the limit when ``width x height`` exceeds it."""
    limit = max_pixels() if limit is None else limit
    if width * height > limit:
        raise ValueError(
            f"{what} is {width}x{height} ({width * height / 1e6:.1f} megapixels), above the limit of "
            f"{limit / 1e6:.1f} megapixels: downscale it, or raise EDGESCENE_MAX_PIXELS if this machine has "
            "the memory"
        )


def _is_bytes(source) -> bool:
    return isinstance(source, (bytes, bytearray, memoryview))


def _what(source, what: str | None) -> str:
    if what is not None:
        return what
    return "image bytes" if _is_bytes(source) else f"image {Path(os.fspath(source)).name}"


@contextlib.contextmanager
def open_image_checked(path, what: str | None = None):
    """``PIL.Image.open(path)`` (a path, a file object or bytes) with the pixel limit checked from the
    header, before any decoding.

    Pillow's own guard is set to the same limit (its warning is silenced: the check here is the
    error); ValueError names the size and the limit. Other open errors propagate (the caller knows
    what an unreadable file means to it).
    """
    from PIL import Image

    if _is_bytes(path):
        what = _what(path, what)
        path = io.BytesIO(bytes(path))
    elif what is None:
        what = f"image {Path(str(getattr(path, 'name', path))).name}"
    limit = max_pixels()
    # Pillow checks its global guard in open() only: set it for this call and put it back, so that other
    # Pillow users in the process (COLMAP export, Gradio) keep their own limit
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
    except Image.DecompressionBombError as exc:  # Pillow stops at twice its limit, before we see the size
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)) / 1e6:.1f} megapixels" if found else "too many pixels"
        raise ValueError(
            f"{what} has {size}, above the limit of {limit / 1e6:.1f} megapixels: downscale it, "
            "or raise EDGESCENE_MAX_PIXELS if this machine has the memory"
        ) from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    with opened:
        check_pixels(opened.width, opened.height, what)
        yield opened


def _empty(source) -> bool:
    if _is_bytes(source):
        return len(source) == 0
    try:
        return os.path.getsize(source) == 0
    except OSError:
        return False  # missing / unreadable: Pillow's error says so


def _open(source: Source, orientation: str, what: str):
    """The decoded Pillow image (size checked first, orientation applied), detached from the file."""
    from PIL import ImageOps, UnidentifiedImageError

    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {', '.join(ORIENTATIONS)}, got {orientation!r}")
    if _empty(source):
        raise UndecodableImage(f"cannot decode {what}: it is empty (0 bytes); {_FIX}")
    try:
        with open_image_checked(source, what) as opened:  # the size is known (and checked) before decoding
            img = ImageOps.exif_transpose(opened) if orientation == "exif" else opened
            img.load()
            return img.copy() if img is opened else img
    except UnidentifiedImageError as exc:
        raise UndecodableImage(f"cannot decode {what}: not an image format this decoder reads; {_FIX}") from exc
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, EOFError) as exc:  # truncated or corrupt data
        raise UndecodableImage(f"cannot decode {what}: the data is truncated or corrupt ({exc}); {_FIX}") from exc


def _high_precision(img) -> np.ndarray | None:
    """``I;16`` / ``I`` / ``F`` images -> float64 in [0, 1] (None for other modes)."""
    if img.mode not in _HIGH_MODES:
        return None
    arr = np.asarray(img)
    if arr.dtype.kind == "f":
        return np.clip(np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    peak = arr.max(initial=0)
    top = 65535.0 if img.mode.startswith("I;16") or 255 < peak <= 65535 else 255.0
    return np.clip(arr.astype(np.float64) / top, 0.0, 1.0)


def _to_rgb8(img) -> np.ndarray:
    from PIL import Image

    high = _high_precision(img)
    if high is not None:
        img = Image.fromarray(np.rint(high * 255.0).astype(np.uint8), "L")
    if img.mode == "RGBA":
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
    return np.ascontiguousarray(np.asarray(img.convert("RGB")))


def decode_image(source: Source, orientation: Literal["none", "exif"] = "none", what: str | None = None) -> np.ndarray:
    """One image (a path, or the file's bytes) -> ``(H, W, 3)`` uint8 RGB under the module's policy.

    ``what``: how errors name it (default ``"image <file name>"``, or ``"image bytes"``). ValueError
    (:class:`UndecodableImage` for empty, unknown, truncated or corrupt data) naming it and the fix;
    ``FileNotFoundError`` for a missing path.
    """
    what = _what(source, what)
    return _to_rgb8(_open(source, orientation, what))


def decode_image_float(
    source: Source, orientation: Literal["none", "exif"] = "none", what: str | None = None
) -> np.ndarray:
    """:func:`decode_image` in ``(H, W, 3) float32 in [0, 1]``, 16-bit grey / ``I`` / ``F`` images
    keeping their precision (``v / 65535``) instead of being rounded to 8 bit."""
    what = _what(source, what)
    img = _open(source, orientation, what)
    high = _high_precision(img)
    if high is None:
        return _to_rgb8(img).astype(np.float32) / np.float32(255.0)
    grey = high.astype(np.float32)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def probe_image(source: Source, what: str | None = None) -> ImageInfo:
    """The header of an image (nothing decoded): size, channels, bits per sample. Same errors as
    :func:`decode_image` (the pixel limit included)."""
    from PIL import UnidentifiedImageError

    what = _what(source, what)
    if _empty(source):
        raise UndecodableImage(f"cannot decode {what}: it is empty (0 bytes); {_FIX}")
    try:
        with open_image_checked(source, what) as opened:
            mode = opened.mode
            size = opened.size
            transparent = "transparency" in opened.info
    except UnidentifiedImageError as exc:
        raise UndecodableImage(f"cannot decode {what}: not an image format this decoder reads; {_FIX}") from exc
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, EOFError) as exc:
        raise UndecodableImage(f"cannot decode {what}: the data is truncated or corrupt ({exc}); {_FIX}") from exc
    channels = {"1": 1, "L": 1, "LA": 2, "La": 2, "P": 4 if transparent else 3, "PA": 4, "RGBA": 4, "RGBa": 4}.get(
        mode, 1 if mode in _HIGH_MODES else 3
    )
    bits = 32 if mode in ("I", "F") else 16 if mode.startswith("I;16") else 8
    return ImageInfo(width=size[0], height=size[1], channels=channels, bits=bits, mode=mode)
