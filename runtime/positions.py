"""Where the cameras really were: the position sources ``reconstruct --scale-from`` reads.

- ``gps:FILE``: a GPS track, GPX (gpxpy) or CSV with a header naming ``time``, ``lat``, ``lon`` and
  optionally ``alt`` (``latitude`` / ``longitude`` / ``altitude`` / ``elevation`` also accepted).
  CSV times are either seconds on the video's clock (plain numbers: 0 is the video's first frame) or
  ISO 8601 date-times (absolute: the video's first frame is the track's first fix, shifted by
  ``--gps-offset``); GPX times are absolute. A track fixed at a lower rate than the frames is
  interpolated linearly at each keyframe's time.
- ``exif``: the GPS latitude, longitude and altitude written into each photo (Pillow's EXIF).
- ``poses:FILE``: a rig's or motion capture's trajectory in TUM format (``time x y z qx qy qz qw``
  per line, ``#`` comments), metres in the rig's frame; times are seconds on the video's clock, or,
  for photos, the photo's position in the input (0, 1, ...).
- ``baseline:METRES`` or ``baseline:METRES@A,B``: the distance between the cameras of input frames
  ``A`` and ``B`` (default: the first two keyframes), e.g. a stereo pair's calibrated baseline.

Geodetic positions (WGS84 latitude, longitude in degrees, altitude in metres above the ellipsoid as
GPS reports it) are expressed in a local East-North-Up frame in metres (pymap3d) whose origin is
the first fix used: x east, y north, z up.

Imports numpy, the standard library, and gpxpy / pymap3d / Pillow where a source needs them.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

__all__ = [
    "PositionError",
    "ScaleSource",
    "Track",
    "exif_geodetic",
    "geodetic_to_enu",
    "parse_scale_source",
    "read_csv_track",
    "read_gpx",
    "read_tum",
]

KINDS = ("gps", "exif", "poses", "baseline")


class PositionError(ValueError):
    """A position source that cannot be used; the message names the problem and the fix."""


@dataclass(frozen=True)
class ScaleSource:
    """A parsed ``--scale-from`` value."""

    kind: str  # gps | exif | poses | baseline
    path: Path | None = None  # gps, poses
    metres: float | None = None  # baseline
    frames: tuple[int, int] | None = None  # baseline: input frame indices (None: the first two keyframes)
    offset_s: float = 0.0  # gps / poses: added to each keyframe's time before matching

    def describe(self) -> str:
        if self.kind in ("gps", "poses"):
            return f"{self.kind}:{self.path}"
        if self.kind == "baseline":
            between = "" if self.frames is None else f"@{self.frames[0]},{self.frames[1]}"
            return f"baseline:{self.metres:g}{between}"
        return self.kind


def parse_scale_source(spec: str, offset_s: float = 0.0) -> ScaleSource:
    """``gps:FILE`` | ``exif`` | ``poses:FILE`` | ``baseline:METRES[@A,B]`` -> :class:`ScaleSource`."""
    kind, _, rest = str(spec).partition(":")
    if kind not in KINDS:
        raise PositionError(
            f"--scale-from {spec!r}: expected gps:FILE (GPX or CSV), exif, poses:FILE (TUM) or baseline:METRES[@A,B]"
        )
    if not math.isfinite(offset_s):
        raise PositionError(f"--gps-offset must be a finite number of seconds, got {offset_s}")
    if kind == "exif":
        if rest:
            raise PositionError(f"--scale-from {spec!r}: 'exif' takes no value (the GPS tags of each photo)")
        return ScaleSource("exif")
    if not rest:
        raise PositionError(
            f"--scale-from {kind}: needs a value, e.g. {kind}:{'0.12' if kind == 'baseline' else 'track.gpx'}"
        )
    if kind == "baseline":
        value, _, frames = rest.partition("@")
        try:
            metres = float(value)
        except ValueError as exc:
            raise PositionError(
                f"--scale-from {spec!r}: the baseline must be a number of metres, got {value!r}"
            ) from exc
        if not (math.isfinite(metres) and metres > 0):
            raise PositionError(f"--scale-from {spec!r}: the baseline must be > 0 metres")
        pair = None
        if frames:
            try:
                a, b = (int(x) for x in frames.split(","))
            except ValueError as exc:
                raise PositionError(
                    f"--scale-from {spec!r}: name the two frames as @A,B (input frame numbers), got {frames!r}"
                ) from exc
            if a == b or a < 0 or b < 0:
                raise PositionError(f"--scale-from {spec!r}: @A,B must be two different frame numbers >= 0")
            pair = (a, b)
        return ScaleSource("baseline", metres=metres, frames=pair)
    path = Path(rest).expanduser()
    if not path.is_file():
        raise PositionError(f"--scale-from {spec!r}: {path} is not a file")
    return ScaleSource(kind, path=path, offset_s=float(offset_s))


@dataclass(frozen=True)
class Track:
    """Timed positions. ``times``: (N,) seconds, strictly increasing; ``geodetic``: (N, 3) latitude,
    longitude (degrees), altitude (metres), or None; ``xyz``: (N, 3) metres in the source's own frame
    (TUM), or None; ``absolute``: the times are UTC seconds since the epoch (else the video's clock)."""

    times: np.ndarray
    geodetic: np.ndarray | None
    xyz: np.ndarray | None
    absolute: bool
    origin: str


def _sorted_track(times, geodetic, xyz, absolute: bool, origin: str) -> Track:
    t = np.asarray(times, np.float64)
    if len(t) < 1:
        raise PositionError(f"{origin}: no positions in the file")
    order = np.argsort(t, kind="stable")
    t = t[order]
    if np.any(np.diff(t) <= 0):
        dup = float(t[1:][np.diff(t) <= 0][0])
        raise PositionError(f"{origin}: two positions share the time {dup:g} s; keep one fix per time")
    geo = None if geodetic is None else np.asarray(geodetic, np.float64)[order]
    pos = None if xyz is None else np.asarray(xyz, np.float64)[order]
    if geo is not None and (np.any(np.abs(geo[:, 0]) > 90) or np.any(np.abs(geo[:, 1]) > 180)):
        raise PositionError(f"{origin}: latitudes must be within +-90 and longitudes within +-180 degrees")
    return Track(t, geo, pos, absolute, origin)


def read_gpx(path: str | Path) -> Track:
    """A GPX file's track points (every track and segment, then waypoints of a route if no track)."""
    import gpxpy
    import gpxpy.gpx

    path = Path(path)
    try:
        gpx = gpxpy.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PositionError(f"{path}: cannot read it ({exc})") from exc
    except gpxpy.gpx.GPXException as exc:
        raise PositionError(f"{path}: not a valid GPX file ({exc})") from exc
    points: list = [p for track in gpx.tracks for segment in track.segments for p in segment.points]
    points = points or [p for route in gpx.routes for p in route.points]
    if not points:
        raise PositionError(f"{path}: the GPX file holds no track or route points")
    untimed = sum(p.time is None for p in points)
    if untimed:
        raise PositionError(
            f"{path}: {untimed} of {len(points)} GPX points have no <time>: a track needs times to match frames"
        )
    times = [_utc_seconds(p.time) for p in points]
    geo = [[p.latitude, p.longitude, 0.0 if p.elevation is None else p.elevation] for p in points]
    return _sorted_track(times, geo, None, True, str(path))


def _utc_seconds(t: datetime) -> float:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)  # GPX and ISO times without a zone are UTC by convention
    return t.timestamp()


