"""``edgescene preprocess``: a folder of users' imagery -> resized PNGs plus a ``manifest.json``.

Walks ``input_dir`` recursively (sorted; hidden files and folders, the output folder and the
metadata JSON are skipped), decodes each file with :mod:`edgescene.train.data.readers`, and writes
one PNG per image, tile or sampled video frame, described by an :class:`~edgescene.core.manifest.Entry`.

Choices, and why:

- **Visible** images become 8-bit RGB. Alpha is composited on white (as VGGT's loader does); 16-bit
  RGB is mapped linearly to 8 bits (65535 -> 255). Single-channel JPEG/BMP/WebP files are treated
  as photos and become 3-channel RGB.
- **IR** (single-channel PNG/TIFF) keeps its bit depth: 16-bit sources are written as 16-bit
  single-channel PNGs so no radiometric information is lost (thermal cameras store temperatures in
  14-16 bits); only resampling changes the values. Single-channel data of other types (int16,
  float) is mapped min..max to 16 bits, recorded in ``metadata["radiometric_scaling"]``.
- **Satellite** images are TIFFs with GeoTIFF tags (read with tifffile). The first three bands are
  used as RGB (bands beyond the third, e.g. near-infrared, are dropped); 8-bit bands are kept, other
  types (usually 16-bit) are mapped per band from their 2nd..98th percentile to 0..255 and clipped
  (percentiles of the whole image, so all its tiles share one scaling), recorded in
  ``metadata["radiometric_scaling"]``. A 1- or 2-band GeoTIFF keeps its first band as a
  single-channel 8/16-bit image. ``geo`` gives the CRS (``EPSG:<code>`` from the GeoKeys, or null)
  and the affine transform of each *output* pixel grid, pixel (0, 0) at the top-left corner of the
  top-left pixel (GDAL's convention).
- **Tiling**: an image whose long side exceeds ``tile_size`` is cut into non-overlapping
  ``tile_size`` squares (edge tiles smaller), row by row, each then resized on its own; ``tile``
  records the crop in source pixels and the id ends in ``#t<x>_<y>``. Video frames are never
  tiled (a sequence stays a sequence).
- **Resizing**: long side to ``size``, aspect ratio kept; ``INTER_AREA`` when shrinking,
  ``INTER_CUBIC`` when enlarging.
- **Videos**: ``min(max_video_frames, frames)`` frames spread uniformly from the first decoded frame
  to the last (deterministic); grayscale streams become single-channel ``ir`` frames.
- **Metadata JSON** maps source paths (POSIX, relative to ``input_dir``) to free-form objects that
  land in ``Entry.metadata``. ``modality`` overrides the detected label (pixels are left as decoded);
  ``intrinsics`` (3x3, original image) together with ``extrinsics`` (3x4 camera-from-world, or 4x4)
  give ``Entry.camera`` with the intrinsics cropped (tiles) and scaled to the output pixels;
  intrinsics alone go, scaled, to ``metadata["intrinsics_scaled"]``.
- **Outputs** are named after the source path: ``images/<path>.png``, ``tiles/<path>/x<X>_y<Y>.png``,
  ``videos/<path>/f<frame>.png`` (``<path>`` without extension, or with it, as ``name_ext``, when
  two sources differ only by extension).
- **Incremental and safe**: a source whose size and mtime, output files, metadata and options
  (size, max_video_frames, tile_size) are unchanged keeps its entries and files untouched. Files
  are written atomically; an existing file that the previous manifest does not list is never
  replaced without ``overwrite`` (a byte-identical one, as an interrupted run leaves, is adopted).
  Changing the options against an existing manifest needs ``overwrite``. ``overwrite`` permits
  replacing; it does not force unchanged sources to be redone. The manifest is saved every
  200 new entries and at the end, so an interrupted run keeps its progress.
- Per-file problems never stop the run: they become ``{"source", "error"}`` records.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgescene.core.manifest import MANIFEST_NAME, Entry, Manifest, write_manifest
from edgescene.train.data.convert import Job, resize_long_side, tile_grid
from edgescene.train.data.incremental import (
    RELEVANT_OPTIONS,
    changed_options,
    entries_by_source,
    entries_match,
    read_previous,
)
from edgescene.train.data.jobs import Context, run_jobs
from edgescene.train.data.metadata import (
    PREPROCESS_MODALITIES,
    RESERVED_METADATA_KEYS,
    load_metadata,
    metadata_problem,
)
from edgescene.train.data.outputs import output_bases
from edgescene.train.data.readers import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, file_kind

__all__ = [
    "CHECKPOINT_EVERY",
    "PREPROCESS_MODALITIES",
    "RELEVANT_OPTIONS",
    "RESERVED_METADATA_KEYS",
    "PreprocessConfig",
    "PreprocessSummary",
    "ProgressCallback",
    "load_metadata",
    "preprocess_folder",
    "resize_long_side",
    "tile_grid",
]

CHECKPOINT_EVERY = 200

ProgressCallback = Callable[[int, int, str], None]  # (files done, files in total, source just done)


# ---------------------------------------------------------------- configuration and summary


@dataclass(frozen=True)
class PreprocessConfig:
    input_dir: Path
    output_dir: Path
    size: int = 256
    max_video_frames: int = 32
    metadata_json: Path | None = None
    overwrite: bool = False
    tile_size: int = 2048
    workers: int = 1

    def __post_init__(self) -> None:
        for name, low, high in (
            ("size", 16, 16384),
            ("max_video_frames", 1, 100_000),
            ("tile_size", 16, 1 << 20),
            ("workers", 1, 256),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
                raise ValueError(f"{_flag(name)} must be an integer from {low} to {high}, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not isinstance(self.overwrite, bool):
            raise ValueError(f"--overwrite must be True or False, got {self.overwrite!r}")
        object.__setattr__(self, "input_dir", Path(self.input_dir).expanduser().resolve())
        object.__setattr__(self, "output_dir", Path(self.output_dir).expanduser().resolve())
        if not self.input_dir.is_dir():
            raise ValueError(f"--input-dir {self.input_dir} is not an existing folder")
        if self.output_dir == self.input_dir:
            raise ValueError(f"--output-dir must differ from --input-dir (both are {self.input_dir})")
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise ValueError(f"--output-dir {self.output_dir} exists and is not a folder")
        if self.metadata_json is not None:
            object.__setattr__(self, "metadata_json", Path(self.metadata_json).expanduser().resolve())
            if not self.metadata_json.is_file():
                raise ValueError(f"--metadata-json {self.metadata_json} is not an existing file")

    def manifest_options(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "max_video_frames": self.max_video_frames,
            "tile_size": self.tile_size,
            "input_dir": str(self.input_dir),
            "metadata_json": None if self.metadata_json is None else str(self.metadata_json),
        }


@dataclass
class PreprocessSummary:
    input_dir: Path
    output_dir: Path
    manifest_path: Path
    processed: int = 0  # source files (re)processed this run
    skipped_unchanged: int = 0  # source files whose entries and outputs were kept untouched
    failed: int = 0  # source files that became error records
    written: int = 0  # images written this run
    entries: int = 0  # entries in the manifest
    modalities: dict[str, int] = field(default_factory=dict)  # manifest entries per modality
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    removed_sources: list[str] = field(default_factory=list)  # gone from the input; dropped from the manifest
    stale_outputs: int = 0  # files of dropped entries, left on disk
    elapsed_s: float = 0.0

    def format(self) -> str:
        """Plain text, one fact per line, prefixed for grep (``error:``, ``warning:``, ``removed:``)."""
        per_modality = ", ".join(f"{k} {v}" for k, v in sorted(self.modalities.items())) or "none"
        lines = [
            f"preprocess: {self.input_dir} -> {self.output_dir}",
            f"files: processed {self.processed}, skipped_unchanged {self.skipped_unchanged}, failed {self.failed}",
            f"entries: {self.entries} ({per_modality}); images written this run: {self.written}",
        ]
        lines += [f"error: {e['source']}: {e['error']}" for e in self.errors]
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [
            f"removed: {s} (source no longer in the input folder; its outputs are left on disk)"
            for s in self.removed_sources
        ]
        if self.stale_outputs:
            lines.append(f"stale outputs: {self.stale_outputs} files no longer listed in the manifest are left on disk")
        lines += [f"manifest: {self.manifest_path}", f"elapsed: {self.elapsed_s:.2f} s"]
        return "\n".join(lines)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# ---------------------------------------------------------------- the folder


def _walk(config: PreprocessConfig) -> tuple[list[tuple[str, Path]], list[dict[str, str]]]:
    """Sorted (relative posix path, absolute path) of every candidate file, and symlinks pointing outside."""
    files, errors = [], []
    skip = {config.output_dir}
    if config.metadata_json is not None:
        skip.add(config.metadata_json)
    for root, dirs, names in os.walk(config.input_dir):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (root_path / d).resolve() not in skip)
        for name in sorted(names):
            path = root_path / name
            if name.startswith(".") or path.resolve() in skip or path.absolute() in skip:
                continue
            rel = path.relative_to(config.input_dir).as_posix()
            if path.is_symlink() and not path.resolve().is_relative_to(config.input_dir):
                errors.append({"source": rel, "error": "symbolic link pointing outside the input folder; not read"})
                continue
            if path.is_file():
                files.append((rel, path))
    return sorted(files), errors


def preprocess_folder(config: PreprocessConfig, progress: ProgressCallback | None = None) -> PreprocessSummary:
    """Preprocess ``config.input_dir`` into ``config.output_dir`` (see the module docstring).

    ``progress(done, total, source)`` is called once per source file. Raises ValueError before any
    work for a malformed metadata JSON, an unreadable manifest or changed options without
    ``overwrite``; per-file problems are recorded in the manifest's ``errors`` and the summary.
    """
    from edgescene import __version__

    start = time.perf_counter()
    metadata = load_metadata(config.metadata_json) if config.metadata_json is not None else {}
    previous = read_previous(config.output_dir, config.overwrite)
    options = config.manifest_options()
    changed = changed_options(previous, options)
    if previous is not None and previous.entries and changed and not config.overwrite:
        was = ", ".join(f"{_flag(k)} {previous.options.get(k)}" for k in changed)
        now = ", ".join(f"{_flag(k)} {options[k]}" for k in changed)
        raise ValueError(
            f"{config.output_dir} was preprocessed with {was} (now {now}): every output would change; "
            f"pass --overwrite to redo it with the new options, or choose another --output-dir"
        )

    files, errors = _walk(config)
    rels = [rel for rel, _ in files]
    bases, name_errors = output_bases(rels)
    previous_entries = previous.entries if previous is not None else []
    prev_by_source = {} if changed else entries_by_source(previous_entries)
    ctx = Context(
        config.output_dir,
        config.size,
        config.max_video_frames,
        config.tile_size,
        config.overwrite,
        frozenset(e.path for e in previous_entries),
    )
    summary = PreprocessSummary(config.input_dir, config.output_dir, config.output_dir / MANIFEST_NAME)
    present = set(rels)
    summary.warnings = [
        f"metadata key {key!r} matches no file in the input folder" for key in sorted(metadata) if key not in present
    ]
    summary.removed_sources = sorted({e.source for e in previous_entries} - present)
    total, done = len(files) + len(errors), len(errors)
    summary.failed = len(errors)

    def step(rel: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, rel)

    kept: list[Entry] = []
    jobs: list[Job] = []
    for rel, path in files:
        kind = file_kind(path)
        meta = metadata.get(rel, {})
        problem = None
        if kind is None:
            suffix = path.suffix.lower() or "(no extension)"
            problem = (
                f"unsupported file type {suffix} (images: {' '.join(IMAGE_EXTENSIONS)}; "
                f"videos: {' '.join(VIDEO_EXTENSIONS)})"
            )
        problem = problem or name_errors.get(rel) or metadata_problem(meta)
        if problem is not None:
            errors.append({"source": rel, "error": problem})
            summary.failed += 1
            step(rel)
            continue
        stat = path.stat()
        prev = prev_by_source.get(rel)
        if prev and entries_match(prev, stat.st_size, stat.st_mtime_ns, bases[rel], meta, config.output_dir):
            kept.extend(prev)
            summary.skipped_unchanged += 1
            step(rel)
            continue
        jobs.append(Job(rel, str(path), kind, bases[rel], stat.st_size, stat.st_mtime_ns, meta))

    new: list[Entry] = []
    finished: set[str] = set()

    def save(final: bool) -> None:
        pending = [] if final else [e for j in jobs if j.rel not in finished for e in prev_by_source.get(j.rel, [])]
        manifest = Manifest(
            created_by=f"edgescene {__version__} preprocess",
            options=options,
            entries=sorted(kept + new + pending, key=lambda e: e.id),
            errors=sorted(errors, key=lambda e: e["source"]),
        )
        write_manifest(manifest, config.output_dir)

    since_save = 0
    try:
        for result in run_jobs(jobs, ctx, config.workers):
            finished.add(result.rel)
            if result.error is not None:
                errors.append({"source": result.rel, "error": result.error})
                summary.failed += 1
            else:
                new.extend(result.entries)
                summary.processed += 1
                summary.written += result.written
                since_save += len(result.entries)
            step(result.rel)
            if since_save >= CHECKPOINT_EVERY:
                save(final=False)
                since_save = 0
    except KeyboardInterrupt:
        save(final=False)
        raise
    save(final=True)

    final_entries = kept + new
    paths = {e.path for e in final_entries}
    summary.stale_outputs = sum(
        1 for e in previous_entries if e.path not in paths and (config.output_dir / e.path).is_file()
    )
    summary.errors = sorted(errors, key=lambda e: e["source"])
    summary.entries = len(final_entries)
    for e in final_entries:
        summary.modalities[e.modality] = summary.modalities.get(e.modality, 0) + 1
    summary.elapsed_s = time.perf_counter() - start
    return summary
