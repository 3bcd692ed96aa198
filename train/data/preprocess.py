"""``edgescene preprocess``: a folder of users' imagery -> resized PNGs plus a ``manifest.json``.

Walks ``input_dir`` recursively (sorted; hidden files and folders, the output folder and the
metadata JSON are skipped), decodes each file with :mod:`edgescene.train.data.readers`, and writes
one PNG per image, tile or sampled video frame, described by an :class:`~edgescene.train.data.manifest.Entry`.

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

import json
import os
import posixpath
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgescene.train.data.manifest import MANIFEST_NAME, Entry, Manifest, ManifestError, read_manifest, write_manifest
from edgescene.train.data.readers import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    GeoInfo,
    ReadError,
    file_kind,
    read_image,
    read_video,
)

PREPROCESS_MODALITIES = ("visible", "ir", "satellite")
RELEVANT_OPTIONS = ("size", "max_video_frames", "tile_size")
RESERVED_METADATA_KEYS = ("radiometric_scaling", "intrinsics_scaled")  # written by preprocess
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
        for name, low, high in (("size", 16, 16384), ("max_video_frames", 1, 100_000), ("tile_size", 16, 1 << 20),
                                ("workers", 1, 256)):
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
        return {"size": self.size, "max_video_frames": self.max_video_frames, "tile_size": self.tile_size,
                "input_dir": str(self.input_dir),
                "metadata_json": None if self.metadata_json is None else str(self.metadata_json)}


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
        lines += [f"removed: {s} (source no longer in the input folder; its outputs are left on disk)"
                  for s in self.removed_sources]
        if self.stale_outputs:
            lines.append(f"stale outputs: {self.stale_outputs} files no longer listed in the manifest are left on disk")
        lines += [f"manifest: {self.manifest_path}", f"elapsed: {self.elapsed_s:.2f} s"]
        return "\n".join(lines)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# ---------------------------------------------------------------- metadata JSON


def load_metadata(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read the metadata JSON: ``{relative/posix/path: {free-form}}``; malformed files raise ValueError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--metadata-json {path}: cannot read it ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"--metadata-json {path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"--metadata-json {path}: expected an object mapping source paths (relative to "
                         f"--input-dir) to objects, got a JSON {type(data).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if not isinstance(value, dict):
            raise ValueError(f"--metadata-json {path}: the value for {key!r} must be an object, got {type(value).__name__}")
        norm = posixpath.normpath(key.replace("\\", "/"))
        if norm in out:
            raise ValueError(f"--metadata-json {path}: {key!r} names the same file as another key")
        out[norm] = value
    return out


def _matrix(value: Any, rows: int, cols: int) -> list[list[float]] | None:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if m.shape != (rows, cols) or not np.isfinite(m).all():
        return None
    return m.tolist()


def _metadata_problem(meta: dict[str, Any]) -> str | None:
    if "modality" in meta and meta["modality"] not in PREPROCESS_MODALITIES:
        return (f"metadata: 'modality' must be one of {', '.join(PREPROCESS_MODALITIES)}, "
                f"got {meta['modality']!r}")
    if "intrinsics" in meta and _matrix(meta["intrinsics"], 3, 3) is None:
        return "metadata: 'intrinsics' must be a 3x3 matrix of numbers (pixels of the original image)"
    if "extrinsics" in meta and _matrix(meta["extrinsics"], 3, 4) is None and _matrix(meta["extrinsics"], 4, 4) is None:
        return "metadata: 'extrinsics' must be a 3x4 (or 4x4) camera-from-world matrix of numbers"
    return None


def _user_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in RESERVED_METADATA_KEYS}


def _camera(meta: dict[str, Any], crop: tuple[int, int, int, int], out_w: int, out_h: int
            ) -> tuple[dict[str, list] | None, list[list[float]] | None]:
    """(camera for Entry.camera, scaled intrinsics) for a crop (x, y, w, h) of the original resized to out_w x out_h."""
    k = _matrix(meta.get("intrinsics"), 3, 3)
    if k is None:
        return None, None
    x0, y0, w, h = crop
    sx, sy = out_w / w, out_h / h
    k = np.asarray(k)
    scaled = [[k[0, 0] * sx, k[0, 1] * sx, (k[0, 2] - x0) * sx],
              [0.0, k[1, 1] * sy, (k[1, 2] - y0) * sy],
              [0.0, 0.0, 1.0]]
    ext = _matrix(meta.get("extrinsics"), 3, 4)
    if ext is None and (ext4 := _matrix(meta.get("extrinsics"), 4, 4)) is not None:
        ext = ext4[:3]  # a 4x4 camera-from-world: its last row is [0, 0, 0, 1]
    if ext is None:
        return None, scaled
    return {"intrinsics": scaled, "extrinsics": ext}, scaled


# ---------------------------------------------------------------- pixels


def resize_long_side(pixels: np.ndarray, size: int) -> np.ndarray:
    """Long side to ``size``, aspect kept: INTER_AREA when shrinking, INTER_CUBIC when enlarging."""
    import cv2

    h, w = pixels.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = (size, max(1, int(h * scale + 0.5))) if w >= h else (max(1, int(w * scale + 0.5)), size)
    if (new_w, new_h) == (w, h):
        return pixels
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(pixels, (new_w, new_h), interpolation=interpolation)


def tile_grid(width: int, height: int, tile_size: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping (x, y, w, h) tiles, row by row, edge tiles smaller; one tile when it fits."""
    if max(width, height) <= tile_size:
        return [(0, 0, width, height)]
    return [(x, y, min(tile_size, width - x), min(tile_size, height - y))
            for y in range(0, height, tile_size) for x in range(0, width, tile_size)]


