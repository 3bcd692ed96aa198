"""What an existing ``manifest.json`` lets an ``edgescene preprocess`` run skip.

A source keeps its previous entries and files untouched when its size and mtime, its output files,
its metadata and the options that shape every output (:data:`RELEVANT_OPTIONS`) are unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgescene.core.manifest import MANIFEST_NAME, Entry, Manifest, ManifestError, read_manifest
from edgescene.train.data.metadata import user_metadata
from edgescene.train.data.outputs import is_output_of

RELEVANT_OPTIONS = ("size", "max_video_frames", "tile_size")


def read_previous(output_dir: Path, overwrite: bool) -> Manifest | None:
    """The output folder's manifest, or None when there is none (or an unreadable one and ``overwrite``)."""
    if not (output_dir / MANIFEST_NAME).is_file():
        return None
    try:
        return read_manifest(output_dir)
    except ManifestError as exc:
        if overwrite:
            return None
        raise ValueError(f"{exc}; move it away or pass --overwrite to start over") from exc


def changed_options(previous: Manifest | None, options: dict[str, Any]) -> list[str]:
    """The relevant options whose values differ from the previous manifest's (none without one)."""
    return [k for k in RELEVANT_OPTIONS if previous is not None and previous.options.get(k) != options[k]]


def entries_by_source(entries: list[Entry]) -> dict[str, list[Entry]]:
    by_source: dict[str, list[Entry]] = {}
    for e in entries:
        by_source.setdefault(e.source, []).append(e)
    return by_source


def entries_match(
    entries: list[Entry], size: int, mtime_ns: int, base: str, meta: dict[str, Any], output_dir: Path
) -> bool:
    """Whether a source's previous entries still hold: same size and mtime, same output names and
    user metadata, and every output file still there."""
    for e in entries:
        if e.source_size != size or e.source_mtime_ns != mtime_ns:
            return False
        if not is_output_of(e.path, base):
            return False
        if user_metadata(e.metadata) != user_metadata(meta) or not (output_dir / e.path).is_file():
            return False
    return True
