"""File-type detection and decoding for ``edgescene preprocess``: images, GeoTIFFs and videos.

Everything here turns one source file into numpy pixels plus what the file says about itself
(detected modality, georeferencing, radiometric scaling); resizing, tiling, naming and writing
live in :mod:`edgescene.train.data.preprocess`. A file that cannot be used raises
:class:`ReadError` with a message meant for the user; no other exception is expected.

Pixel arrays returned: ``(H, W, 3) uint8`` RGB, or ``(H, W)`` ``uint8`` / ``uint16`` single channel.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
TIFF_EXTENSIONS = (".tif", ".tiff")
GRAY_IS_IR_EXTENSIONS = (".png", ".tif", ".tiff")  # single-channel files of other formats are photos

GEO_TAGS = {
    33550: "ModelPixelScaleTag",
    33922: "ModelTiepointTag",
    34264: "ModelTransformationTag",
    34735: "GeoKeyDirectoryTag",
}
_GEOGRAPHIC_CRS_KEY, _RASTER_TYPE_KEY, _PROJECTED_CRS_KEY = 2048, 1025, 3072
_USER_DEFINED = 32767
SATELLITE_PERCENTILES = (2.0, 98.0)
_PERCENTILE_SAMPLES = 4_000_000  # per band; larger images are subsampled on a regular grid


class ReadError(Exception):
    """A source file that cannot be used; the message says why, in words meant for the user."""


def file_kind(path: str | Path) -> str | None:
    """``"image"``, ``"video"`` or None (unsupported), from the extension (case-insensitive)."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


@dataclass(frozen=True)
class GeoInfo:
    """Georeferencing of a source raster.

    ``transform`` is ``(a, b, c, d, e, f)`` with ``x_geo = a*col + b*row + c``,
    ``y_geo = d*col + e*row + f``, where (col, row) = (0, 0) is the top-left *corner* of the top-left
    pixel (GDAL's convention; PixelIsPoint files are shifted by half a pixel to match). None when the
    file only has ground control points or GeoKeys.
    """

    crs: str | None
    transform: tuple[float, float, float, float, float, float] | None


@dataclass
class DecodedImage:
    pixels: np.ndarray  # (H, W, 3) uint8 RGB or (H, W) uint8/uint16
    modality: str  # detected: "visible" | "ir" | "satellite"
    geo: GeoInfo | None = None
    radiometric_scaling: dict[str, Any] | None = None


@dataclass
class Frame:
    index: int  # decoded frame number, from 0
    timestamp_s: float | None
    pixels: np.ndarray


@dataclass
class DecodedVideo:
    modality: str  # "visible", or "ir" for grayscale streams
    frame_count: int  # decoded frames in the whole video
    frames: Iterator[Frame]  # the sampled frames, in order, decoded lazily


# ---------------------------------------------------------------- images


def read_image(path: str | Path) -> DecodedImage:
    """Decode an image file; TIFFs go through tifffile (GeoTIFF tags, bands and sample types Pillow
    cannot hold), others through the one decoder (:mod:`edgescene.core.images`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise ReadError("empty file")
    if suffix in TIFF_EXTENSIONS:
        return _read_tiff(path)
    pixels = _decode(path)
    return _to_output_format(pixels, from_opencv=False, gray_is_ir=suffix in GRAY_IS_IR_EXTENSIONS)


def _decode(path: Path) -> np.ndarray:
    """The pixels of :func:`edgescene.core.images.decode_image` (pixels as stored: the EXIF
    Orientation tag is not applied, as in ``edgescene reconstruct``; RGBA on white; 16-bit RGB to
    8 bit): ``(H, W, 3)`` uint8, or for a grey (or grey + alpha) file its single channel ``(H, W)``,
    uint8, or uint16 at full precision for 16-bit (and 32-bit / float) samples."""
    from edgescene.core.images import decode_image, decode_image_float, probe_image

    what = f"image {path.name}"
    try:
        info = probe_image(path, what)
        if info.channels > 2:
            return decode_image(path, what=what)
        if info.bits > 8:
            return np.rint(decode_image_float(path, what=what)[..., 0] * 65535.0).astype(np.uint16)
        return np.ascontiguousarray(decode_image(path, what=what)[..., 0])
    except ValueError as exc:
        raise ReadError(str(exc)) from exc


def _read_tiff(path: Path) -> DecodedImage:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
            geo = read_geo_info(page)
            axes = page.axes
            try:
                pixels = page.asarray()
            except Exception as exc:  # noqa: BLE001 - e.g. a compression tifffile cannot decode: try Pillow
                try:
                    pixels = _decode(path)
                    axes = "YXS" if pixels.ndim == 3 else "YX"
                except ReadError:
                    raise ReadError(f"cannot decode TIFF pixels ({exc})") from exc
    except ReadError:
        raise
    except Exception as exc:
        raise ReadError(f"cannot read TIFF: the file is corrupt or not a TIFF ({exc})") from exc
    if pixels.ndim == 3 and axes.startswith("S"):  # planar configuration: (bands, H, W)
        pixels = np.moveaxis(pixels, 0, -1)
    if pixels.ndim not in (2, 3) or min(pixels.shape[:2]) == 0:
        raise ReadError(f"unsupported TIFF layout: axes {axes!r}, shape {tuple(pixels.shape)}")
    if geo is not None:
        return _satellite(pixels, geo)
    return _to_output_format(pixels, from_opencv=False, gray_is_ir=True)


def _to_output_format(pixels: np.ndarray, *, from_opencv: bool, gray_is_ir: bool) -> DecodedImage:
    """Non-georeferenced pixels -> 8-bit RGB (visible) or 8/16-bit single channel (IR)."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 3 and pixels.shape[2] == 2:  # gray + alpha: the alpha carries no IR signal
        pixels = pixels[:, :, 0]
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.ndim == 2:
        gray, scaling = _single_channel(pixels)
        if gray_is_ir:
            return DecodedImage(gray, "ir", radiometric_scaling=scaling)
        gray8 = gray if gray.dtype == np.uint8 else _uint16_to_uint8(gray)
        return DecodedImage(np.repeat(gray8[:, :, None], 3, axis=2), "visible", radiometric_scaling=scaling)
    if pixels.shape[2] == 4 and pixels.dtype in (np.uint8, np.uint16):
        return DecodedImage(composite_on_white(pixels), "visible")
    rgb = pixels[:, :, :3]
    if rgb.dtype == np.uint8:
        return DecodedImage(np.ascontiguousarray(rgb), "visible")
    if rgb.dtype == np.uint16:
        return DecodedImage(_uint16_to_uint8(rgb), "visible")
    scaled, scaling = percentile_scale(rgb)
    return DecodedImage(scaled, "visible", radiometric_scaling=scaling)


