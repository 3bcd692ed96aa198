"""Ground-truth normalisation for VGGT training (upstream ``training/train_utils/normalization.py``,
``normalize_camera_extrinsics_and_points_batch``, called in ``trainer._process_batch``), batched, in torch.

For every sample of the batch:

1. extrinsics become relative to the first camera, ``E_i E_0^-1``, so camera 0 is the identity
   (the world frame of VGGT's outputs);
2. depth is unprojected into camera points ``X_cam = ((u - cx) d / fx, (v - cy) d / fy, d)`` (pixel
   grid u = 0..W-1, v = 0..H-1, no +0.5, as :func:`edgescene.core.geometry.unproject_depth`) and
   carried into camera 0's frame, ``X = R_i^T (X_cam - t_i)`` with the relative extrinsics;
3. the scale is the mean distance of the valid points from camera 0's centre, clamped to
   [1e-6, 1e6]; translations, depth, camera points and world points are divided by it.

Invalid pixels keep 0 in every map.
"""

from __future__ import annotations

import torch

SCALE_MIN, SCALE_MAX = 1e-6, 1e6


def to_homogeneous(E: torch.Tensor) -> torch.Tensor:
    """(..., 3, 4) -> (..., 4, 4) with a last row [0, 0, 0, 1]."""
    bottom = torch.zeros(E.shape[:-2] + (1, 4), dtype=E.dtype, device=E.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([E, bottom], dim=-2)


def inverse_se3(E: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse ``[R^T | -R^T t]`` of (..., 3, 4) rigid transforms."""
    Rt = E[..., :3].transpose(-1, -2)
    return torch.cat([Rt, -(Rt @ E[..., 3:])], dim=-1)


def depth_to_camera_points(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """depth (..., H, W), intrinsics (..., 3, 3) -> camera-frame points (..., H, W, 3)."""
    h, w = depth.shape[-2:]
    v, u = torch.meshgrid(
        torch.arange(h, dtype=depth.dtype, device=depth.device),
        torch.arange(w, dtype=depth.dtype, device=depth.device),
        indexing="ij",
    )
    fx, fy = intrinsics[..., 0, 0, None, None], intrinsics[..., 1, 1, None, None]
    cx, cy = intrinsics[..., 0, 2, None, None], intrinsics[..., 1, 2, None, None]
    return torch.stack([(u - cx) * depth / fx, (v - cy) * depth / fy, depth], dim=-1)


def normalize_batch(
    extrinsics: torch.Tensor, intrinsics: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Normalise a batch of ground truth.

    extrinsics: (B, S, 3, 4) camera-from-world; intrinsics: (B, S, 3, 3); depth: (B, S, H, W);
    valid: (B, S, H, W) bool. Returns ``extrinsics`` (B, S, 3, 4) with camera 0 the identity,
    ``depth`` (B, S, H, W), ``cam_points`` and ``world_points`` (B, S, H, W, 3) in camera 0's frame,
    ``valid`` and ``scale`` (B,), all in the normalised unit (mean point distance 1).
    """
    if extrinsics.dim() != 4 or extrinsics.shape[-2:] != (3, 4):
        raise ValueError(f"extrinsics: expected (B, S, 3, 4), got {tuple(extrinsics.shape)}")
    if depth.dim() != 4 or depth.shape != valid.shape or depth.shape[:2] != extrinsics.shape[:2]:
        raise ValueError(
            f"depth {tuple(depth.shape)} and valid {tuple(valid.shape)} must be (B, S, H, W) "
            f"matching extrinsics {tuple(extrinsics.shape)}"
        )
    first_inv = to_homogeneous(inverse_se3(extrinsics[:, :1]))
    relative = (to_homogeneous(extrinsics) @ first_inv)[..., :3, :]
    mask = valid.to(depth.dtype)
    cam_points = depth_to_camera_points(depth, intrinsics) * mask[..., None]
    c2w = inverse_se3(relative)  # camera i -> camera 0
    world = torch.einsum("bsij,bshwj->bshwi", c2w[..., :3], cam_points) + c2w[:, :, None, None, :, 3]
    world = world * mask[..., None]
    distance = torch.linalg.vector_norm(world, dim=-1)
    count = mask.sum(dim=(1, 2, 3))
    scale = ((distance * mask).sum(dim=(1, 2, 3)) / (count + 1e-8)).clamp(SCALE_MIN, SCALE_MAX)
    inv = 1.0 / scale
    relative = torch.cat([relative[..., :3], relative[..., 3:] * inv[:, None, None, None]], dim=-1)
    return {
        "extrinsics": relative,
        "intrinsics": intrinsics,
        "depth": depth * inv[:, None, None, None],
        "cam_points": cam_points * inv[:, None, None, None, None],
        "world_points": world * inv[:, None, None, None, None],
        "valid": valid,
        "scale": scale,
    }
