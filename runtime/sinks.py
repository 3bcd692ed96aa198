"""Where a reconstruction's results go: the sinks of :func:`edgescene.runtime.reconstruct.run`.

``run`` is the one assembly of the pipeline (decode, keyframes, preprocessing, the model, alignment,
fusion); what differs between the CLI, the Python API, a service job, the live ``/stream``, the
web app and the benches is only what happens to the results, and that is a sink:

- :class:`FolderSink`: per-keyframe depth and confidence files into an output folder (written
  behind the stream on their own thread when asked), cameras kept for the outputs written at the
  end; after loop closure, each depth file is rescaled with its window's correction.
- :class:`MemorySink`: every keyframe's result in memory (short inputs: ``Reconstructor.run``),
  corrected after loop closure.
- :class:`ViewerSink`: after each window, the map, every camera and the keyframes' thumbnails for a
  live viewer (``on_window``).
- :class:`Tee`: several sinks at once (a folder and a viewer).

A sink's hooks are called in this order: ``start(run)`` once, ``keyframe(result)`` for each
keyframe as it becomes final (on the thread that integrates windows), ``window(run)`` after each
window joins the map (the caller's thread), ``flush()`` after the last window, ``loops_closed(run)``
when loop closure moved cameras and map, ``finish(run)`` at the end of a run that succeeded, and
``close()`` always (also when the run failed or was cancelled). ``run`` is the
:class:`~edgescene.runtime.reconstruct.Run` in progress: ``run.stream`` (the map, the cameras, the
timings) and ``run.frames`` (what came in). Numpy only; never torch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgescene.core.sim3 import Sim3
from edgescene.runtime.outputs import OutputFolder, rescale_depth_npz, thumbnail, write_depth_npz
from edgescene.runtime.pipeline import WriteBehind
from edgescene.runtime.stream import KeyframeResult, StreamingReconstruction

if TYPE_CHECKING:  # the type only: reconstruct imports this module
    from edgescene.runtime.reconstruct import Run

LIVE_THUMBNAILS = 500  # keyframe thumbnails kept for a live viewer (older ones are dropped)


class Sink:
    """What a run does with its results; every hook does nothing unless a subclass says otherwise."""

    def start(self, run: Run) -> None:
        """Before the first frame."""

    def keyframe(self, result: KeyframeResult) -> None:
        """One keyframe's final estimate, once, in keyframe order."""

    def window(self, run: Run) -> None:
        """A window joined the map (``run.stream`` holds the map and the cameras so far)."""

    def flush(self) -> None:
        """Every keyframe was handed over: finish pending work (re-raise its errors)."""

    def loops_closed(self, run: Run) -> None:
        """Loop closure moved the cameras and the map (``run.stream.depth_scale(k)``: keyframe k's depth factor)."""

    def rescaled(self, run: Run, c: Sim3) -> None:
        """The whole reconstruction moved by ``c`` into metres (``--scale-from``): every depth scales by ``c.s``."""

    def finish(self, run: Run) -> None:
        """The run succeeded: the last word on the final state."""

    def close(self) -> None:
        """Always last: stop threads, release what the sink holds."""


class Tee(Sink):
    """Hand every hook to each of ``sinks``, in order."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def start(self, run: Run) -> None:
        for s in self.sinks:
            s.start(run)

    def keyframe(self, result: KeyframeResult) -> None:
        for s in self.sinks:
            s.keyframe(result)

    def window(self, run: Run) -> None:
        for s in self.sinks:
            s.window(run)

    def flush(self) -> None:
        for s in self.sinks:
            s.flush()

    def loops_closed(self, run: Run) -> None:
        for s in self.sinks:
            s.loops_closed(run)

    def rescaled(self, run: Run, c: Sim3) -> None:
        for s in self.sinks:
            s.rescaled(run, c)

    def finish(self, run: Run) -> None:
        for s in self.sinks:
            s.finish(run)

    def close(self) -> None:
        errors = []
        for s in self.sinks:
            try:
                s.close()
            except Exception as exc:  # noqa: BLE001 - every sink gets closed; the first error is raised
                errors.append(exc)
        if errors:
            raise errors[0]


class MemorySink(Sink):
    """Every keyframe's :class:`KeyframeResult` in ``results`` (depth, colours, point-map head)."""

    def __init__(self) -> None:
        self.results: list[KeyframeResult] = []

    def keyframe(self, result: KeyframeResult) -> None:
        self.results.append(result)

    def loops_closed(self, run: Run) -> None:
        corrections = run.stream.corrections
        if corrections is None:
            return
        self._move(lambda r: corrections[run.stream.keyframe_windows[r.keyframe]])

    def rescaled(self, run: Run, c: Sim3) -> None:
        self._move(lambda r: c)

    def _move(self, correction: Callable[[KeyframeResult], Sim3]) -> None:
        """Each kept result moved by its ``correction(result)``: depth scaled, placement composed."""
        for n, r in enumerate(self.results):
            c = correction(r)
            self.results[n] = replace(r, depth=(r.depth * c.s).astype(np.float32), placement=c @ r.placement)


