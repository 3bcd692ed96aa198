"""The model sessions ``/stream`` clients share, each owned by the clients using it.

A live stream needs a :class:`~edgescene.runtime.reconstruct.Reconstructor` for its (model, window):
opening one loads the model (seconds, and its memory), so streams of the same (model, window) share
one, and at most ``capacity`` are kept open. :meth:`StreamModels.lease` hands a client one for the
length of its stream and counts it; a session is closed only when no stream holds it:

- a client asking for a (model, window) already open shares it;
- a new one is opened when there is room, or in place of the least recently used *idle* session;
- when every open session is in use by some stream, the new client waits up to ``grace_s`` for one
  to be released (a client that reconnects right after another left is not turned away while the
  server is still closing the other stream), then gets :class:`StreamModelsBusy` (the service
  closes its websocket with 1013, "try again later"): one client never tears down another's session.

Thread-safe: a session is opened outside the lock (other keys are leased meanwhile), and clients of
the key being opened wait for it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StreamModels", "StreamModelsBusy"]


class StreamModelsBusy(RuntimeError):
    """Every open model session is in use and none can be opened: retry when a stream ends."""


@dataclass
class _Entry:
    value: Any
    users: int = 0
    closed: bool = False
    ready: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class StreamModels:
    """At most ``capacity`` sessions, each opened by the ``opener`` of its first :meth:`lease` and
    closed by ``close(session)``."""

    def __init__(self, capacity: int, close: Callable[[Any], None], grace_s: float = 3.0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if grace_s < 0:
            raise ValueError(f"grace_s must be >= 0, got {grace_s}")
        self.capacity = capacity
        self.grace_s = grace_s
        self._close = close
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()  # least recently leased first
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)  # notified whenever a lease ends or an open fails

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def keys(self) -> list[Hashable]:
        """The open sessions' keys, least recently leased first."""
        with self._lock:
            return list(self._entries)

    def users(self, key: Hashable) -> int:
        """How many streams hold ``key``'s session now (0 when idle or not open)."""
        with self._lock:
            entry = self._entries.get(key)
            return entry.users if entry is not None else 0

    @contextlib.contextmanager
    def lease(self, key: Hashable, opener: Callable[[], Any]) -> Iterator[Any]:
        """The session for ``key`` (``opener()`` opens it if it is not open), held until the ``with``
        block ends. :class:`StreamModelsBusy` when every slot is taken by sessions in use; the
        opener's exception if opening fails (the next lease of ``key`` tries again)."""
        entry, first = self._acquire(key)
        try:
            if first:  # this lease opens it
                try:
                    entry.value = opener()
                except BaseException as exc:
                    entry.error = exc
                    with self._lock:
                        if self._entries.get(key) is entry:
                            del self._entries[key]
                        self._released.notify_all()
                    raise
                finally:
                    entry.ready.set()
            else:
                entry.ready.wait()
                if entry.error is not None:
                    raise entry.error
            yield entry.value
        finally:
            with self._lock:
                entry.users -= 1
                self._released.notify_all()

    def _acquire(self, key: Hashable) -> tuple[_Entry, bool]:
        """-> (the entry, whether this lease opens it). Waits up to ``grace_s`` for a lease to end
        when every slot holds a session in use."""
        victims: list[_Entry] = []
        deadline = time.monotonic() + self.grace_s
        with self._lock:
            while True:
                entry = self._entries.get(key)
                if entry is not None:  # open, or being opened (perhaps while this client waited): shared
                    entry.users += 1
                    self._entries.move_to_end(key)
                    return entry, False
                if len(self._entries) < self.capacity:
                    break
                idle = next((k for k, e in self._entries.items() if e.users == 0 and e.ready.is_set()), None)
                if idle is not None:
                    victims.append(self._entries.pop(idle))
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StreamModelsBusy(
                        f"all {self.capacity} model sessions of the live stream are in use by other streams; "
                        "retry when one ends (or start the server with a larger --stream-models)"
                    )
                self._released.wait(remaining)
            entry = _Entry(value=None, users=1)
            self._entries[key] = entry
        for victim in victims:  # idle: no stream holds it, none can take it any more
            self._close_entry(victim)
        return entry, True

    def _close_entry(self, entry: _Entry) -> None:
        if not entry.closed and entry.error is None and entry.value is not None:
            entry.closed = True
            self._close(entry.value)

    def close_all(self) -> None:
        """Close every session (the server stops)."""
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            self._close_entry(entry)
