"""One source file turned into outputs in memory: decode, tile, resize, PNG-encode, and describe
each output as a manifest :class:`~edgescene.core.manifest.Entry` (geo transform and camera
adjusted to the output pixels). Nothing is written here: :mod:`edgescene.train.data.outputs` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgescene.core.manifest import Entry
from edgescene.train.data.metadata import output_camera, user_metadata
from edgescene.train.data.outputs import frame_path, image_path, tile_path
from edgescene.train.data.readers import GeoInfo, ReadError, read_image, read_video

Rendered = list[tuple[Entry, bytes]]  # (entry, PNG bytes) per output of one source


@dataclass(frozen=True)
class Job:
    """One source file to (re)process."""

    rel: str
    path: str
    kind: str  # "image" | "video"
    base: str  # output name stem, see outputs.output_bases
    source_size: int
    source_mtime_ns: int
    metadata: dict[str, Any]


# ---------------------------------------------------------------- pixels


def resize_long_side(pixels: np.ndarray, size: int) -> np.ndarray:
    """Long side to ``size``, aspect kept: INTER_AREA when shrinking, INTER_CUBIC when enlarging."""
    import cv2

    h, w = pixels.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = (size, max(1, int(h * scale + 0.5))) if w >= h else (max(1, int(w * scale + 0.5)), size)
    if (new_w, new_h) == (w, h):
        return pixels
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(pixels, (new_w, new_h), interpolation=interpolation)


def tile_grid(width: int, height: int, tile_size: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping (x, y, w, h) tiles, row by row, edge tiles smaller; one tile when it fits."""
    if max(width, height) <= tile_size:
        return [(0, 0, width, height)]
    return [
        (x, y, min(tile_size, width - x), min(tile_size, height - y))
        for y in range(0, height, tile_size)
        for x in range(0, width, tile_size)
    ]


def _encode_png(pixels: np.ndarray) -> bytes:
    import cv2

    bgr = pixels[:, :, ::-1] if pixels.ndim == 3 else pixels
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
    if not ok:
        raise ReadError("could not encode the PNG")
    return buf.tobytes()


def _geo_for_output(geo: GeoInfo, crop: tuple[int, int, int, int], out_w: int, out_h: int) -> dict[str, Any]:
    transform = None
    if geo.transform is not None:
        a, b, c, d, e, f = geo.transform
        x0, y0, w, h = crop
        sx, sy = w / out_w, h / out_h  # source pixels per output pixel
        transform = [a * sx, b * sy, a * x0 + b * y0 + c, d * sx, e * sy, d * x0 + e * y0 + f]
    return {"crs": geo.crs, "transform": transform}


# ---------------------------------------------------------------- entries


def _entry(
    job: Job,
    path: str,
    id_: str,
    pixels: np.ndarray,
    modality: str,
    original: tuple[int, int],
    crop: tuple[int, int, int, int],
    scaling: dict[str, Any] | None = None,
    **fields: Any,
) -> Entry:
    h, w = pixels.shape[:2]
    meta = user_metadata(job.metadata)
    camera, k_scaled = output_camera(job.metadata, crop, w, h)
    if k_scaled is not None and camera is None:
        meta["intrinsics_scaled"] = k_scaled
    if scaling is not None:
        meta["radiometric_scaling"] = scaling
    return Entry(
        id=id_,
        path=path,
        source=job.rel,
        modality=job.metadata.get("modality", modality),
        width=w,
        height=h,
        channels=1 if pixels.ndim == 2 else 3,
        bit_depth=16 if pixels.dtype == np.uint16 else 8,
        original_width=original[0],
        original_height=original[1],
        source_size=job.source_size,
        source_mtime_ns=job.source_mtime_ns,
        metadata=meta,
        camera=camera,
        **fields,
    )


def convert_image(job: Job, size: int, tile_size: int) -> Rendered:
    """An image, tiled when its long side exceeds ``tile_size``, each tile's long side resized to ``size``."""
    image = read_image(job.path)
    h, w = image.pixels.shape[:2]
    grid = tile_grid(w, h, tile_size)
    out = []
    for x, y, tw, th in grid:
        pixels = resize_long_side(image.pixels[y : y + th, x : x + tw], size)
        tiled = len(grid) > 1
        path = tile_path(job.base, x, y) if tiled else image_path(job.base)
        id_ = f"{job.rel}#t{x}_{y}" if tiled else job.rel
        geo = (
            None if image.geo is None else _geo_for_output(image.geo, (x, y, tw, th), pixels.shape[1], pixels.shape[0])
        )
        entry = _entry(
            job,
            path,
            id_,
            pixels,
            image.modality,
            (w, h),
            (x, y, tw, th),
            scaling=image.radiometric_scaling,
            geo=geo,
            tile={"x": x, "y": y, "width": tw, "height": th} if tiled else None,
        )
        out.append((entry, _encode_png(pixels)))
    return out


def convert_video(job: Job, size: int, max_video_frames: int) -> Rendered:
    """Up to ``max_video_frames`` sampled frames of a video, each resized to long side ``size``."""
    video = read_video(job.path, max_video_frames)
    out = []
    for frame in video.frames:
        h, w = frame.pixels.shape[:2]
        pixels = resize_long_side(frame.pixels, size)
        entry = _entry(
            job,
            frame_path(job.base, frame.index),
            f"{job.rel}#f{frame.index}",
            pixels,
            video.modality,
            (w, h),
            (0, 0, w, h),
            sequence=job.rel,
            frame_index=frame.index,
            timestamp_s=frame.timestamp_s,
        )
        out.append((entry, _encode_png(pixels)))
    return out
