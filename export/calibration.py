"""Calibration batches for static int8 quantization: real frames, prepared exactly as the runtime does.

Activation ranges observed on random noise are not those of photographs, so the ranges come from
real frames: the user's ``--calibration`` source (an image folder, a list of images or a video; read
with :func:`edgescene.runtime.frames.open_frames`) or, by default, the bundled sample video. Frames
are taken evenly over the source (up to ``max_frames``), fitted to the model input with the
runtime's ``crop`` preprocessing, and grouped into consecutive batches of ``batch_frames`` frames:
VGGT sees short sequences of neighbouring views, as it will at run time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgescene.export.graphs import ExportGraph

DEFAULT_CALIBRATION_FRAMES = 32


def default_calibration_source() -> Path:
    from edgescene.assets import sample_dir

    return sample_dir() / "sample.mp4"


def calibration_feeds(
    graph: ExportGraph, source: str | Path | None, batch_frames: int, max_frames: int = DEFAULT_CALIBRATION_FRAMES
) -> tuple[list[dict[str, np.ndarray]], str]:
    """(feeds per batch, description of what was read) for ``graph`` from ``source`` (default: the sample video)."""
    from edgescene.runtime.frames import open_frames
    from edgescene.runtime.preprocess import prepare_batch

    if batch_frames < 1 or max_frames < 1:
        raise ValueError(f"batch_frames and max_frames must be >= 1, got {batch_frames} and {max_frames}")
    path = Path(source) if source is not None else default_calibration_source()
    frames = open_frames(path)
    every_s = None
    if frames.kind == "video" and frames.duration_s and frames.duration_s > 0:
        every_s = frames.duration_s / max_frames  # spread the frames over the whole video
        frames = open_frames(path, every_s=every_s, max_frames=max_frames)
    else:
        frames = open_frames(path, max_frames=max_frames)
    # prepared one by one: only model-sized copies are kept, whatever the source resolution
    prepared = [prepare_batch([f.rgb], graph.height, graph.width, "crop")[0][0] for f in frames]
    if not prepared:
        raise ValueError(f"no frames could be read from calibration source {path}")
    batch_frames = min(batch_frames, len(prepared))
    feeds = [
        graph.feeds(np.stack(prepared[start : start + batch_frames]))
        for start in range(0, len(prepared) - batch_frames + 1, batch_frames)
    ]
    return feeds, f"{len(feeds) * batch_frames} frames of {path} in batches of {batch_frames}"
