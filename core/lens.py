"""Lens distortion in OpenCV's Brown-Conrady model, and the pinhole view of a distorted image.

A distorted camera maps a point at normalised pinhole coordinates ``(x, y) = (X/Z, Y/Z)`` to
pixel ``K @ (x_d, y_d, 1)`` with, for ``r^2 = x^2 + y^2``::

    x_d = x (1 + k1 r^2 + k2 r^4 + k3 r^6) + 2 p1 x y + p2 (r^2 + 2 x^2)
    y_d = y (1 + k1 r^2 + k2 r^4 + k3 r^6) + p1 (r^2 + 2 y^2) + 2 p2 x y

Coefficients are kept in OpenCV's order ``(k1, k2, p1, p2, k3)``, as COLMAP's OPENCV model and
``cv2.calibrateCamera`` give them. Pixel grid as everywhere in edgescene: ``u = 0..W-1`` (column),
``v = 0..H-1`` (row), no +0.5 offset. OpenCV does the work (``undistortPointsIter`` inverts the
model to 1e-13 pixels; ``initUndistortRectifyMap`` + ``remap`` resample images).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass

import numpy as np

# Beyond these the model folds over inside a normal field of view: almost surely a wrong value.
_LIMITS = {"k1": 1.0, "k2": 1.0, "p1": 0.1, "p2": 0.1, "k3": 1.0}


@dataclass(frozen=True)
class LensDistortion:
    """OpenCV distortion coefficients (dimensionless, for normalised coordinates)."""

    k1: float = 0.0
    k2: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    k3: float = 0.0

    def __post_init__(self) -> None:
        for name, limit in _LIMITS.items():
            value = getattr(self, name)
            if not np.isfinite(value) or abs(value) > limit:
                raise ValueError(
                    f"lens distortion {name}={value} is outside [-{limit}, {limit}]: give OpenCV's coefficients "
                    "(k1, k2, p1, p2, k3) for normalised image coordinates, not pixels"
                )

    @classmethod
    def from_list(cls, values: Sequence[float]) -> LensDistortion:
        """From OpenCV's order; 4 (k1, k2, p1, p2) or 5 values (k1, k2, p1, p2, k3)."""
        if len(values) not in (4, 5):
            raise ValueError(f"lens distortion needs 4 or 5 coefficients (k1, k2, p1, p2[, k3]), got {len(values)}")
        return cls(*(float(v) for v in values))

    def as_list(self) -> list[float]:
        return list(astuple(self))

    @property
    def is_identity(self) -> bool:
        return not any(astuple(self))


def undistorted_rays(intrinsics: np.ndarray, distortion: LensDistortion, height: int, width: int) -> np.ndarray:
    """(H*W, 3) camera rays ``(x, y, 1)`` (unit z) seen by the pixels of the distorted image, row-major."""
    import cv2

    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    pixels = np.stack([u, v], axis=-1).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-15)
    identity = np.eye(3)  # no rectification; the new camera matrix I gives normalised coordinates
    normalised = cv2.undistortPointsIter(
        pixels, np.asarray(intrinsics, np.float64), np.asarray(distortion.as_list()), identity, identity, criteria
    ).reshape(-1, 2)
    return np.concatenate([normalised, np.ones((len(normalised), 1))], axis=1)


def distort_points(points: np.ndarray, intrinsics: np.ndarray, distortion: LensDistortion) -> np.ndarray:
    """Camera-frame points (N, 3), z > 0 -> (N, 2) pixels of the distorted image."""
    import cv2

    pixels, _ = cv2.projectPoints(
        np.asarray(points, np.float64).reshape(-1, 1, 3),
        np.zeros(3),
        np.zeros(3),
        np.asarray(intrinsics, np.float64),
        np.asarray(distortion.as_list()),
    )
    return pixels.reshape(-1, 2)


def to_pinhole(
    image: np.ndarray, intrinsics: np.ndarray, distortion: LensDistortion, nearest: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The image a pinhole camera with the same ``intrinsics`` would take: (H, W[, C]) -> the same
    shape and dtype, and a (H, W) bool mask of the pixels the distorted image covered (outside it
    the output is 0). ``nearest``: for depth maps and labels, which must not be blended."""
    import cv2

    h, w = image.shape[:2]
    k = np.asarray(intrinsics, np.float64)
    map_x, map_y = cv2.initUndistortRectifyMap(k, np.asarray(distortion.as_list()), None, k, (w, h), cv2.CV_32FC1)
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    border = cv2.BORDER_CONSTANT if nearest else cv2.BORDER_REPLICATE  # no dark frame from sub-pixel edges
    out = cv2.remap(image, map_x, map_y, interpolation, borderMode=border, borderValue=0)
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return out, inside
