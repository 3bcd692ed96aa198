"""A real photo pair with ground truth: Middlebury 2014 "Motorcycle" as a 2-frame eval dataset.

scikit-image ships the pair (``skimage.data.stereo_motorcycle()``: left and right 500 x 741 RGB,
down-sampled 4x from the benchmark, and the left image's ground-truth disparity, NaN where there
is none). With the calibration its docstring gives for that resolution (focal length f = 994.978
px, principal point (311.193, 254.877) px in the left image, the right one's x shifted by doffs =
31.086 px, baseline B = 193.001 mm), depth along the camera axis is ``z = f * B / (d + doffs)``.

:func:`write_middlebury_motorcycle` writes a manifest folder that ``edgescene eval`` reads: one
sequence ``motorcycle`` of two frames, PNG images, float32 depth in metres (0 = no ground truth)
and OpenCV cameras (camera-from-world; the left camera is the world frame, the right one sits
B metres along +x, so its extrinsics translate by -B). The right image's depth is the left depth
forward-warped along the rectified rows (``x_right = x_left - d``, nearest surface kept), so it is
sparser. ``edgescene eval --dataset middlebury-motorcycle`` builds it on the fly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgescene import __version__
from edgescene.core.manifest import Entry, Manifest, write_manifest

FOCAL_PX = 994.978
CX_LEFT, CY = 311.193, 254.877
DOFFS_PX = 31.086
BASELINE_M = 0.193001
SEQUENCE = "motorcycle"
DATASET_NAME = "middlebury-motorcycle"
SOURCE = "skimage.data.stereo_motorcycle (Middlebury 2014 Motorcycle, 4x down-sampled)"


def load_motorcycle() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left (500, 741, 3) uint8, right (500, 741, 3) uint8, left disparity (500, 741) float32, NaN/inf =
    none) from scikit-image's bundled data (no download)."""
    try:
        from skimage.data import stereo_motorcycle
    except ImportError as exc:
        raise ImportError("the Middlebury pair ships with scikit-image: pip install scikit-image") from exc
    left, right, disparity = stereo_motorcycle()
    return np.asarray(left), np.asarray(right), np.asarray(disparity, np.float32)


def disparity_to_depth(disparity: np.ndarray) -> np.ndarray:
    """Left-image depth in metres, ``f * B / (d + doffs)``; 0 where the disparity is not finite."""
    d = np.asarray(disparity, np.float64)
    valid = np.isfinite(d) & (d + DOFFS_PX > 0)
    depth = np.zeros(d.shape, np.float32)
    depth[valid] = (FOCAL_PX * BASELINE_M / (d[valid] + DOFFS_PX)).astype(np.float32)
    return depth


def warp_depth_to_right(depth_left: np.ndarray, disparity: np.ndarray) -> np.ndarray:
    """The right image's depth: each left pixel moves to column ``x - d`` of its row (rectified),
    rounded to the nearest pixel; where several land, the nearest surface wins; 0 elsewhere."""
    h, w = depth_left.shape
    ys, xs = np.nonzero(depth_left > 0)
    xr = np.rint(xs - disparity[ys, xs]).astype(np.int64)
    inside = (xr >= 0) & (xr < w)
    ys, xr, z = ys[inside], xr[inside], depth_left[ys[inside], xs[inside]]
    order = np.argsort(-z)  # far first: nearer surfaces overwrite them
    right = np.zeros((h, w), np.float32)
    right[ys[order], xr[order]] = z[order]
    return right


def cameras() -> tuple[list[list[float]], list[list[float]], list[list[float]], list[list[float]]]:
    """(K_left, E_left, K_right, E_right): intrinsics 3x3 in pixels, extrinsics 3x4 camera-from-world."""
    k_left = [[FOCAL_PX, 0.0, CX_LEFT], [0.0, FOCAL_PX, CY], [0.0, 0.0, 1.0]]
    k_right = [[FOCAL_PX, 0.0, CX_LEFT + DOFFS_PX], [0.0, FOCAL_PX, CY], [0.0, 0.0, 1.0]]
    e_left = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    e_right = [[1.0, 0.0, 0.0, -BASELINE_M], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    return k_left, e_left, k_right, e_right


def write_middlebury_motorcycle(out_dir: str | Path) -> Path:
    """Write the pair as a manifest folder (``images/``, ``depth/``, ``manifest.json``); returns it."""
    from PIL import Image

    out = Path(out_dir)
    if (out / "manifest.json").exists():
        raise FileExistsError(f"{out} already holds a manifest; choose an empty folder")
    left, right, disparity = load_motorcycle()
    depth_left = disparity_to_depth(disparity)
    depth_right = warp_depth_to_right(depth_left, disparity)
    k_left, e_left, k_right, e_right = cameras()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(exist_ok=True)
    entries = []
    for index, (name, rgb, depth, k, e) in enumerate(
        [("left", left, depth_left, k_left, e_left), ("right", right, depth_right, k_right, e_right)]
    ):
        Image.fromarray(rgb).save(out / "images" / f"{name}.png")
        np.save(out / "depth" / f"{name}.npy", depth)
        h, w = rgb.shape[:2]
        entries.append(
            Entry(
                id=f"{SEQUENCE}#{name}",
                path=f"images/{name}.png",
                source=f"{SOURCE}: {name}",
                modality="visible",
                width=w,
                height=h,
                channels=3,
                bit_depth=8,
                original_width=w,
                original_height=h,
                sequence=SEQUENCE,
                frame_index=index,
                camera={"intrinsics": k, "extrinsics": e},
                depth=f"depth/{name}.npy",
                metadata={"depth_units": "m", "ground_truth": "Middlebury structured light"},
            )
        )
    write_manifest(
        Manifest(created_by=f"edgescene {__version__} middlebury", options={"dataset": DATASET_NAME}, entries=entries),
        out,
    )
    return out


__all__ = [
    "DATASET_NAME",
    "disparity_to_depth",
    "load_motorcycle",
    "warp_depth_to_right",
    "write_middlebury_motorcycle",
]
