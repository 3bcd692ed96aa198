"""Keyframes ready for the model: keyframe selection, the model's input size and upstream VGGT's
preprocessing, frame by frame, with a record of how each frame got there.

:class:`FramePreparer` turns decoded frames (:class:`~edgescene.runtime.frames.Frame`, or (H, W, 3)
uint8 RGB arrays) into :class:`PreparedFrame` (the model input, the points' colours, a
:class:`~edgescene.runtime.stream.FrameInfo` and the seconds its input stages took), or None for a
frame that is not a keyframe. It records what came in (frames seen, revisit hints, the model input
size fixed at the first frame, size notes, per keyframe the provenance of its pixels) and never
touches the stream: :func:`edgescene.runtime.reconstruct.run` hands its keyframes to
:meth:`StreamingReconstruction.push <edgescene.runtime.stream.StreamingReconstruction.push>`, which can
run on another thread (the read-ahead pipeline prepares on one, the model runs on another).

Imports numpy, the core and the runtime's keyframe selection only (never torch).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgescene.core.preprocess import Resize, choose_model_size, resize_pixels
from edgescene.runtime.calibration import Calibration, to_model_pixels
from edgescene.runtime.frames import Frame
from edgescene.runtime.keyframes import Decision
from edgescene.runtime.stream import INPUT_STAGES, FrameInfo

__all__ = ["FramePreparer", "PreparedFrame"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedFrame:
    """A keyframe ready for the model."""

    image: np.ndarray  # (3, H, W) float32 in [0, 1], the model input
    colors: np.ndarray  # (H, W, 3) uint8, the colours of its points
    info: FrameInfo
    stages: dict[str, float]  # decode / keyframes / preprocess seconds of this frame and the skipped ones before it


class FramePreparer:
    """Keyframe selection and preprocessing of one input, frame after frame.

    selector: a keyframe selector (:mod:`edgescene.runtime.keyframes`: frame -> Decision);
    served_sizes: the (H, W) sizes the model serves (None: any multiple of ``patch``); mode: "crop"
    or "pad"; long_side: upstream's size rule at this long side; patch: the multiple sizes
    are rounded to (None: the served sizes decide); calibration: known intrinsics
    (:mod:`edgescene.runtime.calibration`), carried into each keyframe's model pixels
    (``FrameInfo.intrinsics``; a keyframe it does not cover raises CalibrationError at once).
    The model input size is fixed at the first frame (windows are batches); a later frame of another
    size is padded onto it, or fitted whole inside it (noted once in ``notes``).
    """

    def __init__(
        self,
        selector: Callable[[np.ndarray], Decision],
        served_sizes: Sequence[tuple[int, int]] | None,
        mode: Literal["crop", "pad"],
        long_side: int,
        patch: int | None,
        calibration: Calibration | None = None,
    ) -> None:
        self._selector = selector
        self._calibration = calibration
        self._served = served_sizes
        self._mode = mode
        self._long_side = long_side
        self._patch = patch
        self.frames_seen = 0
        self.revisits: list[dict] = []  # DINOv3 revisit hints: {"frame", "keyframe"}
        self.model_hw: tuple[int, int] | None = None  # chosen at the first frame
        self.provenance: list[dict] = []  # per keyframe: how its pixels reached the model
        self.notes: list[str] = []
        self._resize: Resize | None = None
        self._unattached = dict.fromkeys(INPUT_STAGES, 0.0)  # seconds since the last keyframe

    def prepare(self, frame: Frame | np.ndarray, decode_s: float = 0.0) -> PreparedFrame | None:
        """The next frame as a keyframe for the model, or None when it is not one (``decode_s``: what
        decoding it took; a skipped frame's seconds go with the next keyframe)."""
        if isinstance(frame, np.ndarray):
            frame = Frame(index=self.frames_seen, timestamp_s=None, rgb=frame, source=f"array#{self.frames_seen}")
        self.frames_seen += 1
        self._unattached["decode_s"] += decode_s
        start = time.perf_counter()
        decision = self._selector(frame.rgb)
        self._unattached["keyframes_s"] += time.perf_counter() - start
        if decision.revisit_of is not None:
            self.revisits.append({"frame": frame.index, "keyframe": decision.revisit_of})
        if not decision.keep:
            return None
        start = time.perf_counter()
        if self._resize is None or (self._resize.src_h, self._resize.src_w) != frame.rgb.shape[:2]:
            self._resize = self._choose(frame)
        image = resize_pixels(frame.rgb, self._resize)
        colors = np.clip(np.rint(image.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
        self._unattached["preprocess_s"] += time.perf_counter() - start
        provenance = {
            "index": frame.index,
            "orientation": getattr(frame, "orientation", "none"),
            "rotation_deg": getattr(frame, "rotation_deg", 0),
            **self._resize.describe(),
        }
        given = None
        if self._calibration is not None:
            h0, w0 = frame.rgb.shape[:2]
            given = to_model_pixels(self._calibration.for_frame(frame.source, (w0, h0)), self._resize)
            provenance["intrinsics"] = "given"
        self.provenance.append(provenance)
        info = FrameInfo(
            index=frame.index,
            source=frame.source,
            timestamp_s=frame.timestamp_s,
            reason=decision.reason,
            revisit_of=decision.revisit_of,  # a DINOv3 revisit: loop closure verifies it first
            resize=self._resize,
            provenance=provenance,
            intrinsics=given,
        )
        return PreparedFrame(image, colors, info, self.leftover_stages())

    def leftover_stages(self) -> dict[str, float]:
        """The input seconds not yet handed on with a keyframe (frames skipped since the last one),
        now reset: the stream adds them to its last window at the end."""
        stages, self._unattached = self._unattached, dict.fromkeys(INPUT_STAGES, 0.0)
        return stages

    def _choose(self, frame: Frame) -> Resize:
        h0, w0 = frame.rgb.shape[:2]
        served = self._served if self.model_hw is None else [self.model_hw]
        resize, note = choose_model_size(h0, w0, self._mode, served, self._long_side, self._patch)
        if self.model_hw is None:
            self.model_hw = (resize.dst_h, resize.dst_w)
        if note:
            note = f"{w0}x{h0} (W x H) frames: {note}"
            if note not in self.notes:
                self.notes.append(note)
                log.warning("%s", note)
        return resize
