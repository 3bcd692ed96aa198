"""Tests for edgescene.core.geometry (pure numpy, no torch)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from edgescene.core import geometry as g

# ----------------------------------------------------------------------------- helpers


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform random rotations via normalised Gaussian quaternions, computed independently."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def axis_angle(axis, angle: float) -> np.ndarray:
    """Rodrigues' formula."""
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def random_extrinsics(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.concatenate([random_rotations(rng, n), rng.normal(size=(n, 3, 1))], axis=-1)


def intrinsics(fx: float, fy: float, h: int, w: int) -> np.ndarray:
    return np.array([[fx, 0.0, w / 2.0], [0.0, fy, h / 2.0], [0.0, 0.0, 1.0]])


def rot_angle(R1: np.ndarray, R2: np.ndarray) -> float:
    c = (np.trace(R1.T @ R2) - 1.0) / 2.0
    return float(np.arccos(np.clip(c, -1.0, 1.0)))


# ----------------------------------------------------------------------------- module


def test_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import edgescene.core.geometry"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_bad_shape_names_argument():
    with pytest.raises(ValueError, match=r"extrinsics: expected \(\.\.\., 3, 4\), got \(3, 3\)"):
        g.encode_pose(np.eye(3), np.eye(3), (10, 10))
    with pytest.raises(ValueError, match="q: expected"):
        g.quat_to_rotmat(np.zeros(3))
    with pytest.raises(ValueError, match="T: expected"):
        g.inverse_se3(np.eye(3))
    with pytest.raises(ValueError, match=r"src: expected \(N, 3\), got \(2, 5, 3\)"):
        g.umeyama_sim3(np.zeros((2, 5, 3)), np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match=r"extrinsics: expected \(3, 4\), got \(1, 3, 4\)"):
        g.project_points(np.zeros((5, 3)), np.zeros((1, 3, 4)), np.eye(3))
    with pytest.raises(ValueError, match="depth: expected"):
        g.unproject_depth(np.ones((4, 4)), np.zeros((1, 3, 4)), np.eye(3)[None])


# ----------------------------------------------------------------------------- quaternions


def test_quat_rotmat_round_trip_random():
    rng = np.random.default_rng(0)
    R = random_rotations(rng, 500)
    q = g.rotmat_to_quat(R)
    assert q.shape == (500, 4)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    assert np.all(q[:, 3] >= 0)
    np.testing.assert_allclose(g.quat_to_rotmat(q), R, atol=1e-12)
    # And q -> R -> q (up to the w >= 0 canonical sign).
    q0 = rng.normal(size=(500, 4))
    q0 /= np.linalg.norm(q0, axis=-1, keepdims=True)
    q0 *= np.sign(q0[:, 3:])
    np.testing.assert_allclose(g.rotmat_to_quat(g.quat_to_rotmat(q0)), q0, atol=1e-12)


@pytest.mark.parametrize("axis", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, -2, 3)])
@pytest.mark.parametrize("angle", [0.0, math.pi, math.pi - 1e-9, 1e-9, 2.0])
def test_quat_rotmat_round_trip_special(axis, angle):
    R = axis_angle(axis, angle)
    q = g.rotmat_to_quat(R)
    np.testing.assert_allclose(np.linalg.norm(q), 1.0, atol=1e-12)
    assert q[3] >= 0
    np.testing.assert_allclose(g.quat_to_rotmat(q), R, atol=1e-12)


def test_identity_and_half_turns():
    np.testing.assert_allclose(g.rotmat_to_quat(np.eye(3)), [0, 0, 0, 1], atol=1e-15)
    for i, R in enumerate([np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])]):
        expected = np.zeros(4)
        expected[i] = 1.0
        q = g.rotmat_to_quat(R)
        np.testing.assert_allclose(np.abs(q), expected, atol=1e-15)
        np.testing.assert_allclose(g.quat_to_rotmat(q), R, atol=1e-15)


def test_quat_90_degrees_about_z():
    s = math.sin(math.pi / 4)
    R_expected = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(g.quat_to_rotmat([0, 0, s, s]), R_expected, atol=1e-15)
    np.testing.assert_allclose(g.rotmat_to_quat(R_expected), [0, 0, s, s], atol=1e-15)
    # Rotates the x axis onto the y axis.
    np.testing.assert_allclose(R_expected @ [1, 0, 0], [0, 1, 0])


