"""Calibration and scale sources sent to the service or the web app: checked, kept beside a job's
inputs, and turned into the runtime's options (``ReconstructConfig.intrinsics`` / ``scale_from``).

- a calibration JSON (:mod:`edgescene.runtime.calibration`) is parsed before it is kept, so a bad
  one is refused at submission (400) with the parser's message;
- ``scale_from`` is ``exif``, ``baseline:METRES[@A,B]``, or ``gps`` / ``poses`` with the track sent
  as a file (GPX or CSV for ``gps``, TUM for ``poses``); the track is read once at submission too.

Files go into the job's folder (``calibration.json``, ``track.<ext>``), next to ``input/``, so a
restarted server runs the job with what it accepted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import BinaryIO

from edgescene.apps.uploads import UploadError, save_stream
from edgescene.runtime.calibration import CalibrationError, parse_calibration
from edgescene.runtime.positions import PositionError, parse_scale_source, read_gps_track, read_tum

__all__ = ["MAX_SIDECAR_BYTES", "TRACK_SUFFIXES", "save_calibration", "scale_option"]

MAX_SIDECAR_BYTES = 16 * 1024 * 1024  # a calibration or a track: far below any video
TRACK_SUFFIXES = {"gps": (".gpx", ".csv"), "poses": (".tum", ".txt", ".csv")}


def save_calibration(source: BinaryIO, folder: Path, renames: dict[str, str] | None = None) -> Path:
    """Keep an uploaded calibration JSON as ``folder/calibration.json`` once it parses; UploadError
    otherwise. ``renames``: the uploaded images' names -> the names they are stored under; the keys of
    a per-image calibration (the client's file names, or paths ending in them) follow them."""
    target = folder / "calibration.json"
    save_stream(source, target, MAX_SIDECAR_BYTES)
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
        calibration = parse_calibration(data, origin="the calibration")
        if calibration.camera is None and renames:
            data = {_stored(key, renames): value for key, value in data.items()}
            target.write_text(json.dumps(data), encoding="utf-8")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        target.unlink()
        raise UploadError(f"the calibration is not a JSON file ({exc})") from exc
    except CalibrationError as exc:
        target.unlink()
        raise UploadError(str(exc)) from exc
    return target


def _stored(key: str, renames: dict[str, str]) -> str:
    """The stored name of the uploaded image a per-image calibration key names (unchanged if none)."""
    base = Path(str(key).replace("\\", "/")).name
    if base not in renames:
        raise UploadError(f"the calibration names {key!r}, which is not among the uploaded images")
    return renames[base]


def scale_option(
    scale_from: str | None, track: BinaryIO | None, track_name: str, folder: Path, offset_s: float = 0.0
) -> str | None:
    """The runtime's ``scale_from`` for what a client sent (the track kept in ``folder``); UploadError
    names what is missing or wrong."""
    if scale_from is None or not scale_from.strip():
        if track is not None:
            raise UploadError("a track was sent without scale_from: send scale_from=gps (GPX, CSV) or poses (TUM)")
        return None
    spec = scale_from.strip()
    if spec in TRACK_SUFFIXES:
        if track is None:
            raise UploadError(f"scale_from={spec} needs its track as a file (field 'track')")
        suffix = Path(track_name).suffix.lower()
        if suffix not in TRACK_SUFFIXES[spec]:
            raise UploadError(
                f"scale_from={spec}: the track must be {' or '.join(TRACK_SUFFIXES[spec])}, got {suffix or 'no suffix'}"
            )
        target = folder / f"track{suffix}"
        save_stream(track, target, MAX_SIDECAR_BYTES)
        try:
            read_gps_track(target) if spec == "gps" else read_tum(target)
            option = f"{spec}:{target}"
            parse_scale_source(option, offset_s)
        except PositionError as exc:
            target.unlink()
            raise UploadError(str(exc).replace(str(target), "the track")) from exc
        return option
    if spec.partition(":")[0] in TRACK_SUFFIXES:
        raise UploadError(f"scale_from={spec}: send the track as a file and scale_from={spec.partition(':')[0]}")
    if track is not None:
        raise UploadError(f"scale_from={spec} takes no track; drop the 'track' file")
    try:
        parse_scale_source(spec, offset_s)
    except PositionError as exc:
        raise UploadError(str(exc)) from exc
    return spec