def _satellite(pixels: np.ndarray, geo: GeoInfo) -> DecodedImage:
    """GeoTIFF: the first 3 bands as RGB (8-bit kept, other types percentile-scaled per band);
    a 1- or 2-band raster keeps its first band as single channel (8/16-bit kept)."""
    if pixels.ndim == 3 and pixels.shape[2] >= 3:
        rgb = pixels[:, :, :3]
        if rgb.dtype == np.uint8:
            return DecodedImage(np.ascontiguousarray(rgb), "satellite", geo=geo)
        scaled, scaling = percentile_scale(rgb)
        return DecodedImage(scaled, "satellite", geo=geo, radiometric_scaling=scaling)
    band = pixels if pixels.ndim == 2 else pixels[:, :, 0]
    if band.dtype == bool:
        band = band.astype(np.uint8) * 255
    gray, scaling = _single_channel(band)
    return DecodedImage(gray, "satellite", geo=geo, radiometric_scaling=scaling)


def _single_channel(band: np.ndarray) -> tuple[np.ndarray, dict[str, Any] | None]:
    """uint8 / uint16 kept bit for bit; any other type (int16, float, ...) min-max scaled to uint16."""
    if band.dtype in (np.uint8, np.uint16):
        return np.ascontiguousarray(band), None
    values = band.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        raise ReadError(f"single-channel image of type {band.dtype} holds no finite value")
    low, high = float(values[finite].min()), float(values[finite].max())
    span = high - low if high > low else 1.0
    scaled = np.where(finite, (values - low) / span, 0.0)
    out = np.round(np.clip(scaled, 0.0, 1.0) * 65535.0).astype(np.uint16)
    return out, {
        "method": "minmax",
        "source_dtype": str(band.dtype),
        "output_bit_depth": 16,
        "bands": [{"low": low, "high": high}],
    }