COLUMNS = {
    "time": ("time", "timestamp", "t", "datetime"),
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "long", "longitude"),
    "alt": ("alt", "altitude", "elevation", "ele", "height"),
}


def read_csv_track(path: str | Path) -> Track:
    """A CSV track: a header row naming time, lat, lon (and optionally alt) columns; times are numbers
    (seconds on the video's clock) or ISO 8601 date-times (absolute)."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PositionError(f"{path}: cannot read it as CSV ({exc})") from exc
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows:
        raise PositionError(f"{path}: the CSV file is empty")
    header = [c.strip().lower() for c in rows[0]]
    where = {}
    for name, aliases in COLUMNS.items():
        found = [i for i, c in enumerate(header) if c in aliases]
        if found:
            where[name] = found[0]
    missing = [n for n in ("time", "lat", "lon") if n not in where]
    if missing:
        raise PositionError(
            f"{path}: the first row must name the columns; missing {', '.join(missing)} "
            f"(got {', '.join(header) or 'nothing'}); e.g. 'time,lat,lon,alt'"
        )
    times, geo = [], []
    absolute: bool | None = None
    for line, row in enumerate(rows[1:], start=2):
        try:
            cells = {n: row[i].strip() for n, i in where.items()}
        except IndexError:
            raise PositionError(f"{path}: line {line} has {len(row)} columns, the header {len(header)}") from None
        try:
            t, is_absolute = float(cells["time"]), False
        except ValueError:
            try:
                t, is_absolute = _utc_seconds(datetime.fromisoformat(cells["time"].replace("Z", "+00:00"))), True
            except ValueError:
                raise PositionError(
                    f"{path}: line {line}: time {cells['time']!r} is neither seconds nor an ISO 8601 date-time"
                ) from None
        if absolute is not None and absolute != is_absolute:
            raise PositionError(f"{path}: line {line}: mixes plain seconds with date-times; use one kind of time")
        absolute = is_absolute
        try:
            lat, lon = float(cells["lat"]), float(cells["lon"])
            alt = float(cells["alt"]) if cells.get("alt") else 0.0
        except ValueError:
            raise PositionError(f"{path}: line {line}: lat, lon and alt must be numbers, got {row}") from None
        if not all(math.isfinite(v) for v in (t, lat, lon, alt)):
            raise PositionError(f"{path}: line {line}: values must be finite numbers")
        times.append(t)
        geo.append([lat, lon, alt])
    if not times:
        raise PositionError(f"{path}: the CSV file has a header but no positions")
    return _sorted_track(times, geo, None, bool(absolute), str(path))


def read_gps_track(path: str | Path) -> Track:
    """GPX or CSV by the file's suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gpx":
        return read_gpx(path)
    if suffix in (".csv", ".txt"):
        return read_csv_track(path)
    raise PositionError(f"{path}: a GPS track must be .gpx or .csv (time,lat,lon,alt), got {suffix or 'no suffix'}")


