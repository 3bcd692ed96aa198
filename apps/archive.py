"""A job's output folder as a zip archive, streamed: written chunk by chunk as it is sent, so a
large reconstruction (hundreds of depth files) needs neither a temporary file nor its size in memory.

:func:`output_files` lists what may be served (regular files inside the folder, links skipped);
:func:`zip_chunks` yields the archive's bytes (stored, not deflated: PLY, GLB and NPZ barely
compress, and deflating would cost the server's CPU; ZIP64 where sizes need it). Standard library
only.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["output_files", "zip_chunks"]

CHUNK = 1 << 20


def output_files(folder: Path) -> list[tuple[str, int]]:
    """(relative POSIX path, size in bytes) of every regular file under ``folder``, sorted; symbolic
    links (to files or folders) are left out, so nothing outside the folder is ever listed."""
    found = []
    for root, dirs, files in os.walk(folder):  # does not follow links to folders
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        for name in files:
            path = Path(root, name)
            if path.is_symlink() or not path.is_file():
                continue
            found.append((path.relative_to(folder).as_posix(), path.stat().st_size))
    return sorted(found)


class _Chunks:
    """A write-only, non-seekable file: zipfile writes into it, :func:`zip_chunks` takes what it wrote."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def zip_chunks(folder: Path, files: list[tuple[str, int]] | None = None) -> Iterator[bytes]:
    """The zip archive of ``files`` (default: :func:`output_files`) under ``folder``, in chunks of
    about :data:`CHUNK` bytes. A file that vanishes meanwhile ends the archive with an OSError."""
    sink = _Chunks()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:  # type: ignore[arg-type]
        for name, _ in files if files is not None else output_files(folder):
            with open(folder / name, "rb") as source, archive.open(name, "w", force_zip64=True) as member:
                while data := source.read(CHUNK):
                    member.write(data)
                    if chunk := sink.take():
                        yield chunk
            if chunk := sink.take():
                yield chunk
    if chunk := sink.take():  # the central directory
        yield chunk
