"""Calibration batches for static int8 quantization: real frames, prepared exactly as the runtime does.

Activation ranges observed on random noise are not those of photographs, so the ranges come from
real frames: the user's ``--calibration`` source (an image folder, an image or a video; images
decoded as upstream does, videos with OpenCV's FFmpeg reader) or, by default, the bundled sample
video. Frames are taken evenly over the source (up to ``max_frames``), brought to the model input
as the runtime feeds them (upstream VGGT's preprocessing, the whole frame), and grouped into
consecutive batches of ``batch_frames`` frames: VGGT sees short sequences of neighbouring views, as it will at run time.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgescene.export.graphs import ExportGraph

DEFAULT_CALIBRATION_FRAMES = 32


def default_calibration_source() -> Path:
    from edgescene.assets import sample_dir

    return sample_dir() / "sample.mp4"


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _read_frames(path: Path, max_frames: int) -> list[np.ndarray]:
    """Up to ``max_frames`` RGB uint8 frames spread evenly over a video, an image or a folder of images."""
    import cv2

    from edgescene.core.preprocess import decode_image

    if not path.exists():
        raise ValueError(f"calibration source {path} does not exist; pass an image folder, an image or a video")
    if path.is_dir():
        images = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural)
        if not images:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in calibration folder {path}")
        picks = np.unique(np.linspace(0, len(images) - 1, min(max_frames, len(images))).round().astype(int))
        return [decode_image(images[i]) for i in picks]
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [decode_image(path)]
    capture = cv2.VideoCapture(str(path))  # OpenCV's FFmpeg reader: no PyAV needed to export
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if not capture.isOpened() or count <= 0:
            raise ValueError(f"cannot decode calibration video {path}; pass an image folder instead")
        wanted = set(np.linspace(0, count - 1, min(max_frames, count)).round().astype(int).tolist())
        frames = []
        for index in range(count):
            ok, bgr = capture.read()
            if not ok:
                break
            if index in wanted:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return frames
    finally:
        capture.release()


def calibration_feeds(
    graph: ExportGraph, source: str | Path | None, batch_frames: int, max_frames: int = DEFAULT_CALIBRATION_FRAMES
) -> tuple[list[dict[str, np.ndarray]], str]:
    """(feeds per batch, description of what was read) for ``graph`` from ``source`` (default: the sample video)."""
    from edgescene.core.preprocess import choose_model_size, fit, prepare, resize_pixels

    if batch_frames < 1 or max_frames < 1:
        raise ValueError(f"batch_frames and max_frames must be >= 1, got {batch_frames} and {max_frames}")
    path = Path(source) if source is not None else default_calibration_source()
    size = (graph.height, graph.width)
    prepared = []
    for rgb in _read_frames(path, max_frames):  # as the runtime feeds them, at the export's size
        if graph.family == "vggt":  # upstream VGGT's preprocessing: the whole frame
            resize, _ = choose_model_size(rgb.shape[0], rgb.shape[1], "crop", [size], max(size))
            prepared.append(resize_pixels(rgb, resize))
        else:  # DINOv3 features: the runtime's keyframe embedding crops to cover
            prepared.append(prepare(rgb, fit(rgb.shape[0], rgb.shape[1], *size, "crop")))
    if not prepared:
        raise ValueError(f"no frames could be read from calibration source {path}")
    batch_frames = min(batch_frames, len(prepared))
    feeds = [
        graph.feeds(np.stack(prepared[start : start + batch_frames]))
        for start in range(0, len(prepared) - batch_frames + 1, batch_frames)
    ]
    return feeds, f"{len(feeds) * batch_frames} frames of {path} in batches of {batch_frames}"