def read_tum(path: str | Path) -> Track:
    """A TUM trajectory (``time x y z qx qy qz qw``); only the positions are used."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PositionError(f"{path}: cannot read it ({exc})") from exc
    times, xyz = [], []
    for n, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 8:
            raise PositionError(f"{path}: line {n}: a TUM pose is 8 numbers 'time x y z qx qy qz qw', got {len(parts)}")
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise PositionError(f"{path}: line {n}: not numbers: {line!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise PositionError(f"{path}: line {n}: values must be finite")
        times.append(values[0])
        xyz.append(values[1:4])
    if not times:
        raise PositionError(f"{path}: no poses in the file")
    return _sorted_track(times, None, xyz, False, str(path))


def _rational(value) -> float:
    if isinstance(value, tuple) and len(value) == 2:  # (numerator, denominator)
        return float(value[0]) / float(value[1])
    return float(value)


GPS_IFD = 0x8825


def exif_geodetic(path: str | Path) -> tuple[float, float, float] | None:
    """(latitude, longitude, altitude) from a photo's EXIF GPS tags, or None when it has none.
    Altitude is 0 when the photo gives no GPSAltitude. Malformed tags raise PositionError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            gps = image.getexif().get_ifd(GPS_IFD)
    except (OSError, UnidentifiedImageError) as exc:
        raise PositionError(f"{path}: cannot read its EXIF ({exc})") from exc
    if not gps or 2 not in gps or 4 not in gps:
        return None
    try:
        lat = sum(_rational(v) / 60**i for i, v in enumerate(gps[2]))
        lon = sum(_rational(v) / 60**i for i, v in enumerate(gps[4]))
        if str(gps.get(1, "N")).upper().startswith("S"):
            lat = -lat
        if str(gps.get(3, "E")).upper().startswith("W"):
            lon = -lon
        alt = _rational(gps[6]) if 6 in gps else 0.0
        if gps.get(5) in (1, b"\x01"):  # below sea level
            alt = -alt
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise PositionError(f"{path}: malformed EXIF GPS tags ({exc})") from exc
    if not (abs(lat) <= 90 and abs(lon) <= 180 and math.isfinite(alt)):
        raise PositionError(f"{path}: EXIF GPS position out of range (lat {lat}, lon {lon}, alt {alt})")
    return lat, lon, alt


def geodetic_to_enu(geodetic: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """(N, 3) latitude, longitude (degrees), altitude (m) -> (N, 3) East-North-Up metres about ``origin``."""
    import pymap3d

    g = np.asarray(geodetic, np.float64)
    e, n, u = pymap3d.geodetic2enu(g[:, 0], g[:, 1], g[:, 2], float(origin[0]), float(origin[1]), float(origin[2]))
    return np.stack([np.asarray(e), np.asarray(n), np.asarray(u)], axis=1)
