"""Threads that keep the model busy: read ahead, and write behind, through bounded queues.

:class:`ReadAhead` runs an iterator (decode, keyframe selection, preprocessing) on its own thread,
at most ``depth`` items ahead of the consumer. :class:`WriteBehind` runs calls (depth files) on a
thread, at most ``depth`` waiting. Both hold a bounded number of items whatever the input's
length, re-raise a worker's exception in the caller's thread at the next call (never swallowed),
and stop their thread on ``close()`` (also when the consumer stops early, e.g. a cancelled job).
PyAV decoding, onnxruntime, TensorRT and numpy's large array operations release the GIL, so these
threads overlap with the model for real.

The model thread itself lives in :class:`~edgescene.runtime.stream.StreamingReconstruction`
(``pipelined=True``): window k+1 runs while window k is aligned and fused.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_DONE = object()
_POLL_S = 0.1  # how often a blocked worker checks whether it was told to stop


class ReadAhead(Generic[T]):
    """Iterate ``source`` on a worker thread, at most ``depth`` items ahead of the consumer.

    ``busy_s`` is the worker's time inside ``next(source)`` (decode and whatever the iterator does).
    Use as an iterator; ``close()`` (or leaving a ``with`` block) stops the worker.
    """

    def __init__(self, source: Iterable[T], depth: int, name: str = "read-ahead") -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._items: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._run, args=(iter(source),), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._items.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Iterator[T]) -> None:
        try:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    item = next(source)
                except StopIteration:
                    break
                finally:
                    self.busy_s += time.perf_counter() - start
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, who re-raises it
            self._put(_Failure(exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # a generator's finally blocks (open files, containers) run on this thread

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        item = self._items.get()
        if item is _DONE:
            self._items.put(_DONE)  # further next() calls end too
            raise StopIteration
        if isinstance(item, _Failure):
            raise item.exc
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> ReadAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WriteBehind:
    """Run ``submit(fn, *args)`` calls in order on a worker thread, at most ``depth`` waiting.

    ``busy_s`` is the worker's time inside the calls. ``close()`` waits for every call to finish and
    re-raises the first exception; after an exception no further calls run.
    """

    def __init__(self, depth: int, name: str = "write-behind") -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._calls: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            call = self._calls.get()
            if call is _DONE:
                return
            if self._error is not None:
                continue  # drain without running: the first error is what the caller sees
            fn, args = call
            start = time.perf_counter()
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = exc
            finally:
                self.busy_s += time.perf_counter() - start

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._raise()
        if not self._thread.is_alive():
            raise RuntimeError("this writer is closed")
        self._calls.put((fn, args))

    def close(self) -> None:
        """Finish every submitted call; re-raise the first error any of them raised."""
        if self._thread.is_alive():
            self._calls.put(_DONE)
            self._thread.join()
        self._raise()

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:  # already failing: stop the worker, keep the original error
            with contextlib.suppress(Exception):
                self.close()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


__all__ = ["ReadAhead", "WriteBehind"]
