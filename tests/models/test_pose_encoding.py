"""The torch pose encoding (models/vggt/pose_encoding.py) equals the numpy one (runtime/geometry.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgescene.core.geometry import decode_pose, encode_pose, quat_to_rotmat, rotmat_to_quat
from edgescene.models.vggt.pose_encoding import (
    extri_intri_to_pose_encoding,
    mat_to_quat,
    pose_encoding_to_extri_intri,
    quat_to_mat,
    rotation_angle_deg,
)

HW = (42, 56)


def random_cameras(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    R = quat_to_rotmat(q)
    # include the awkward cases: identity and 180-degree turns about each axis
    R[:4] = [np.eye(3), np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0])]
    E = np.concatenate([R, rng.normal(size=(n, 3, 1))], axis=-1)
    K = np.zeros((n, 3, 3))
    K[:, 0, 0], K[:, 1, 1] = rng.uniform(20, 80, n), rng.uniform(20, 80, n)
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = HW[1] / 2, HW[0] / 2, 1.0
    return E, K


def test_encode_equals_numpy():
    E, K = random_cameras(64)
    ours = extri_intri_to_pose_encoding(torch.from_numpy(E), torch.from_numpy(K), HW).numpy()
    ref = encode_pose(E, K, HW)
    # 180-degree turns have w == 0, where either quaternion sign is correct
    np.testing.assert_allclose(ours[4:], ref[4:], atol=1e-12)
    np.testing.assert_allclose(np.abs(ours[:4]), np.abs(ref[:4]), atol=1e-12)


def test_encode_float32_and_batched_shapes():
    E, K = random_cameras(12, seed=1)
    ours = extri_intri_to_pose_encoding(
        torch.from_numpy(E).float().reshape(3, 4, 3, 4), torch.from_numpy(K).float().reshape(3, 4, 3, 3), HW
    )
    assert ours.shape == (3, 4, 9) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.reshape(12, 9)[4:].numpy(), encode_pose(E, K, HW)[4:], atol=1e-5)


def test_decode_equals_numpy_and_round_trips():
    E, K = random_cameras(32, seed=2)
    enc = encode_pose(E, K, HW)
    E_t, K_t = pose_encoding_to_extri_intri(torch.from_numpy(enc), HW)
    E_n, K_n = decode_pose(enc, HW)
    np.testing.assert_allclose(E_t.numpy(), E_n, atol=1e-12)
    np.testing.assert_allclose(K_t.numpy(), K_n, atol=1e-12)
    np.testing.assert_allclose(E_t.numpy(), E, atol=1e-9)
    np.testing.assert_allclose(K_t.numpy(), K, atol=1e-9)


def test_quaternion_helpers_equal_numpy():
    q = np.random.default_rng(3).normal(size=(50, 4))
    np.testing.assert_allclose(quat_to_mat(torch.from_numpy(q)).numpy(), quat_to_rotmat(q), atol=1e-12)
    R = quat_to_rotmat(q)
    np.testing.assert_allclose(mat_to_quat(torch.from_numpy(R)).numpy(), rotmat_to_quat(R), atol=1e-12)


def test_rotation_angle():
    a = torch.eye(3, dtype=torch.float64)
    c, s = np.cos(np.deg2rad(30.0)), np.sin(np.deg2rad(30.0))
    b = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert rotation_angle_deg(a, b).item() == pytest.approx(30.0, abs=1e-6)
    assert rotation_angle_deg(b, b).item() == pytest.approx(0.0, abs=1e-4)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="extrinsics"):
        extri_intri_to_pose_encoding(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3), HW)
    with pytest.raises(ValueError, match="pose_enc"):
        pose_encoding_to_extri_intri(torch.zeros(2, 8), HW)
    with pytest.raises(ValueError, match="image_size_hw"):
        pose_encoding_to_extri_intri(torch.zeros(2, 9), (0, 5))


def test_depth_to_world_points_equals_the_runtime_unprojection():
    """The in-graph unprojection (torch, float32, on the model's device) against the runtime's numpy
    float64 one, on random cameras and depth: the same points within float32 rounding."""
    from edgescene.core.geometry import decode_pose, unproject_depth
    from edgescene.models.vggt.pose_encoding import depth_to_world_points

    gen = torch.Generator().manual_seed(3)
    s, h, w = 3, 14, 28
    pose = torch.cat(
        (
            torch.randn(s, 3, generator=gen),
            torch.nn.functional.normalize(torch.randn(s, 4, generator=gen), dim=-1),
            torch.full((s, 2), 1.1),
        ),
        dim=-1,
    )
    depth = 0.5 + torch.rand(s, h, w, generator=gen) * 4
    got = depth_to_world_points(depth, pose).numpy()
    extrinsics, intrinsics = decode_pose(pose.double().numpy(), (h, w))
    want = unproject_depth(depth.double().numpy(), extrinsics, intrinsics)
    assert got.shape == (s, h, w, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max(), rtol=0)