def test_quat_non_unit_gives_same_rotation():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(50, 4))
    q_unit = q / np.linalg.norm(q, axis=-1, keepdims=True)
    scaled = q * rng.uniform(0.01, 100.0, size=(50, 1))
    np.testing.assert_allclose(g.quat_to_rotmat(scaled), g.quat_to_rotmat(q_unit), atol=1e-12)
    with pytest.raises(ValueError):
        g.quat_to_rotmat(np.zeros(4))


def test_quat_batched_shapes():
    rng = np.random.default_rng(2)
    R = random_rotations(rng, 24).reshape(2, 3, 4, 3, 3)
    q = g.rotmat_to_quat(R)
    assert q.shape == (2, 3, 4, 4)
    assert g.quat_to_rotmat(q).shape == (2, 3, 4, 3, 3)


# ----------------------------------------------------------------------------- pose encoding


def test_encode_decode_round_trip():
    rng = np.random.default_rng(3)
    n, h, w = 16, 294, 518
    E = random_extrinsics(rng, n)
    K = np.stack([intrinsics(fx, fy, h, w) for fx, fy in rng.uniform(100, 1000, size=(n, 2))])
    enc = g.encode_pose(E, K, (h, w))
    assert enc.shape == (n, 9)
    np.testing.assert_allclose(enc[:, :3], E[:, :, 3])
    assert np.all(enc[:, 6] >= 0)
    E2, K2 = g.decode_pose(enc, (h, w))
    np.testing.assert_allclose(E2, E, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(K2, K, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(g.encode_pose(E2, K2, (h, w)), enc, rtol=1e-6, atol=1e-12)


def test_encode_pose_hand_case():
    enc = g.encode_pose(np.eye(3, 4), intrinsics(50.0, 50.0, 100, 100), (100, 100))
    np.testing.assert_allclose(enc, [0, 0, 0, 0, 0, 0, 1, math.pi / 2, math.pi / 2], atol=1e-15)
    # Different H and W: fov_h uses fy and H, fov_w uses fx and W.
    enc = g.encode_pose(np.eye(3, 4), intrinsics(100.0, 25.0, 50, 200), (50, 200))
    np.testing.assert_allclose(enc[7:], [2 * math.atan(1.0), 2 * math.atan(1.0)], atol=1e-15)
    enc = g.encode_pose(np.eye(3, 4), intrinsics(100.0, 100.0, 50, 200), (50, 200))
    np.testing.assert_allclose(enc[7:], [2 * math.atan(0.25), 2 * math.atan(1.0)], atol=1e-15)
    E, K = g.decode_pose(enc, (50, 200))
    np.testing.assert_allclose(K, intrinsics(100.0, 100.0, 50, 200), atol=1e-12)


def test_encode_decode_batched():
    rng = np.random.default_rng(4)
    E = random_extrinsics(rng, 6).reshape(2, 3, 3, 4)
    K = intrinsics(300.0, 320.0, 480, 640)  # broadcast over the batch
    enc = g.encode_pose(E, K, (480, 640))
    assert enc.shape == (2, 3, 9)
    E2, K2 = g.decode_pose(enc, (480, 640))
    assert E2.shape == (2, 3, 3, 4) and K2.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(E2, E, atol=1e-12)
    np.testing.assert_allclose(K2, np.broadcast_to(K, (2, 3, 3, 3)), atol=1e-12)


# ----------------------------------------------------------------------------- inverse_se3


@pytest.mark.parametrize("homogeneous", [False, True])
def test_inverse_se3(homogeneous):
    rng = np.random.default_rng(5)
    E = random_extrinsics(rng, 12).reshape(3, 4, 3, 4)
    T = E
    if homogeneous:
        T = np.zeros((3, 4, 4, 4))
        T[..., :3, :] = E
        T[..., 3, 3] = 1.0
    inv = g.inverse_se3(T)
    assert inv.shape == T.shape

    def hom(x):
        if x.shape[-2] == 4:
            return x
        out = np.zeros(x.shape[:-2] + (4, 4))
        out[..., :3, :] = x
        out[..., 3, 3] = 1.0
        return out

    np.testing.assert_allclose(hom(T) @ hom(inv), np.broadcast_to(np.eye(4), (3, 4, 4, 4)), atol=1e-12)
    np.testing.assert_allclose(hom(inv) @ hom(T), np.broadcast_to(np.eye(4), (3, 4, 4, 4)), atol=1e-12)


# ----------------------------------------------------------------------------- (un)projection


def test_unproject_then_project_round_trip():
    rng = np.random.default_rng(6)
    s, h, w = 2, 12, 16
    E = random_extrinsics(rng, s)
    K = np.stack([intrinsics(20.0, 22.0, h, w), intrinsics(15.0, 15.0, h, w)])
    depth = rng.uniform(0.5, 5.0, size=(s, h, w, 1))
    world = g.unproject_depth(depth, E, K)
    assert world.shape == (s, h, w, 3)
    vv, uu = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    grid = np.stack([uu, vv], axis=-1).astype(np.float64)
    for i in range(s):
        pix, z = g.project_points(world[i], E[i], K[i])  # (H, W, 3) as batch (H,) of N=W points
        np.testing.assert_allclose(pix, grid, atol=1e-5)
        np.testing.assert_allclose(z, depth[i, ..., 0], atol=1e-5)
    # Frames have different poses: the same pixel lands at different world points.
    assert not np.allclose(world[0], world[1])
    # (S, H, W) depth gives the same answer as (S, H, W, 1).
    np.testing.assert_array_equal(g.unproject_depth(depth[..., 0], E, K), world)


def test_unproject_hand_case():
    depth = np.zeros((1, 2, 4))
    depth[0, 1, 3] = 2.0  # row v=1, column u=3
    K = np.eye(3)[None]  # fx = fy = 1, cx = cy = 0
    world = g.unproject_depth(depth, np.eye(3, 4)[None], K)
    np.testing.assert_allclose(world[0, 1, 3], [6.0, 2.0, 2.0])
    # With a translation t = (1, 0, 0): X_world = X_cam - t.
    E = np.eye(3, 4)[None].copy()
    E[0, 0, 3] = 1.0
    np.testing.assert_allclose(g.unproject_depth(depth, E, K)[0, 1, 3], [5.0, 2.0, 2.0])


def test_unproject_frame_count_mismatch():
    with pytest.raises(ValueError, match="frame counts"):
        g.unproject_depth(np.ones((2, 3, 3)), np.zeros((1, 3, 4)), np.eye(3)[None])


# ----------------------------------------------------------------------------- umeyama


def make_sim3_problem(rng, n=50):
    src = rng.normal(size=(n, 3)) * [3.0, 2.0, 1.0]
    R = random_rotations(rng, 1)[0]
    s, t = 2.5, np.array([1.0, -2.0, 0.5])
    return src, s, R, t, g.apply_sim3(src, s, R, t)


def test_umeyama_recovers_exact():
    rng = np.random.default_rng(7)
    src, s, R, t, dst = make_sim3_problem(rng)
    s2, R2, t2 = g.umeyama_sim3(src, dst)
    assert isinstance(s2, float)
    assert abs(s2 - s) < 1e-9
    np.testing.assert_allclose(R2, R, atol=1e-9)
    np.testing.assert_allclose(t2, t, atol=1e-9)


def test_umeyama_weights_ignore_corrupted_points():
    rng = np.random.default_rng(8)
    src, s, R, t, dst = make_sim3_problem(rng)
    dst = dst.copy()
    dst[:10] += rng.normal(scale=10.0, size=(10, 3))
    weights = np.ones(len(src))
    weights[:10] = 0.0
    s2, R2, t2 = g.umeyama_sim3(src, dst, weights)
    assert abs(s2 - s) < 1e-9
    np.testing.assert_allclose(R2, R, atol=1e-9)
    np.testing.assert_allclose(t2, t, atol=1e-9)
    # Scaling all weights changes nothing.
    s3, R3, _ = g.umeyama_sim3(src, dst, 7.0 * weights)
    assert abs(s3 - s2) < 1e-12 and np.allclose(R3, R2, atol=1e-12)


def test_umeyama_reflection_gives_proper_rotation():
    rng = np.random.default_rng(9)
    src = rng.normal(size=(30, 3))
    dst = src * [1.0, 1.0, -1.0]  # mirror image: best orthogonal map would be a reflection
    s, R, t = g.umeyama_sim3(src, dst)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    assert s > 0


def test_umeyama_errors():
    rng = np.random.default_rng(10)
    pts = rng.normal(size=(5, 3))
    with pytest.raises(ValueError, match="at least 3"):
        g.umeyama_sim3(pts[:2], pts[:2])
    with pytest.raises(ValueError):
        g.umeyama_sim3(pts, pts[:4])
    with pytest.raises(ValueError):
        g.umeyama_sim3(pts[:, :2], pts[:, :2])
    with pytest.raises(ValueError, match="all zero"):
        g.umeyama_sim3(pts, pts, np.zeros(5))
    with pytest.raises(ValueError, match="weights"):
        g.umeyama_sim3(pts, pts, -np.ones(5))
    with pytest.raises(ValueError, match="weights"):
        g.umeyama_sim3(pts, pts, np.ones(4))
    same = np.tile([[1.0, 2.0, 3.0]], (5, 1))
    with pytest.raises(ValueError, match="degenerate"):
        g.umeyama_sim3(same, pts)
    collinear = np.outer(np.arange(5.0), [1.0, 2.0, -1.0])
    with pytest.raises(ValueError, match="degenerate"):
        g.umeyama_sim3(collinear, pts)


def test_apply_sim3_batched():
    R = axis_angle((0, 0, 1), math.pi / 2)
    pts = np.array([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]])  # (2, 1, 3)
    out = g.apply_sim3(pts, 2.0, R, np.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(out, [[[0.0, 2.0, 1.0]], [[-2.0, 0.0, 1.0]]], atol=1e-15)


def test_robust_umeyama_beats_plain_with_outliers():
    rng = np.random.default_rng(11)
    n = 200
    src, s, R, t, dst = make_sim3_problem(rng, n)
    dst = dst.copy()
    outliers = rng.choice(n, size=n // 5, replace=False)
    dst[outliers] += rng.normal(scale=5.0, size=(len(outliers), 3))

    s_p, R_p, t_p = g.umeyama_sim3(src, dst)
    plain_err = max(abs(s_p - s), rot_angle(R_p, R), np.linalg.norm(t_p - t))
    assert plain_err > 1e-2

    s_r, R_r, t_r, w = g.robust_umeyama_sim3(src, dst)
    assert abs(s_r - s) < 1e-3
    assert rot_angle(R_r, R) < 1e-3
    assert np.linalg.norm(t_r - t) < 1e-3
    assert w.shape == (n,)
    inlier = np.ones(n, dtype=bool)
    inlier[outliers] = False
    assert w[outliers].max() < w[inlier].min()


def test_robust_umeyama_huber_and_threshold():
    rng = np.random.default_rng(12)
    src, s, R, t, dst = make_sim3_problem(rng, 100)
    s2, R2, t2, w = g.robust_umeyama_sim3(src, dst, loss="huber", threshold=0.1)
    assert abs(s2 - s) < 1e-9 and np.allclose(R2, R, atol=1e-9)
    np.testing.assert_allclose(w, 1.0)
    with pytest.raises(ValueError):
        g.robust_umeyama_sim3(src, dst, loss="l7")


# ----------------------------------------------------------------------------- relative poses


def test_relative_pose_to_first():
    rng = np.random.default_rng(13)
    E = random_extrinsics(rng, 5)
    rel = g.relative_pose_to_first(E)
    assert rel.shape == (5, 3, 4)
    np.testing.assert_allclose(rel[0], np.eye(3, 4), atol=1e-12)

    def hom(x):
        out = np.zeros(x.shape[:-2] + (4, 4))
        out[..., :3, :] = x
        out[..., 3, 3] = 1.0
        return out

    # E_i E_j^{-1} (camera j -> camera i) is unchanged by the re-anchoring.
    for i, j in [(1, 2), (3, 0), (4, 1)]:
        before = hom(E[i]) @ np.linalg.inv(hom(E[j]))
        after = hom(rel[i]) @ np.linalg.inv(hom(rel[j]))
        np.testing.assert_allclose(after, before, atol=1e-12)
    # Matches E_i E_0^{-1} computed the slow way.
    np.testing.assert_allclose(hom(rel), hom(E) @ np.linalg.inv(hom(E[0])), atol=1e-12)


# ----------------------------------------------------------------------------- dtypes


def test_float32_in_float32_out():
    rng = np.random.default_rng(14)
    E = random_extrinsics(rng, 2).astype(np.float32)
    K = np.stack([intrinsics(20.0, 20.0, 8, 10)] * 2).astype(np.float32)
    enc = g.encode_pose(E, K, (8, 10))
    assert enc.dtype == np.float32
    E2, K2 = g.decode_pose(enc, (8, 10))
    assert E2.dtype == np.float32 and K2.dtype == np.float32
    np.testing.assert_allclose(E2, E, atol=1e-5)
    depth = rng.uniform(1, 2, size=(2, 8, 10)).astype(np.float32)
    assert g.unproject_depth(depth, E, K).dtype == np.float32
    assert g.quat_to_rotmat(np.array([0, 0, 0, 1], np.float32)).dtype == np.float32
    assert g.rotmat_to_quat(np.eye(3, dtype=np.float32)).dtype == np.float32
    assert g.inverse_se3(E).dtype == np.float32
    assert g.relative_pose_to_first(E).dtype == np.float32
    # Float64 stays float64.
    assert g.encode_pose(E.astype(np.float64), K.astype(np.float64), (8, 10)).dtype == np.float64
