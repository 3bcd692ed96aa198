"""Torch twin of VGGT's pose encoding "absT_quaR_FoV" (``vggt/utils/pose_enc.py``, ``vggt/utils/rotation.py``).

The numpy originals live in :mod:`edgescene.core.geometry` (``encode_pose`` / ``decode_pose`` /
``rotmat_to_quat`` / ``quat_to_rotmat``); training needs them on tensors (ground-truth pose
encodings for the camera loss, predicted cameras for validation), and
``tests/models/test_pose_encoding.py`` checks that the two agree.

Pose encoding: ``[t_x, t_y, t_z, q_x, q_y, q_z, q_w, fov_h, fov_w]``: translation of the
camera-from-world extrinsic, scalar-last quaternion with ``w >= 0``, fields of view in radians with
``fov_h = 2 atan((H/2) / fy)`` and ``fov_w = 2 atan((W/2) / fx)``. Decoding puts the principal
point at the image centre (``cx = W/2``, ``cy = H/2``) with no skew, as upstream.
"""

from __future__ import annotations

import torch

__all__ = [
    "extri_intri_to_pose_encoding",
    "pose_encoding_to_extri_intri",
    "mat_to_quat",
    "quat_to_mat",
    "rotation_angle_deg",
]


def _image_size(image_size_hw) -> tuple[int, int]:
    if len(image_size_hw) != 2:
        raise ValueError(f"image_size_hw: expected (H, W), got {image_size_hw!r}")
    h, w = (int(v) for v in image_size_hw)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size_hw: expected positive (H, W), got {image_size_hw!r}")
    return h, w


def quat_to_mat(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) scalar-last quaternions (any non-zero norm) -> (..., 3, 3) rotation matrices."""
    if q.shape[-1] != 4:
        raise ValueError(f"q: expected (..., 4), got {tuple(q.shape)}")
    x, y, z, w = q.unbind(-1)
    s = 2.0 / (x * x + y * y + z * z + w * w)
    rows = (
        1 - s * (y * y + z * z),
        s * (x * y - z * w),
        s * (x * z + y * w),
        s * (x * y + z * w),
        1 - s * (x * x + z * z),
        s * (y * z - x * w),
        s * (x * z - y * w),
        s * (y * z + x * w),
        1 - s * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def mat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) unit scalar-last quaternions with ``w >= 0``.

    Of the four candidate formulas the one with the largest denominator is used (pytorch3d
    ``matrix_to_quaternion``), as :func:`edgescene.core.geometry.rotmat_to_quat`.
    """
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"R: expected (..., 3, 3), got {tuple(R.shape)}")
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    q_abs = torch.sqrt(
        torch.clamp(
            torch.stack(
                [
                    1 + m00 + m11 + m22,
                    1 + m00 - m11 - m22,
                    1 - m00 + m11 - m22,
                    1 - m00 - m11 + m22,
                ],
                dim=-1,
            ),
            min=0.0,
        )
    )
    candidates = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    )
    candidates = candidates / (2.0 * torch.clamp(q_abs, min=0.1))[..., None]
    best = q_abs.argmax(dim=-1)
    wxyz = torch.gather(candidates, -2, best[..., None, None].expand(best.shape + (1, 4)))[..., 0, :]
    wxyz = wxyz / torch.linalg.vector_norm(wxyz, dim=-1, keepdim=True)
    wxyz = torch.where(wxyz[..., :1] < 0, -wxyz, wxyz)
    return wxyz[..., [1, 2, 3, 0]]


def extri_intri_to_pose_encoding(extrinsics: torch.Tensor, intrinsics: torch.Tensor, image_size_hw) -> torch.Tensor:
    """extrinsics (..., 3, 4) camera-from-world, intrinsics (..., 3, 3), image (H, W) -> (..., 9)."""
    if extrinsics.shape[-2:] != (3, 4):
        raise ValueError(f"extrinsics: expected (..., 3, 4), got {tuple(extrinsics.shape)}")
    if intrinsics.shape[-2:] != (3, 3):
        raise ValueError(f"intrinsics: expected (..., 3, 3), got {tuple(intrinsics.shape)}")
    h, w = _image_size(image_size_hw)
    batch = torch.broadcast_shapes(extrinsics.shape[:-2], intrinsics.shape[:-2])
    E = extrinsics.expand(batch + (3, 4))
    K = intrinsics.expand(batch + (3, 3))
    fov_h = 2.0 * torch.atan((h / 2.0) / K[..., 1, 1])
    fov_w = 2.0 * torch.atan((w / 2.0) / K[..., 0, 0])
    return torch.cat([E[..., 3], mat_to_quat(E[..., :3]), fov_h[..., None], fov_w[..., None]], dim=-1)


def pose_encoding_to_extri_intri(pose_enc: torch.Tensor, image_size_hw) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 9) pose encodings -> extrinsics (..., 3, 4) camera-from-world and intrinsics (..., 3, 3)."""
    if pose_enc.shape[-1] != 9:
        raise ValueError(f"pose_enc: expected (..., 9), got {tuple(pose_enc.shape)}")
    h, w = _image_size(image_size_hw)
    R = quat_to_mat(pose_enc[..., 3:7])
    E = torch.cat([R, pose_enc[..., :3, None]], dim=-1)
    fx = (w / 2.0) / torch.tan(pose_enc[..., 8] / 2.0)
    fy = (h / 2.0) / torch.tan(pose_enc[..., 7] / 2.0)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    K = torch.stack([fx, zero, zero + w / 2.0, zero, fy, zero + h / 2.0, zero, zero, one], dim=-1)
    return E, K.reshape(pose_enc.shape[:-1] + (3, 3))


def depth_to_world_points(depth: torch.Tensor, pose_enc: torch.Tensor) -> torch.Tensor:
    """Depth (S, H, W) and pose encodings (S, 9) -> points (S, H, W, 3) in the world (first camera's)
    frame, with the conventions of ``edgescene.core.geometry.unproject_depth``: pixel (u, v) = (column,
    row), no +0.5; ``X_cam = ((u - cx) d / fx, (v - cy) d / fy, d)``, ``X_world = R^T (X_cam - t)``.
    Computed in the inputs' dtype on their device (the runtime's numpy version works in float64)."""
    s, h, w = depth.shape
    extrinsics, intrinsics = pose_encoding_to_extri_intri(pose_enc, (h, w))
    u = torch.arange(w, device=depth.device, dtype=depth.dtype)[None, None, :]
    v = torch.arange(h, device=depth.device, dtype=depth.dtype)[None, :, None]
    fx, fy = intrinsics[:, 0, 0, None, None], intrinsics[:, 1, 1, None, None]
    cx, cy = intrinsics[:, 0, 2, None, None], intrinsics[:, 1, 2, None, None]
    cam = torch.stack(((u - cx) * depth / fx, (v - cy) * depth / fy, depth), dim=-1)  # (S, H, W, 3)
    cam = cam - extrinsics[:, None, None, :, 3]
    return (cam.reshape(s, h * w, 3) @ extrinsics[:, :, :3]).reshape(s, h, w, 3)  # row vectors: R^T x


def rotation_angle_deg(R_a: torch.Tensor, R_b: torch.Tensor) -> torch.Tensor:
    """Angle in degrees of the rotation taking ``R_a`` to ``R_b``; (..., 3, 3) each -> (...)."""
    trace = (R_a.transpose(-1, -2) @ R_b).diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.rad2deg(torch.acos(torch.clamp((trace - 1.0) / 2.0, -1.0, 1.0)))