def _encode_png(pixels: np.ndarray) -> bytes:
    import cv2

    bgr = pixels[:, :, ::-1] if pixels.ndim == 3 else pixels
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
    if not ok:
        raise ReadError("could not encode the PNG")
    return buf.tobytes()


def _geo_for_output(geo: GeoInfo, crop: tuple[int, int, int, int], out_w: int, out_h: int) -> dict[str, Any]:
    transform = None
    if geo.transform is not None:
        a, b, c, d, e, f = geo.transform
        x0, y0, w, h = crop
        sx, sy = w / out_w, h / out_h  # source pixels per output pixel
        transform = [a * sx, b * sy, a * x0 + b * y0 + c, d * sx, e * sy, d * x0 + e * y0 + f]
    return {"crs": geo.crs, "transform": transform}


# ---------------------------------------------------------------- one source file


@dataclass(frozen=True)
class _Job:
    rel: str
    path: str
    kind: str  # "image" | "video"
    base: str  # output name stem, see _output_bases
    source_size: int
    source_mtime_ns: int
    metadata: dict[str, Any]


@dataclass(frozen=True)
class _Context:
    output_dir: Path
    size: int
    max_video_frames: int
    tile_size: int
    overwrite: bool
    owned: frozenset[str]  # output paths listed in the previous manifest: ours to replace


@dataclass
class _Result:
    rel: str
    entries: list[Entry]
    error: str | None = None
    written: int = 0


def _entry(job: _Job, path: str, id_: str, pixels: np.ndarray, modality: str, original: tuple[int, int],
           crop: tuple[int, int, int, int], scaling: dict[str, Any] | None = None, **fields: Any) -> Entry:
    h, w = pixels.shape[:2]
    meta = dict(job.metadata)
    for key in RESERVED_METADATA_KEYS:
        meta.pop(key, None)
    camera, k_scaled = _camera(job.metadata, crop, w, h)
    if k_scaled is not None and camera is None:
        meta["intrinsics_scaled"] = k_scaled
    if scaling is not None:
        meta["radiometric_scaling"] = scaling
    return Entry(id=id_, path=path, source=job.rel, modality=job.metadata.get("modality", modality), width=w,
                 height=h, channels=1 if pixels.ndim == 2 else 3, bit_depth=16 if pixels.dtype == np.uint16 else 8,
                 original_width=original[0], original_height=original[1], source_size=job.source_size,
                 source_mtime_ns=job.source_mtime_ns, metadata=meta, camera=camera, **fields)


def _render_image(job: _Job, ctx: _Context) -> list[tuple[Entry, bytes]]:
    image = read_image(job.path)
    h, w = image.pixels.shape[:2]
    grid = tile_grid(w, h, ctx.tile_size)
    out = []
    for x, y, tw, th in grid:
        pixels = resize_long_side(image.pixels[y:y + th, x:x + tw], ctx.size)
        tiled = len(grid) > 1
        path = f"tiles/{job.base}/x{x}_y{y}.png" if tiled else f"images/{job.base}.png"
        id_ = f"{job.rel}#t{x}_{y}" if tiled else job.rel
        geo = None if image.geo is None else _geo_for_output(image.geo, (x, y, tw, th), pixels.shape[1], pixels.shape[0])
        entry = _entry(job, path, id_, pixels, image.modality, (w, h), (x, y, tw, th),
                       scaling=image.radiometric_scaling, geo=geo,
                       tile={"x": x, "y": y, "width": tw, "height": th} if tiled else None)
        out.append((entry, _encode_png(pixels)))
    return out


