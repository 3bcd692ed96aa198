"""Exact ray casting of a :class:`Scene` through a pinhole camera: RGB and depth.

Pixel (u, v) (column, row; integers, no half-pixel offset) looks along the camera ray
``((u - cx) / fx, (v - cy) / fy, 1)`` in OpenCV camera axes (x right, y down, z forward). Because
that ray has unit z, the ray parameter at the first hit *is* the depth along the camera axis, so
depth is exact to floating point, and :func:`edgescene.core.geometry.unproject_depth` maps it
back to the exact surface points. Rays that hit nothing closer than ``far`` (the ground runs to the
horizon) see the sky and get depth 0 (invalid).

With a :class:`~edgescene.core.lens.LensDistortion`, pixel (u, v) looks along the ray that OpenCV's
model distorts onto it (still unit z, so depth stays the z of the hit): the image a real lens takes.
"""

from __future__ import annotations

import numpy as np

from edgescene.core.lens import LensDistortion, undistorted_rays
from edgescene.train.data.synthetic.scene import Scene
from edgescene.train.data.synthetic.textures import sample_texture_lod


def camera_rays(
    intrinsics: np.ndarray,
    extrinsics: np.ndarray,
    height: int,
    width: int,
    distortion: LensDistortion | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """World-space ray origin (3,) and directions (H*W, 3), scaled so camera z == 1 along each."""
    intrinsics = np.asarray(intrinsics, np.float64)
    extrinsics = np.asarray(extrinsics, np.float64)
    if distortion is not None and not distortion.is_identity:
        dirs_cam = undistorted_rays(intrinsics, distortion, height, width)
    else:
        fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
        v, u = np.mgrid[0:height, 0:width].astype(np.float64)
        dirs_cam = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1).reshape(-1, 3)
    rotation, translation = extrinsics[:, :3], extrinsics[:, 3]
    origin = -rotation.T @ translation
    return origin, dirs_cam @ rotation  # (R^T d^T)^T


DEFAULT_FAR = 60.0


def render(
    scene: Scene,
    intrinsics: np.ndarray,
    extrinsics: np.ndarray,
    height: int,
    width: int,
    far: float = DEFAULT_FAR,
    distortion: LensDistortion | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """-> rgb (H, W, 3) uint8, depth (H, W) float32 (metres along the camera z axis, <= far; 0 = sky)."""
    origin, dirs = camera_rays(intrinsics, extrinsics, height, width, distortion)
    pixel_focal = float(np.sqrt(intrinsics[0][0] * intrinsics[1][1]))
    hits = np.stack([p.intersect(origin, dirs) for p in scene.primitives])  # (P, N)
    nearest = hits.argmin(axis=0)
    depth = hits[nearest, np.arange(len(dirs))]
    hit = depth <= far
    color = np.empty((len(dirs), 3), np.float32)
    unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    elevation = np.clip(unit[:, 1], 0, 1)[:, None]
    color[:] = scene.sky_horizon * (1 - elevation) + scene.sky_zenith * elevation
    for index, primitive in enumerate(scene.primitives):
        mask = hit & (nearest == index)
        if not mask.any():
            continue
        points = origin + depth[mask, None] * dirs[mask]
        normals, u, v = primitive.surface(points, dirs[mask])
        # Pixel footprint on the surface in texels, widened at grazing angles -> mipmap level.
        cos = np.abs(np.einsum("ij,ij->i", normals, unit[mask])).clip(0.2, 1.0)
        footprint = depth[mask] / pixel_focal * primitive.texels_per_metre / cos
        albedo = sample_texture_lod(scene.textures[primitive.texture], u, v, np.log2(np.maximum(footprint, 1.0)))
        diffuse = np.clip(normals @ scene.light_dir, 0.0, None)[:, None]
        color[mask] = albedo * (scene.ambient + (1 - scene.ambient) * diffuse) * scene.light_color
    rgb = np.clip(np.rint(color * 255), 0, 255).astype(np.uint8).reshape(height, width, 3)
    return rgb, np.where(hit, depth, 0.0).astype(np.float32).reshape(height, width)
