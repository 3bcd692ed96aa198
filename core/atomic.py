"""The one atomic file writer: a temporary file beside the target, then ``os.replace``.

Every file edgescene writes atomically (artifact and manifest JSON, outputs, scene caches,
checkpoints, engines, Triton configs, reports) goes through :func:`atomic_write`, so they all
behave the same:

- The temporary file lies in the target's folder (same file system, so the rename is atomic) and
  is named ``.<name>.<8 hex>.tmp``: hidden and recognisably temporary.
- Its data are flushed and fsynced before ``os.replace``, so after a crash or power loss the
  target holds the old content or the new, never a truncated file. A reader sees either.
- It gets the permissions ``open(path, "w")`` gives a new file: 0o666 less the umask (0o644
  under the usual umask 022), not ``tempfile.mkstemp``'s owner-only 0o600, so a server running
  as another user (Triton in a container) can read it. The mode of a replaced file is not kept.
- On any error, KeyboardInterrupt included, the temporary file is removed and the target is left
  as it was (or absent). The exception propagates.
- The folder must exist: a missing one raises FileNotFoundError naming it (NotADirectoryError when
  it is a file). Callers that want it created make it first
  (``path.parent.mkdir(parents=True, exist_ok=True)``).

Writers that want a path (``np.savez``, ``torch.save``) take the file object instead; images go
through ``cv2.imencode`` and :func:`atomic_write_bytes`.

Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal, overload

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text"]

_MAX_STEM = 200  # bytes of the target name kept in the temporary one: within the usual 255-byte limit


@overload
def atomic_write(
    path: str | os.PathLike[str], mode: Literal["wb"] = "wb", *, encoding: str = "utf-8"
) -> contextlib.AbstractContextManager[IO[bytes]]: ...
@overload
def atomic_write(
    path: str | os.PathLike[str], mode: Literal["w"], *, encoding: str = "utf-8"
) -> contextlib.AbstractContextManager[IO[str]]: ...
def atomic_write(
    path: str | os.PathLike[str], mode: str = "wb", *, encoding: str = "utf-8"
) -> contextlib.AbstractContextManager[IO[Any]]:
    """Context manager: a file object open for writing; ``path`` gets its content only if the
    ``with`` block finishes without an exception (see the module docstring for the guarantees).

    ``mode``: ``"wb"`` (bytes) or ``"w"`` (text in ``encoding``, ``"\\n"`` line endings).

    ``with atomic_write(path) as f: torch.save(state, f)``
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode: expected 'wb' or 'w', got {mode!r}")
    return _atomic_write(Path(path), mode, encoding)


@contextlib.contextmanager
def _atomic_write(target: Path, mode: str, encoding: str) -> Iterator[IO[Any]]:
    folder = target.parent
    if not folder.is_dir():
        if folder.exists():
            raise NotADirectoryError(f"cannot write {target}: {folder} is a file, not a folder")
        raise FileNotFoundError(f"cannot write {target}: folder {folder} does not exist")
    stem = os.fsdecode(os.fsencode(target.name)[:_MAX_STEM])
    tmp = folder / f".{stem}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 less the umask, like open()
    try:
        if mode == "wb":
            f: IO[Any] = os.fdopen(fd, "wb")
        else:
            f = os.fdopen(fd, "w", encoding=encoding, newline="\n")
    except BaseException:
        os.close(fd)
        _remove(tmp)
        raise
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` (bytes or any buffer: bytearray, memoryview, a contiguous numpy array,
    TensorRT's IHostMemory) to ``path`` atomically; returns the path."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (``encoding``, ``"\\n"`` line endings); returns the path."""
    with atomic_write(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)
