"""Give memory back to the operating system between a server's jobs.

A long-running server allocates and frees hundreds of megabytes per job (decoded frames, model
inputs and outputs, the fused map) on several threads (job workers, read-ahead, write-behind, live
streams). glibc's allocator keeps freed memory in per-thread arenas for reuse, so the process's
resident size climbs to its high-water mark and stays there: measured 551 MB after the first sample
job and 1814 MB after 50 more (``scripts/service_reliability.py``, section ``memory``).
:func:`release_memory` collects Python's cycles and asks glibc to return every arena's free pages
(``malloc_trim(0)``); the service calls it after each job and each live stream. Elsewhere (musl,
macOS) it only collects. Standard library only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading

__all__ = ["release_memory"]

log = logging.getLogger(__name__)

_lock = threading.Lock()
_libc: ctypes.CDLL | None | bool = False  # False: not looked up yet; None: no malloc_trim here


def _malloc_trim():
    global _libc
    if _libc is False:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            _libc = libc if libc is not None and hasattr(libc, "malloc_trim") else None
        except OSError:
            _libc = None
    return None if _libc is None or _libc is False else _libc.malloc_trim


def release_memory() -> bool:
    """Collect garbage and return free heap pages to the system; True where glibc's malloc_trim ran."""
    with _lock:  # one trim at a time: it walks every arena
        gc.collect()
        trim = _malloc_trim()
        if trim is None:
            return False
        trim(0)
        return True