def percentile_scale(
    bands: np.ndarray, percentiles: tuple[float, float] = SATELLITE_PERCENTILES
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(H, W, C)`` of any numeric type -> uint8, each band mapped linearly from its low..high
    percentile to 0..255 and clipped. Percentiles come from the whole image (subsampled on a regular
    grid above a few million pixels), so every tile of an image shares one scaling."""
    h, w, c = bands.shape
    step = max(1, math.ceil(math.sqrt(h * w / _PERCENTILE_SAMPLES)))
    out = np.empty((h, w, c), dtype=np.uint8)
    records = []
    for i in range(c):
        band = bands[:, :, i]
        sample = band[::step, ::step].astype(np.float64).ravel()
        sample = sample[np.isfinite(sample)]
        low, high = (float(v) for v in np.percentile(sample, percentiles)) if sample.size else (0.0, 1.0)
        span = high - low if high > low else 1.0
        values = (band.astype(np.float32) - np.float32(low)) * np.float32(255.0 / span)
        out[:, :, i] = np.round(np.clip(np.nan_to_num(values, nan=0.0), 0.0, 255.0)).astype(np.uint8)
        records.append({"low": low, "high": high})
    return out, {
        "method": "percentile",
        "percentiles": list(percentiles),
        "source_dtype": str(bands.dtype),
        "output_bit_depth": 8,
        "bands": records,
    }


def _uint16_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Full-range linear 16 -> 8 bit (65535 -> 255), rounded."""
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """``(H, W, 4)`` uint8/uint16 RGBA -> ``(H, W, 3)`` uint8 RGB over a white background (as VGGT's loader)."""
    full = 255.0 if rgba.dtype == np.uint8 else 65535.0
    rgb = rgba[:, :, :3].astype(np.float32) / full
    alpha = rgba[:, :, 3:4].astype(np.float32) / full
    out = rgb * alpha + (1.0 - alpha)
    return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


# ---------------------------------------------------------------- GeoTIFF tags


def read_geo_info(page: Any) -> GeoInfo | None:
    """GeoInfo from a tifffile page, or None when the page carries none of the GeoTIFF tags."""
    tags = {code: page.tags.get(code) for code in GEO_TAGS}
    if all(tag is None for tag in tags.values()):
        return None
    keys = _geokeys(tags[34735].value) if tags[34735] is not None else {}
    crs = None
    for key in (_PROJECTED_CRS_KEY, _GEOGRAPHIC_CRS_KEY):
        code = keys.get(key)
        if isinstance(code, int) and 0 < code < _USER_DEFINED:
            crs = f"EPSG:{code}"
            break
    transform = None
    if tags[34264] is not None and len(tags[34264].value) >= 8:
        m = [float(v) for v in tags[34264].value]
        transform = (m[0], m[1], m[3], m[4], m[5], m[7])
    elif tags[33550] is not None and tags[33922] is not None and len(tags[33922].value) >= 6:
        sx, sy = (float(v) for v in tags[33550].value[:2])
        i, j, _, x, y, _ = (float(v) for v in tags[33922].value[:6])
        transform = (sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy)
    if transform is not None and keys.get(_RASTER_TYPE_KEY) == 2:  # PixelIsPoint -> corner convention
        a, b, c, d, e, f = transform
        transform = (a, b, c - 0.5 * (a + b), d, e, f - 0.5 * (d + e))
    return GeoInfo(crs=crs, transform=transform)


def _geokeys(directory: Any) -> dict[int, int]:
    """Inline (SHORT) values of a GeoKeyDirectoryTag: {key id: value}."""
    values = [int(v) for v in directory]
    if len(values) < 4:
        return {}
    keys = {}
    for n in range(values[3]):
        entry = values[4 + 4 * n : 8 + 4 * n]
        if len(entry) < 4:
            break
        key, location, _count, value = entry
        if location == 0:
            keys[key] = value
    return keys


# ---------------------------------------------------------------- videos


def sample_indices(frame_count: int, max_frames: int) -> list[int]:
    """``min(max_frames, frame_count)`` frame numbers spread uniformly from the first to the last."""
    k = min(max_frames, frame_count)
    if k <= 0:
        return []
    if k == 1:
        return [0]
    return [int(math.floor(i * (frame_count - 1) / (k - 1) + 0.5)) for i in range(k)]


def read_video(path: str | Path, max_frames: int) -> DecodedVideo:
    """Open a video with PyAV, count its decoded frames (one full decode pass: containers' frame
    counts are often missing or wrong), and return an iterator over the sampled frames."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ReadError("unreadable video: the file has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            pix_fmt = stream.codec_context.pix_fmt or ""
            frame_count = sum(1 for _ in container.decode(stream))
    except ReadError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ReadError(f"unreadable video: {_av_message(exc)}") from exc
    if frame_count == 0:
        raise ReadError("unreadable video: no frame could be decoded")
    if pix_fmt.startswith("gray"):
        modality, out_format = "ir", ("gray" if pix_fmt in ("gray", "gray8") else "gray16le")
    else:
        modality, out_format = "visible", "rgb24"
    indices = sample_indices(frame_count, max_frames)
    return DecodedVideo(modality, frame_count, _iter_frames(path, indices, out_format))


def _iter_frames(path: Path, indices: list[int], out_format: str) -> Iterator[Frame]:
    import av

    wanted = iter(indices)
    target = next(wanted, None)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate) if stream.average_rate else None
            for number, frame in enumerate(container.decode(stream)):
                if target is None:
                    break
                if number != target:
                    continue
                timestamp = frame.time if frame.time is not None else (number / rate if rate else None)
                yield Frame(
                    number,
                    None if timestamp is None else float(timestamp),
                    np.ascontiguousarray(frame.to_ndarray(format=out_format)),
                )
                target = next(wanted, None)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ReadError(f"unreadable video: {_av_message(exc)}") from exc
    if target is not None:
        raise ReadError(f"video decoded fewer frames on the second pass than on the first (frame {target} missing)")


def _av_message(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
