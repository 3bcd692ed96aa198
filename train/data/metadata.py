"""The user's metadata JSON for ``edgescene preprocess``: reading and checking it, and turning its
``intrinsics`` / ``extrinsics`` into an entry's camera scaled to the output pixels.

The JSON maps source paths (POSIX, relative to ``--input-dir``) to free-form objects that land in
``Entry.metadata``; :mod:`edgescene.train.data.preprocess` says what the known keys mean.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Any

import numpy as np

PREPROCESS_MODALITIES = ("visible", "ir", "satellite")
RESERVED_METADATA_KEYS = ("radiometric_scaling", "intrinsics_scaled")  # written by preprocess


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
        raise ValueError(
            f"--metadata-json {path}: expected an object mapping source paths (relative to "
            f"--input-dir) to objects, got a JSON {type(data).__name__}"
        )
    out: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if not isinstance(value, dict):
            raise ValueError(
                f"--metadata-json {path}: the value for {key!r} must be an object, got {type(value).__name__}"
            )
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


def metadata_problem(meta: dict[str, Any]) -> str | None:
    """Why one source's metadata object is unusable (its error record), or None when it is fine."""
    if "modality" in meta and meta["modality"] not in PREPROCESS_MODALITIES:
        return f"metadata: 'modality' must be one of {', '.join(PREPROCESS_MODALITIES)}, got {meta['modality']!r}"
    if "intrinsics" in meta and _matrix(meta["intrinsics"], 3, 3) is None:
        return "metadata: 'intrinsics' must be a 3x3 matrix of numbers (pixels of the original image)"
    if "extrinsics" in meta and _matrix(meta["extrinsics"], 3, 4) is None and _matrix(meta["extrinsics"], 4, 4) is None:
        return "metadata: 'extrinsics' must be a 3x4 (or 4x4) camera-from-world matrix of numbers"
    return None


def user_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The user's own keys: ``meta`` without the keys preprocess writes itself."""
    return {k: v for k, v in meta.items() if k not in RESERVED_METADATA_KEYS}


def output_camera(
    meta: dict[str, Any], crop: tuple[int, int, int, int], out_w: int, out_h: int
) -> tuple[dict[str, list] | None, list[list[float]] | None]:
    """(camera for Entry.camera, scaled intrinsics) for a crop (x, y, w, h) of the original resized to out_w x out_h."""
    k = _matrix(meta.get("intrinsics"), 3, 3)
    if k is None:
        return None, None
    x0, y0, w, h = crop
    sx, sy = out_w / w, out_h / h
    k = np.asarray(k)
    scaled = [
        [k[0, 0] * sx, k[0, 1] * sx, (k[0, 2] - x0) * sx],
        [0.0, k[1, 1] * sy, (k[1, 2] - y0) * sy],
        [0.0, 0.0, 1.0],
    ]
    ext = _matrix(meta.get("extrinsics"), 3, 4)
    if ext is None and (ext4 := _matrix(meta.get("extrinsics"), 4, 4)) is not None:
        ext = ext4[:3]  # a 4x4 camera-from-world: its last row is [0, 0, 0, 1]
    if ext is None:
        return None, scaled
    return {"intrinsics": scaled, "extrinsics": ext}, scaled