class FolderSink(Sink):
    """Depth files into ``folder`` (``depth/00000.npz``, ...), cameras kept in ``kept``.

    ``write_behind``: files are written on a thread, at most ``2 x window`` waiting (the stream goes
    on meanwhile); otherwise on the integrating thread. Write time is recorded per window in the
    stream's ``write_s``.
    """

    def __init__(self, folder: OutputFolder, write_behind: bool, depth: int = 16) -> None:
        self.folder = folder
        self.kept: list[KeyframeResult] = []
        self._writer = WriteBehind(depth=depth, name="edgescene-writer") if write_behind else None
        self._stream: StreamingReconstruction | None = None

    def path(self, keyframe: int) -> Path:
        return self.folder.path(f"depth/{keyframe:05d}.npz")

    def start(self, run: Run) -> None:
        self._stream = run.stream

    def _write(self, result: KeyframeResult) -> None:
        start = time.perf_counter()
        p = result.info.provenance
        write_depth_npz(
            self.path(result.keyframe),
            result.depth,
            result.depth_conf,
            frame_index=np.int64(result.info.index),
            source_hw=np.int64(p["source_hw"]),
            resized_hw=np.int64(p["resized_hw"]),
            offset_xy=np.int64(p["offset_xy"]),
            model_hw=np.int64(p["model_hw"]),
            scale_xy=np.float64(p["scale_xy"]),
            rotation_deg=np.int64(p["rotation_deg"]),
            orientation=np.str_(p["orientation"]),
            mode=np.str_(p["mode"]),
        )
        if self._stream is not None:
            self._stream.write_s[result.window] += time.perf_counter() - start

    def keyframe(self, result: KeyframeResult) -> None:
        self.kept.append(result.cameras_only())  # depth goes to disk
        if self._writer is not None:
            self._writer.submit(self._write, result)
        else:
            self._write(result)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.close()  # every depth file written (re-raises a failed write)

    def loops_closed(self, run: Run) -> None:
        for k in self.kept:
            factor = run.stream.depth_scale(k.keyframe)
            if factor != 1.0:
                rescale_depth_npz(self.path(k.keyframe), factor)

    def rescaled(self, run: Run, c: Sim3) -> None:
        if c.s != 1.0:
            for k in self.kept:
                rescale_depth_npz(self.path(k.keyframe), c.s)

    def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):  # the error in flight, if any, is the one to report
                self._writer.close()


class ViewerSink(Sink):
    """``on_window(update)`` after each window and once at the end (the corrected scene after loop
    closure): ``points`` (N, 3), ``colors`` (N, 3) uint8, ``weights`` (N,), ``extrinsics``
    (K, 3, 4), ``intrinsics`` (K, 3, 3), ``image_hw`` and ``thumbnails`` (a small uint8 image per
    keyframe, None for all but the last :data:`LIVE_THUMBNAILS`)."""

    def __init__(self, on_window: Callable[[dict], Any]) -> None:
        self.on_window = on_window
        self.thumbnails: list[np.ndarray | None] = []

    def keyframe(self, result: KeyframeResult) -> None:
        if result.rgb is None:
            return
        self.thumbnails.append(thumbnail(result.rgb))
        if len(self.thumbnails) > LIVE_THUMBNAILS:
            self.thumbnails[-LIVE_THUMBNAILS - 1] = None  # bounded: older frustums keep what they drew

    def window(self, run: Run) -> None:
        self.on_window(self.update(run))

    def finish(self, run: Run) -> None:
        self.on_window(self.update(run))

    def update(self, run: Run) -> dict:
        extrinsics, intrinsics = run.stream.trajectory()
        points, colors = run.stream.cloud()
        weights = run.stream.map.weights if run.stream.map is not None else np.zeros(0)
        return {
            "points": points,
            "colors": colors,
            "weights": weights,
            "extrinsics": extrinsics,
            "intrinsics": intrinsics,
            "image_hw": run.frames.model_hw,  # set by the first keyframe, before any window
            "thumbnails": list(self.thumbnails),
        }


__all__ = ["LIVE_THUMBNAILS", "FolderSink", "MemorySink", "Sink", "Tee", "ViewerSink"]
