"""A georeferenced reconstruction in a projected coordinate reference system (``reconstruct --crs``).

After ``--scale-from gps:`` or ``exif`` the map is in local East-North-Up metres about
``enu_origin`` (:mod:`edgescene.runtime.metric`). :func:`enu_to_crs` takes points from there to
WGS84 (pymap3d, exact) and then to the asked CRS (pyproj: an EPSG code of a projected CRS such as
UTM, ``EPSG:32632``, or a national grid), as (easting, northing, ellipsoidal height) in metres:
what GIS tools and survey data use. The height stays the WGS84 ellipsoidal height GPS gives (no
geoid model is applied). Needs pyproj (the ``geo`` extra).
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["CRSError", "check_crs", "enu_to_crs"]

_EPSG = re.compile(r"^EPSG:(\d{4,6})$", re.IGNORECASE)


class CRSError(ValueError):
    """A CRS that cannot be used; the message names the problem and the fix."""


def _pyproj():
    try:
        import pyproj
    except ImportError as exc:
        raise ImportError("--crs needs pyproj: pip install 'edgescene[geo]'") from exc
    return pyproj


def check_crs(crs: str) -> str:
    """``EPSG:NNNN`` of a projected CRS in metres (normalised); CRSError otherwise."""
    match = _EPSG.match(str(crs).strip())
    if match is None:
        raise CRSError(f"--crs {crs!r}: give an EPSG code, e.g. EPSG:32632 (UTM zone 32N) or EPSG:2056 (Swiss LV95)")
    pyproj = _pyproj()
    code = f"EPSG:{match.group(1)}"
    try:
        ref = pyproj.CRS.from_user_input(code)
    except pyproj.exceptions.CRSError as exc:
        raise CRSError(f"--crs {code}: unknown to PROJ ({exc})") from exc
    if not ref.is_projected:
        raise CRSError(
            f"--crs {code} ({ref.name}) is not a projected CRS: choose one in metres, e.g. the UTM zone of the site"
        )
    units = {axis.unit_name for axis in ref.axis_info[:2]}
    if units != {"metre"}:
        raise CRSError(f"--crs {code} ({ref.name}) is in {', '.join(sorted(units))}, not metres")
    return code


def enu_to_crs(points: np.ndarray, origin: tuple[float, float, float], crs: str) -> np.ndarray:
    """(N, 3) East-North-Up metres about ``origin`` (lat, lon, alt) -> (N, 3) float64 easting,
    northing (the CRS's metres) and WGS84 ellipsoidal height."""
    import pymap3d

    pyproj = _pyproj()
    p = np.asarray(points, np.float64).reshape(-1, 3)
    lat, lon, alt = pymap3d.enu2geodetic(p[:, 0], p[:, 1], p[:, 2], *origin)
    transformer = pyproj.Transformer.from_crs("EPSG:4326", check_crs(crs), always_xy=True)
    easting, northing = transformer.transform(np.asarray(lon), np.asarray(lat))
    return np.stack([np.asarray(easting), np.asarray(northing), np.asarray(alt)], axis=1)
