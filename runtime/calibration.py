"""Known camera intrinsics for inference (``reconstruct --intrinsics FILE``): reading them and
carrying them through each frame's preprocessing into the model's pixels.

A calibration file is JSON in one of these forms (pixels of the *original* image, OpenCV axes:
x right, y down, the centre of the top-left pixel at (0.5, 0.5), so an ideal centred camera has
``cx = W / 2``):

- one camera for every frame: ``{"fx": ..., "fy": ..., "cx": ..., "cy": ...}``, or ``{"K": 3x3}``, or
  the bare 3x3 matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``; optional ``"width"`` and
  ``"height"``: the image size it was calibrated at. A frame of another size with the same aspect
  ratio gets the camera scaled to it (a video recorded at half the calibration's resolution); a
  different aspect ratio is refused (a crop whose offset is unknown);
- per frame, the metadata format of ``edgescene preprocess --metadata-json``: ``{"relative/path.jpg":
  {"intrinsics": 3x3, ...}, ...}`` keyed by the image's path relative to the input folder (or its file
  name); every keyframe must be found there.

Lens distortion is not modelled: a calibration whose ``"dist"`` / ``"distortion"`` coefficients are not
all zero is refused with the advice to undistort the frames first (OpenCV's ``cv2.undistort``).

:func:`to_model_pixels` maps a source camera through :class:`~edgescene.core.preprocess.Resize`
(``u = scale_x x + offset_x``): ``K_model = M K_source`` with ``M`` the resize's matrix, exact for
resizes, crops and pads, so a model pixel's ray is the source pixel's ray.

Imports numpy and the core only (never torch).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgescene.core.preprocess import Resize

__all__ = ["Calibration", "CalibrationError", "load_calibration", "parse_calibration", "to_model_pixels"]

ASPECT_TOLERANCE = 0.01  # relative: 1920x1080 calibrations serve 1280x720 and 854x480 frames


class CalibrationError(ValueError):
    """A calibration file that cannot be used, or a frame it does not cover; the message says why and what to do."""


def _matrix(value: Any, where: str) -> np.ndarray:
    try:
        k = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{where}: intrinsics must be numbers ({exc})") from exc
    if k.shape != (3, 3):
        raise CalibrationError(
            f"{where}: intrinsics must be a 3x3 matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got shape {k.shape}"
        )
    return _checked(k, where)


def _checked(k: np.ndarray, where: str) -> np.ndarray:
    if not np.isfinite(k).all():
        raise CalibrationError(f"{where}: intrinsics must be finite numbers")
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise CalibrationError(f"{where}: the focal lengths fx, fy must be > 0 pixels, got {k[0, 0]:g}, {k[1, 1]:g}")
    if not np.allclose(k[2], [0.0, 0.0, 1.0]) or k[1, 0] != 0:
        raise CalibrationError(
            f"{where}: the last row must be [0, 0, 1] and K[1][0] must be 0 (a pinhole camera matrix)"
        )
    if k[0, 1] != 0:
        raise CalibrationError(f"{where}: skew (K[0][1] = {k[0, 1]:g}) is not supported; calibrate with zero skew")
    return k


def _from_object(obj: Mapping[str, Any], where: str) -> np.ndarray:
    named = [key for key in ("fx", "fy", "cx", "cy") if key in obj]
    if "K" in obj or "intrinsics" in obj:
        if named:
            raise CalibrationError(f"{where}: give either the matrix ('K') or fx, fy, cx, cy, not both")
        return _matrix(obj.get("K", obj.get("intrinsics")), where)
    if len(named) != 4:
        missing = [key for key in ("fx", "fy", "cx", "cy") if key not in obj]
        raise CalibrationError(
            f"{where}: a camera needs fx, fy, cx and cy in pixels of the original image "
            f'(missing {", ".join(missing)}), or "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]'
        )
    try:
        fx, fy, cx, cy = (float(obj[key]) for key in ("fx", "fy", "cx", "cy"))
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{where}: fx, fy, cx, cy must be numbers ({exc})") from exc
    return _checked(np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]), where)


def _no_distortion(obj: Mapping[str, Any], where: str) -> None:
    for key in ("dist", "distortion", "dist_coeffs"):
        if key in obj:
            try:
                coeffs = np.asarray(obj[key], dtype=np.float64).reshape(-1)
            except (TypeError, ValueError) as exc:
                raise CalibrationError(f"{where}: {key!r} must be a list of numbers ({exc})") from exc
            if np.any(coeffs != 0):
                raise CalibrationError(
                    f"{where}: lens distortion {coeffs.tolist()} is not modelled by the runtime; undistort the "
                    "frames first (cv2.undistort with this calibration) and pass the new camera matrix"
                )


def _size(obj: Mapping[str, Any], where: str) -> tuple[int, int] | None:
    if ("width" in obj) != ("height" in obj):
        raise CalibrationError(f"{where}: give both 'width' and 'height' (the calibrated image size) or neither")
    if "width" not in obj:
        return None
    try:
        w, h = int(obj["width"]), int(obj["height"])
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{where}: width and height must be whole numbers of pixels ({exc})") from exc
    if w < 1 or h < 1:
        raise CalibrationError(f"{where}: width and height must be >= 1, got {w}x{h}")
    return w, h


@dataclass(frozen=True)
class Calibration:
    """Known intrinsics (pixels of the original images): one ``camera`` for all frames (with the
    ``size`` (W, H) it was calibrated at, if known), or ``per_frame`` by relative path."""

    camera: np.ndarray | None = None  # (3, 3)
    size: tuple[int, int] | None = None  # (W, H)
    per_frame: Mapping[str, np.ndarray] = field(default_factory=dict)
    origin: str = "<calibration>"

    def for_frame(self, source: str | None, source_wh: tuple[int, int]) -> np.ndarray:
        """(3, 3) intrinsics in the pixels of the frame as decoded (``source_wh`` = (W, H))."""
        if self.camera is not None:
            return self._scaled(self.camera, self.size, source_wh, self.origin)
        key = self._find(source)
        return self.per_frame[key]

    def _find(self, source: str | None) -> str:
        if source is None:
            raise CalibrationError(f"{self.origin}: per-frame intrinsics need image files; this frame has no path")
        norm = posixpath.normpath(str(source).replace("\\", "/"))
        for key in self.per_frame:  # the longest key that ends the frame's path, on a path boundary
            if norm == key or norm.endswith("/" + key):
                return key
        raise CalibrationError(
            f"{self.origin}: no intrinsics for {source}; per-frame entries are keyed by the image's path relative "
            f"to the input folder (e.g. {next(iter(self.per_frame))!r}); add it, or give one camera for all frames"
        )

    @staticmethod
    def _scaled(k: np.ndarray, size: tuple[int, int] | None, wh: tuple[int, int], origin: str) -> np.ndarray:
        if size is None or tuple(size) == tuple(wh):
            return k
        (cw, ch), (w, h) = size, wh
        if abs((w / h) / (cw / ch) - 1) > ASPECT_TOLERANCE:
            raise CalibrationError(
                f"{origin}: calibrated at {cw}x{ch} but the frames are {w}x{h}, another aspect ratio (a crop "
                "whose offset is unknown): calibrate at the frames' size"
            )
        scale = np.diag([w / cw, h / ch, 1.0])
        return scale @ k

    def describe(self) -> dict:
        """What report.json says about the calibration."""
        if self.camera is not None:
            return {
                "file": self.origin,
                "kind": "one camera",
                "intrinsics": self.camera.tolist(),
                "calibrated_size": self.size,
            }
        return {"file": self.origin, "kind": "per frame", "frames": len(self.per_frame)}


def parse_calibration(data: Any, origin: str = "<calibration>") -> Calibration:
    """A :class:`Calibration` from parsed JSON (see the module docstring); CalibrationError when unusable."""
    if isinstance(data, list):
        return Calibration(camera=_matrix(data, origin), origin=origin)
    if not isinstance(data, dict):
        raise CalibrationError(f"{origin}: expected a JSON object or a 3x3 matrix, got a JSON {type(data).__name__}")
    if not data:
        raise CalibrationError(f"{origin}: the calibration is empty")
    if any(key in data for key in ("fx", "fy", "cx", "cy", "K")) or (
        "intrinsics" in data and not isinstance(data["intrinsics"], dict)
    ):
        _no_distortion(data, origin)
        return Calibration(camera=_from_object(data, origin), size=_size(data, origin), origin=origin)
    per_frame: dict[str, np.ndarray] = {}
    for key, value in data.items():
        where = f"{origin}: {key!r}"
        if not isinstance(value, dict) or "intrinsics" not in value:
            raise CalibrationError(
                f"{where}: a per-frame entry must be an object with 'intrinsics' (3x3, pixels of that image); "
                'for one camera give {"fx": ..., "fy": ..., "cx": ..., "cy": ...}'
            )
        _no_distortion(value, where)
        norm = posixpath.normpath(str(key).replace("\\", "/"))
        if norm in per_frame:
            raise CalibrationError(f"{where}: names the same image as another entry")
        per_frame[norm] = _matrix(value["intrinsics"], where)
    return Calibration(per_frame=per_frame, origin=origin)


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration JSON file; CalibrationError (a ValueError) names what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CalibrationError(f"--intrinsics {path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"--intrinsics {path}: cannot read it ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"--intrinsics {path}: not valid JSON ({exc})") from exc
    return parse_calibration(data, origin=str(path))


def to_model_pixels(k_source: np.ndarray, resize: Resize) -> np.ndarray:
    """(3, 3) intrinsics in model pixels of a camera given in the source image's pixels."""
    return resize.matrix() @ np.asarray(k_source, np.float64)