def _render_video(job: _Job, ctx: _Context) -> list[tuple[Entry, bytes]]:
    video = read_video(job.path, ctx.max_video_frames)
    out = []
    for frame in video.frames:
        h, w = frame.pixels.shape[:2]
        pixels = resize_long_side(frame.pixels, ctx.size)
        entry = _entry(job, f"videos/{job.base}/f{frame.index:06d}.png", f"{job.rel}#f{frame.index}", pixels,
                       video.modality, (w, h), (0, 0, w, h), sequence=job.rel, frame_index=frame.index,
                       timestamp_s=frame.timestamp_s)
        out.append((entry, _encode_png(pixels)))
    return out


def _atomic_write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_outputs(rendered: list[tuple[Entry, bytes]], ctx: _Context) -> int:
    """Write every output of one source, or none: foreign files are checked before anything is written."""
    plan, foreign = [], []
    for entry, data in rendered:
        target = ctx.output_dir / entry.path
        if target.is_file() and target.read_bytes() == data:
            continue  # identical already (ours, or adopted from an interrupted run): leave it untouched
        if target.exists() and not ctx.overwrite and entry.path not in ctx.owned:
            foreign.append(entry.path)
        plan.append((target, data))
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise ReadError(f"output {foreign[0]}{more} already exists and is not listed in the output folder's "
                        f"manifest; not overwritten: pass --overwrite to replace it")
    written: list[Path] = []
    try:
        for target, data in plan:
            _atomic_write(target, data)
            written.append(target)
    except BaseException:
        for target in written:  # leave no half-written source behind
            target.unlink(missing_ok=True)
        raise
    return len(written)


def _process_source(job: _Job, ctx: _Context) -> _Result:
    try:
        rendered = _render_video(job, ctx) if job.kind == "video" else _render_image(job, ctx)
        written = _write_outputs(rendered, ctx)
        return _Result(job.rel, [entry for entry, _ in rendered], written=written)
    except ReadError as exc:
        return _Result(job.rel, [], error=str(exc))
    except MemoryError:
        return _Result(job.rel, [], error="out of memory while decoding (image too large for this machine)")
    except Exception as exc:  # a decoder's unexpected failure must not stop the run
        return _Result(job.rel, [], error=f"unexpected {type(exc).__name__}: {exc}")


_WORKER_CTX: _Context | None = None


def _init_worker(ctx: _Context) -> None:
    global _WORKER_CTX
    _WORKER_CTX = ctx
    import cv2

    cv2.setNumThreads(1)  # the pool already uses the cores


def _process_in_worker(job: _Job) -> _Result:
    assert _WORKER_CTX is not None, "worker started without _init_worker"
    return _process_source(job, _WORKER_CTX)


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


