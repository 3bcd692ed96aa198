"""The dataset manifest: one ``manifest.json`` per processed folder, versioned and validated.

Written by ``edgescene preprocess`` (users' imagery) and ``edgescene synth`` (synthetic scenes with
exact ground truth); read by the trainers, the evaluation and the benchmarks. Schema version 1::

    {
      "schema": "edgescene.manifest", "version": 1,
      "created_by": "edgescene 0.1.0 preprocess",
      "options": {...},                       # the options that produced the files
      "entries": [Entry, ...],                # one per output image
      "errors": [{"source": ..., "error": ...}, ...]
    }

Entry fields (paths are relative to the manifest's folder, sources to the input folder):

=================  =====================================================================
``id``             unique key: source path, plus ``#f<frame>`` for video frames and
                   ``#t<x>_<y>`` for tiles
``path``           the processed image (PNG; 8-bit RGB, or 8/16-bit single channel)
``source``         the original file
``source_size``    bytes of the source, and ``source_mtime_ns`` its modification time: together
                   they decide whether a re-run must redo the entry
``modality``       ``visible`` | ``ir`` | ``satellite`` | ``synthetic``
``sequence``       group of frames that belong together (a video, a synthetic scene), or null
``frame_index``    index of the frame in its sequence (video: decoded frame number), or null
``timestamp_s``    video presentation time in seconds, or null
``width/height``   size of the processed image; ``channels`` 1 or 3; ``bit_depth`` 8 or 16
``original_width/original_height``  size of the source image (of the tile's source for tiles)
``tile``           ``{"x", "y", "width", "height"}`` in source pixels, or null
``geo``            ``{"crs", "transform"}`` for georeferenced images: the affine transform
                   ``[a, b, c, d, e, f]`` of the *processed* pixel grid (x_geo = a*col + b*row + c,
                   y_geo = d*col + e*row + f), or null
``metadata``       what the user's metadata JSON gave for this source (free-form), or {}
``camera``         ``{"intrinsics": 3x3, "extrinsics": 3x4}`` for the processed image when known,
                   OpenCV axes, camera-from-world, pixel coordinates of the processed image,
                   optionally ``"distortion": [k1, k2, p1, p2(, k3)]`` (OpenCV's lens model,
                   :mod:`edgescene.core.lens`) when the image was not undistorted; or null
``depth``          path of a float32 ``.npy`` depth map (z along the camera axis) when known, or null
=================  =====================================================================
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from edgescene.core.atomic import atomic_write_text
from edgescene.core.lens import LensDistortion

SCHEMA = "edgescene.manifest"
VERSION = 1
MANIFEST_NAME = "manifest.json"
Modality = Literal["visible", "ir", "satellite", "synthetic"]
MODALITIES = ("visible", "ir", "satellite", "synthetic")


class ManifestError(ValueError):
    """A manifest that cannot be read: wrong schema, unsupported version, malformed entries."""


@dataclass
class Entry:
    id: str
    path: str
    source: str
    modality: str
    width: int
    height: int
    channels: int
    bit_depth: int
    original_width: int
    original_height: int
    source_size: int = 0
    source_mtime_ns: int = 0
    sequence: str | None = None
    frame_index: int | None = None
    timestamp_s: float | None = None
    tile: dict[str, int] | None = None
    geo: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    camera: dict[str, list] | None = None
    depth: str | None = None

    def validate(self) -> None:
        if self.modality not in MODALITIES:
            raise ManifestError(f"entry {self.id}: modality {self.modality!r} not in {MODALITIES}")
        if self.channels not in (1, 3) or self.bit_depth not in (8, 16):
            raise ManifestError(f"entry {self.id}: channels must be 1 or 3 and bit_depth 8 or 16")
        if self.camera is not None:
            k, e = self.camera.get("intrinsics"), self.camera.get("extrinsics")
            if not (isinstance(k, list) and len(k) == 3 and isinstance(e, list) and len(e) == 3 and len(e[0]) == 4):
                raise ManifestError(f"entry {self.id}: camera needs a 3x3 'intrinsics' and a 3x4 'extrinsics'")
            if self.camera.get("distortion") is not None:
                try:
                    LensDistortion.from_list(self.camera["distortion"])
                except (TypeError, ValueError) as exc:
                    raise ManifestError(f"entry {self.id}: camera distortion: {exc}") from exc


@dataclass
class Manifest:
    created_by: str
    options: dict[str, Any] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "created_by": self.created_by,
            "options": self.options,
            "entries": [asdict(e) for e in self.entries],
            "errors": self.errors,
        }

    def sequences(self) -> dict[str, list[Entry]]:
        """Entries grouped by ``sequence`` and ordered by ``frame_index`` (sequence-less ones skipped)."""
        groups: dict[str, list[Entry]] = {}
        for entry in self.entries:
            if entry.sequence is not None:
                groups.setdefault(entry.sequence, []).append(entry)
        return {k: sorted(v, key=lambda e: (e.frame_index is None, e.frame_index or 0)) for k, v in groups.items()}


def write_manifest(manifest: Manifest, folder: str | Path) -> Path:
    """Write ``folder/manifest.json`` atomically (temp file + rename); returns its path."""
    for entry in manifest.entries:
        entry.validate()
    ids = [e.id for e in manifest.entries]
    if len(ids) != len(set(ids)):
        raise ManifestError("entry ids must be unique")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest.to_json(), indent=1))


def read_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest (a folder holding ``manifest.json``, or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}: run `edgescene preprocess` or `edgescene synth` first")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    if data.get("schema") != SCHEMA:
        raise ManifestError(f"{path}: not an edgescene manifest (schema {data.get('schema')!r})")
    if data.get("version") != VERSION:
        raise ManifestError(
            f"{path}: manifest version {data.get('version')} is not supported (this edgescene reads {VERSION})"
        )
    known = {f.name for f in fields(Entry)}
    entries = []
    for raw in data.get("entries", []):
        unknown = set(raw) - known
        if unknown:
            raise ManifestError(f"{path}: entry {raw.get('id')} has unknown fields {sorted(unknown)}")
        entry = Entry(**raw)
        entry.validate()
        entries.append(entry)
    return Manifest(
        created_by=data.get("created_by", ""),
        options=data.get("options", {}),
        entries=entries,
        errors=list(data.get("errors", [])),
    )


def resolve_inside(root: str | Path, relative: str) -> Path:
    """``root / relative`` resolved, refusing paths that leave the dataset folder (``..``, symlinks out)."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ManifestError(f"manifest path {relative!r} points outside the dataset folder {root}")
    return path
