"""The live ``/stream``: one client's frames through :func:`edgescene.runtime.reconstruct.run`.

The websocket loop decodes each binary message and hands the frame to a :class:`LiveRun`; the run
(``run(rec, feed, WebSocketSink, pipeline=False, progress=...)``, the one assembly of the pipeline)
works on the session's own thread and answers every frame, in order, through an asyncio queue:

- :class:`FrameFeed`: the frames, a bounded queue the run iterates; ``end()`` finishes the stream
  (its last window runs), ``cancel()`` (a client gone) makes the iteration raise, so the run stops at
  once, without its last window, and the thread ends.
- :class:`WebSocketSink`: a window that joined the map becomes an "update" message, a frame that
  completed none an "ack", the end of the run the "final" message; each carries ``progress``, the
  run's :class:`~edgescene.runtime.progress.Progress` (stage, frames, keyframes, model calls, the
  model line and input size from the first keyframe on; no fraction: a live stream has no length).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from edgescene.runtime.calibration import Calibration
from edgescene.runtime.progress import Progress, ProgressTracker
from edgescene.runtime.reconstruct import Reconstructor, Run, run
from edgescene.runtime.sinks import Sink

PREVIEW_POINTS = 20_000
THREAD_PREFIX = "edgescene-stream"  # each live session's thread: f"{THREAD_PREFIX}-{n}"

_END = object()
_CANCEL = object()
_DONE = object()
_sessions = itertools.count(1)


class SessionClosed(Exception):
    """The client went away: the run stops without finishing its last window."""


def map_message(current: Run, frame_number: int, keyframe: bool, final: bool = False) -> dict:
    """The running reconstruction as JSON: counts, every keyframe's camera, a subsample of the map."""
    core = current.stream
    model_hw = current.frames.model_hw
    extrinsics, intrinsics = core.trajectory()
    message = {
        "type": "final" if final else "update",
        "frame": frame_number,
        "keyframe": keyframe,
        "keyframes": len(extrinsics),
        "windows": core.state.windows,
        "points": len(core.map) if core.map is not None else 0,
        "camera_centers": core.camera_centers().round(5).tolist(),
        "extrinsics": extrinsics.round(6).tolist(),
        "intrinsics": intrinsics.round(4).tolist(),  # model pixels, of images image_hw
        "image_hw": list(model_hw) if model_hw else None,
    }
    if core.map is not None and len(core.map):
        points, colors = core.map.cloud()
        step = max(1, -(-len(points) // PREVIEW_POINTS))  # ceil: the preview never exceeds its cap
        message["preview"] = {
            "points": points[::step].round(4).tolist(),
            "colors": colors[::step].tolist(),
            "every": step,
        }
    return message


class FrameFeed:
    """The frames of one run: ``put`` from the event loop, iterated (blocking) by the run's thread.

    The websocket loop waits for each frame's reply before it reads the next message, so at most one
    frame waits here; ``depth`` bounds it anyway (``put`` raises ``queue.Full`` past it).
    """

    def __init__(self, depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)

    def put(self, rgb: np.ndarray) -> None:
        self._queue.put_nowait(rgb)

    def end(self) -> None:
        """No more frames: the run finishes (its last window, the final message)."""
        self._queue.put_nowait(_END)

    def cancel(self) -> None:
        """The client is gone: drop what waits and make the iteration raise :class:`SessionClosed`.
        Only the event loop puts, so after the drain there is room for the marker."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put_nowait(_CANCEL)

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if item is _CANCEL:
                raise SessionClosed
            yield item


class WebSocketSink(Sink):
    """The replies of a live session, handed to ``post`` (called on the run's thread): per frame an
    "update" (a window joined the map at that frame) or an "ack" (:meth:`progress`, the run's
    progress callback), and the "final" message when the run succeeded."""

    def __init__(self, post: Callable[[Any], None]) -> None:
        self._post = post
        self._run: Run | None = None
        self._update: dict | None = None
        self._progress: Progress | None = None

    def start(self, run: Run) -> None:
        self._run = run

    def window(self, run: Run) -> None:
        self._update = map_message(run, run.frames.frames_seen, True)

    def progress(self, progress: Progress) -> None:
        """The run's progress callback: after each frame (after ``window`` when that frame completed
        one) the frame's reply goes out; the other stages are kept for the final message."""
        self._progress = progress
        if progress.stage != "reconstructing":
            return
        reply, self._update = self._update, None
        if reply is None:
            pmap = self._run.stream.map if self._run is not None else None
            reply = {
                "type": "ack",
                "frame": progress.frames_seen,
                "keyframes_pending": True,
                "points": len(pmap) if pmap is not None else 0,
            }
        reply["progress"] = progress.as_dict()
        self._post(reply)

    def finish(self, run: Run) -> None:
        final = map_message(run, run.frames.frames_seen, False, final=True)
        if self._progress is not None:
            final["progress"] = replace(self._progress, stage="done", fraction=1.0, eta_s=None).as_dict()
        self._post(final)


class LiveRun:
    """One client's run on its own thread (named ``edgescene-stream-<n>``), started with the first frame.

    ``await push(rgb)`` returns that frame's reply, ``await finish()`` the final message; an error of
    the run is raised there (the stream cannot go on). ``await close()`` always: it cancels a run
    still waiting for frames and waits for the thread to end.
    """

    def __init__(self, rec: Reconstructor, calibration: Calibration | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._calibration = calibration
        self.feed = FrameFeed()
        self._replies: asyncio.Queue = asyncio.Queue()
        self._done: asyncio.Future = self._loop.create_future()
        self.sink = WebSocketSink(self._post)
        self.thread = threading.Thread(
            target=self._work, args=(rec,), name=f"{THREAD_PREFIX}-{next(_sessions)}", daemon=True
        )
        self.thread.start()

    def _post(self, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody is left to answer
            self._loop.call_soon_threadsafe(self._replies.put_nowait, item)

    def _work(self, rec: Reconstructor) -> None:
        try:
            run(
                rec,
                self.feed,
                self.sink,
                pipeline=False,
                progress=ProgressTracker(self.sink.progress),
                calibration=self._calibration,
            )
        except SessionClosed:
            pass
        except Exception as exc:  # noqa: BLE001 - handed to the websocket loop, which reports it
            self._post(exc)
        finally:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._set_done)

    def _set_done(self) -> None:
        if not self._done.done():
            self._done.set_result(None)
        self._replies.put_nowait(_DONE)

    async def _reply(self) -> dict:
        item = await self._replies.get()
        if isinstance(item, Exception):
            raise item
        if item is _DONE:
            raise RuntimeError("the reconstruction stopped without an answer")
        return item

    async def push(self, rgb: np.ndarray) -> dict:
        self.feed.put(rgb)
        return await self._reply()

    async def finish(self) -> dict:
        self.feed.end()
        return await self._reply()

    async def close(self) -> None:
        if not self._done.done():
            self.feed.cancel()
        await asyncio.shield(self._done)


__all__ = ["PREVIEW_POINTS", "FrameFeed", "LiveRun", "SessionClosed", "WebSocketSink", "map_message"]