def _output_bases(rels: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Output name stem per source: the path without extension, or ``name_ext`` when two sources
    share a stem. Returns (bases, errors for the rare names that still collide)."""
    stems: dict[str, list[str]] = {}
    for rel in rels:
        stems.setdefault(posixpath.splitext(rel)[0], []).append(rel)
    bases, owner, errors = {}, {}, {}
    for rel in rels:
        stem, ext = posixpath.splitext(rel)
        base = stem if len(stems[stem]) == 1 else f"{stem}_{ext.lstrip('.')}"
        if base in owner:
            errors[rel] = f"output name {base!r} is already used by {owner[base]}; rename one of them"
            continue
        owner[base] = rel
        bases[rel] = base
    return bases, errors


def _entries_match(entries: list[Entry], size: int, mtime_ns: int, base: str, meta: dict[str, Any],
                   output_dir: Path) -> bool:
    prefixes = (f"tiles/{base}/", f"videos/{base}/")
    for e in entries:
        if e.source_size != size or e.source_mtime_ns != mtime_ns:
            return False
        if not (e.path == f"images/{base}.png" or e.path.startswith(prefixes)):
            return False
        if _user_metadata(e.metadata) != _user_metadata(meta) or not (output_dir / e.path).is_file():
            return False
    return True


def _read_previous(config: PreprocessConfig) -> Manifest | None:
    if not (config.output_dir / MANIFEST_NAME).is_file():
        return None
    try:
        return read_manifest(config.output_dir)
    except ManifestError as exc:
        if config.overwrite:
            return None
        raise ValueError(f"{exc}; move it away or pass --overwrite to start over") from exc


def preprocess_folder(config: PreprocessConfig, progress: ProgressCallback | None = None) -> PreprocessSummary:
    """Preprocess ``config.input_dir`` into ``config.output_dir`` (see the module docstring).

    ``progress(done, total, source)`` is called once per source file. Raises ValueError before any
    work for a malformed metadata JSON, an unreadable manifest or changed options without
    ``overwrite``; per-file problems are recorded in the manifest's ``errors`` and the summary.
    """
    from edgescene import __version__

    start = time.perf_counter()
    metadata = load_metadata(config.metadata_json) if config.metadata_json is not None else {}
    previous = _read_previous(config)
    options = config.manifest_options()
    changed = [k for k in RELEVANT_OPTIONS if previous is not None and previous.options.get(k) != options[k]]
    if previous is not None and previous.entries and changed and not config.overwrite:
        was = ", ".join(f"{_flag(k)} {previous.options.get(k)}" for k in changed)
        now = ", ".join(f"{_flag(k)} {options[k]}" for k in changed)
        raise ValueError(f"{config.output_dir} was preprocessed with {was} (now {now}): every output would change; "
                         f"pass --overwrite to redo it with the new options, or choose another --output-dir")

    files, errors = _walk(config)
    rels = [rel for rel, _ in files]
    bases, name_errors = _output_bases(rels)
    previous_entries = previous.entries if previous is not None else []
    prev_by_source: dict[str, list[Entry]] = {}
    if not changed:
        for e in previous_entries:
            prev_by_source.setdefault(e.source, []).append(e)
    ctx = _Context(config.output_dir, config.size, config.max_video_frames, config.tile_size, config.overwrite,
                   frozenset(e.path for e in previous_entries))
    summary = PreprocessSummary(config.input_dir, config.output_dir, config.output_dir / MANIFEST_NAME)
    present = set(rels)
    summary.warnings = [f"metadata key {key!r} matches no file in the input folder"
                        for key in sorted(metadata) if key not in present]
    summary.removed_sources = sorted({e.source for e in previous_entries} - present)
    total, done = len(files) + len(errors), len(errors)
    summary.failed = len(errors)

    def step(rel: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, rel)

    kept: list[Entry] = []
    jobs: list[_Job] = []
    for rel, path in files:
        kind = file_kind(path)
        meta = metadata.get(rel, {})
        problem = None
        if kind is None:
            suffix = path.suffix.lower() or "(no extension)"
            problem = (f"unsupported file type {suffix} (images: {' '.join(IMAGE_EXTENSIONS)}; "
                       f"videos: {' '.join(VIDEO_EXTENSIONS)})")
        problem = problem or name_errors.get(rel) or _metadata_problem(meta)
        if problem is not None:
            errors.append({"source": rel, "error": problem})
            summary.failed += 1
            step(rel)
            continue
        stat = path.stat()
        prev = prev_by_source.get(rel)
        if prev and _entries_match(prev, stat.st_size, stat.st_mtime_ns, bases[rel], meta, config.output_dir):
            kept.extend(prev)
            summary.skipped_unchanged += 1
            step(rel)
            continue
        jobs.append(_Job(rel, str(path), kind, bases[rel], stat.st_size, stat.st_mtime_ns, meta))

    new: list[Entry] = []
    finished: set[str] = set()

    def save(final: bool) -> None:
        pending = [] if final else [e for j in jobs if j.rel not in finished for e in prev_by_source.get(j.rel, [])]
        manifest = Manifest(created_by=f"edgescene {__version__} preprocess", options=options,
                            entries=sorted(kept + new + pending, key=lambda e: e.id),
                            errors=sorted(errors, key=lambda e: e["source"]))
        write_manifest(manifest, config.output_dir)

    since_save = 0
    try:
        for result in _run_jobs(jobs, ctx, config.workers):
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
    summary.stale_outputs = sum(1 for e in previous_entries
                                if e.path not in paths and (config.output_dir / e.path).is_file())
    summary.errors = sorted(errors, key=lambda e: e["source"])
    summary.entries = len(final_entries)
    for e in final_entries:
        summary.modalities[e.modality] = summary.modalities.get(e.modality, 0) + 1
    summary.elapsed_s = time.perf_counter() - start
    return summary


def _run_jobs(jobs: list[_Job], ctx: _Context, workers: int):
    """Results of every job: in order with one worker, in completion order with a process pool."""
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            yield _process_source(job, ctx)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(ctx,))
    try:
        futures = {pool.submit(_process_in_worker, job): job for job in jobs}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as exc:  # the worker process died (decoder crash, killed for memory)
                yield _Result(futures[future].rel, [], error=f"worker process failed: {type(exc).__name__}: {exc}")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
