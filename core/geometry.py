"""Pure numpy camera geometry shared by the runtime, evaluation and benchmarks.

Imports numpy and the standard library only (never torch, scipy or ``edgescene.models``).
Every function is pure, computes in float64 and returns the input's floating dtype
(float32 in -> float32 out; integer input gives float64).

Conventions (VGGT / OpenCV):

- Camera axes: x right, y down, z forward.
- Extrinsics are camera-from-world ``[R | t]`` of shape (..., 3, 4): ``X_cam = R X_world + t``.
  In VGGT outputs the first frame is the world frame.
- Intrinsics are ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels; VGGT puts the principal
  point at the image centre, ``cx = W / 2``, ``cy = H / 2``.
- Pixel grid for unprojection: ``u = 0..W-1`` (column), ``v = 0..H-1`` (row), no +0.5 offset
  (as upstream VGGT ``unproject_depth_map_to_point_map``).
- Quaternions are scalar-last ``(x, y, z, w)``.
- Pose encoding "absT_quaR_FoV": ``[t_x, t_y, t_z, q_x, q_y, q_z, q_w, fov_h, fov_w]``,
  field of view in radians.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "quat_to_rotmat",
    "rotmat_to_quat",
    "encode_pose",
    "decode_pose",
    "inverse_se3",
    "unproject_depth",
    "project_points",
    "umeyama_sim3",
    "apply_sim3",
    "robust_umeyama_sim3",
    "relative_pose_to_first",
]


def _check(x, name: str, trailing: tuple[int, ...], lead: str | None = "...") -> np.ndarray:
    """Return ``x`` as an array after checking its shape is ``(lead, *trailing)``.

    lead: "..." for any batch dims, a dim name such as "S" or "N" for exactly one, None for none.
    """
    x = np.asarray(x)
    n = len(trailing)
    ok = x.ndim >= n and tuple(x.shape[x.ndim - n :]) == trailing
    if lead != "...":
        ok = ok and x.ndim == n + (lead is not None)
    if not ok:
        dims = ", ".join(([lead] if lead else []) + [str(d) for d in trailing])
        raise ValueError(f"{name}: expected ({dims}), got {x.shape}")
    return x


def _out_dtype(*arrays) -> np.dtype:
    """Floating result dtype of the inputs (float64 when they are all integer / bool)."""
    dt = np.result_type(*[np.asarray(a).dtype for a in arrays])
    return dt if np.issubdtype(dt, np.floating) else np.dtype(np.float64)


def _image_size(image_size_hw) -> tuple[int, int]:
    if len(image_size_hw) != 2:
        raise ValueError(f"image_size_hw: expected (H, W), got {image_size_hw!r}")
    h, w = (int(v) for v in image_size_hw)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size_hw: expected positive (H, W), got {image_size_hw!r}")
    return h, w


def quat_to_rotmat(q) -> np.ndarray:
    """Rotation matrices from scalar-last quaternions.

    q: (..., 4) as (x, y, z, w), any non-zero norm (normalised inside via ``2 / |q|^2``, the
    pytorch3d formula). Returns (..., 3, 3). Raises ValueError for a zero quaternion.
    """
    q = _check(q, "q", (4,))
    dtype = _out_dtype(q)
    x, y, z, w = np.moveaxis(q.astype(np.float64), -1, 0)
    norm2 = x * x + y * y + z * z + w * w
    if np.any(norm2 <= 0.0):
        raise ValueError("q: quaternion with zero norm has no rotation")
    s = 2.0 / norm2
    rows = [
        1 - s * (y * y + z * z),
        s * (x * y - z * w),
        s * (x * z + y * w),
        s * (x * y + z * w),
        1 - s * (x * x + z * z),
        s * (y * z - x * w),
        s * (x * z - y * w),
        s * (y * z + x * w),
        1 - s * (x * x + y * y),
    ]
    return np.stack(rows, axis=-1).reshape(q.shape[:-1] + (3, 3)).astype(dtype)


def rotmat_to_quat(R) -> np.ndarray:
    """Unit scalar-last quaternions (x, y, z, w) from rotation matrices.

    R: (..., 3, 3) -> (..., 4). Robust for every rotation: of the four candidate formulas the one
    with the largest denominator is used (as pytorch3d ``matrix_to_quaternion``). The sign is
    canonicalised so that ``w >= 0`` (q and -q are the same rotation; at w == 0, i.e. 180 degrees,
    either sign may come out).
    """
    R = _check(R, "R", (3, 3))
    dtype = _out_dtype(R)
    m = R.astype(np.float64)
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4 * (w^2, x^2, y^2, z^2) for a unit quaternion; q_abs = 2 * |component|.
    q_abs = np.sqrt(
        np.maximum(
            np.stack(
                [
                    1 + m00 + m11 + m22,
                    1 + m00 - m11 - m22,
                    1 - m00 + m11 - m22,
                    1 - m00 - m11 + m22,
                ],
                axis=-1,
            ),
            0.0,
        )
    )
    # Row k is 2 * q_abs[k] * (w, x, y, z), i.e. the quaternion scaled by 4 * component k.
    candidates = np.stack(
        [
            np.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], axis=-1),
            np.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], axis=-1),
            np.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], axis=-1),
            np.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], axis=-1),
        ],
        axis=-2,
    )
    candidates = candidates / (2.0 * np.maximum(q_abs, 0.1))[..., None]
    best = np.argmax(q_abs, axis=-1)
    wxyz = np.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
    wxyz = wxyz / np.linalg.norm(wxyz, axis=-1, keepdims=True)
    wxyz = np.where(wxyz[..., :1] < 0, -wxyz, wxyz)
    return wxyz[..., [1, 2, 3, 0]].astype(dtype)


def encode_pose(extrinsics, intrinsics, image_size_hw) -> np.ndarray:
    """Pose encoding "absT_quaR_FoV" of VGGT.

    extrinsics: (..., 3, 4) camera-from-world; intrinsics: (..., 3, 3) (batch dims broadcast);
    image_size_hw: (H, W) in pixels. Returns (..., 9) =
    ``[t_x, t_y, t_z, q_x, q_y, q_z, q_w, fov_h, fov_w]`` with ``fov_h = 2 atan((H/2) / fy)`` and
    ``fov_w = 2 atan((W/2) / fx)`` in radians; q is the XYZW quaternion of R with w >= 0.
    """
    E = _check(extrinsics, "extrinsics", (3, 4))
    K = _check(intrinsics, "intrinsics", (3, 3))
    h, w = _image_size(image_size_hw)
    dtype = _out_dtype(E, K)
    try:
        batch = np.broadcast_shapes(E.shape[:-2], K.shape[:-2])
    except ValueError:
        raise ValueError(f"extrinsics {E.shape} and intrinsics {K.shape}: batch dims differ") from None
    E = np.broadcast_to(E.astype(np.float64), batch + (3, 4))
    K = np.broadcast_to(K.astype(np.float64), batch + (3, 3))
    fov_h = 2.0 * np.arctan((h / 2.0) / K[..., 1, 1])
    fov_w = 2.0 * np.arctan((w / 2.0) / K[..., 0, 0])
    quat = rotmat_to_quat(E[..., :3])
    enc = np.concatenate([E[..., 3], quat, fov_h[..., None], fov_w[..., None]], axis=-1)
    return enc.astype(dtype)


def decode_pose(pose_enc, image_size_hw) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_pose`.

    pose_enc: (..., 9) "absT_quaR_FoV"; image_size_hw: (H, W). Returns camera-from-world
    extrinsics (..., 3, 4) and intrinsics (..., 3, 3) with ``fy = (H/2) / tan(fov_h/2)``,
    ``fx = (W/2) / tan(fov_w/2)``, ``cx = W/2``, ``cy = H/2`` and no skew.
    """
    p = _check(pose_enc, "pose_enc", (9,))
    h, w = _image_size(image_size_hw)
    dtype = _out_dtype(p)
    p = p.astype(np.float64)
    R = quat_to_rotmat(p[..., 3:7])
    E = np.concatenate([R, p[..., :3, None]], axis=-1)
    K = np.zeros(p.shape[:-1] + (3, 3))
    K[..., 0, 0] = (w / 2.0) / np.tan(p[..., 8] / 2.0)
    K[..., 1, 1] = (h / 2.0) / np.tan(p[..., 7] / 2.0)
    K[..., 0, 2] = w / 2.0
    K[..., 1, 2] = h / 2.0
    K[..., 2, 2] = 1.0
    return E.astype(dtype), K.astype(dtype)


def inverse_se3(T) -> np.ndarray:
    """Closed-form inverse of rigid transforms ``[R | t]``: ``[R^T | -R^T t]``.

    T: (..., 3, 4) or (..., 4, 4) (the last row of a 4x4 is assumed ``[0, 0, 0, 1]``).
    Returns the same shape it got.
    """
    T = np.asarray(T)
    if T.ndim < 2 or T.shape[-1] != 4 or T.shape[-2] not in (3, 4):
        raise ValueError(f"T: expected (..., 3, 4) or (..., 4, 4), got {T.shape}")
    dtype = _out_dtype(T)
    T64 = T.astype(np.float64)
    Rt = np.swapaxes(T64[..., :3, :3], -1, -2)
    t_inv = -np.einsum("...ij,...j->...i", Rt, T64[..., :3, 3])
    out = np.zeros(T.shape)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = t_inv
    if T.shape[-2] == 4:
        out[..., 3, 3] = 1.0
    return out.astype(dtype)


def unproject_depth(depth, extrinsics, intrinsics) -> np.ndarray:
    """World points from per-frame depth maps.

    depth: (S, H, W) or (S, H, W, 1) z-depth along the camera's forward axis; extrinsics:
    (S, 3, 4) camera-from-world; intrinsics: (S, 3, 3). Pixel (u, v) = (column, row), no +0.5.
    ``X_cam = ((u - cx) d / fx, (v - cy) d / fy, d)``, ``X_world = R^T (X_cam - t)``.
    Returns world points (S, H, W, 3) in the units of depth / t.
    """
    d = np.asarray(depth)
    if d.ndim == 4 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim != 3:
        raise ValueError(f"depth: expected (S, H, W) or (S, H, W, 1), got {np.shape(depth)}")
    E = _check(extrinsics, "extrinsics", (3, 4), lead="S")
    K = _check(intrinsics, "intrinsics", (3, 3), lead="S")
    s, h, w = d.shape
    if E.shape[0] != s or K.shape[0] != s:
        raise ValueError(f"depth {d.shape}, extrinsics {E.shape} and intrinsics {K.shape}: frame counts differ")
    dtype = _out_dtype(d, E, K)
    d = d.astype(np.float64)
    E = E.astype(np.float64)
    K = K.astype(np.float64)
    u = np.arange(w, dtype=np.float64)[None, None, :]
    v = np.arange(h, dtype=np.float64)[None, :, None]
    fx, fy = K[:, 0, 0, None, None], K[:, 1, 1, None, None]
    cx, cy = K[:, 0, 2, None, None], K[:, 1, 2, None, None]
    cam = np.stack([(u - cx) * d / fx, (v - cy) * d / fy, d], axis=-1)  # (S, H, W, 3)
    cam = cam - E[:, None, None, :, 3]
    # R^T (X_cam - t) for every pixel: row vectors times R, one BLAS matmul per frame (einsum's
    # generic loop took 5x longer on the sample video)
    world = np.matmul(cam.reshape(s, h * w, 3), E[:, :, :3]).reshape(s, h, w, 3)
    return world.astype(dtype, copy=False)


def project_points(points_world, extrinsics, intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Project world points into one pinhole camera.

    points_world: (..., N, 3); extrinsics: (3, 4) camera-from-world; intrinsics: (3, 3).
    Returns pixels (..., N, 2) as (u, v) = (column, row) and camera z-depth (..., N).
    Points with z = 0 give inf / nan pixels.
    """
    P = _check(points_world, "points_world", (3,))
    if P.ndim < 2:
        raise ValueError(f"points_world: expected (..., N, 3), got {P.shape}")
    E = _check(extrinsics, "extrinsics", (3, 4), lead=None)
    K = _check(intrinsics, "intrinsics", (3, 3), lead=None)
    dtype = _out_dtype(P, E, K)
    E = E.astype(np.float64)
    K = K.astype(np.float64)
    cam = P.astype(np.float64) @ E[:, :3].T + E[:, 3]
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * cam[..., 0] / z + K[0, 1] * cam[..., 1] / z + K[0, 2]
        v = K[1, 1] * cam[..., 1] / z + K[1, 2]
    return np.stack([u, v], axis=-1).astype(dtype), z.astype(dtype)


def umeyama_sim3(src, dst, weights=None) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted least-squares similarity (Umeyama 1991).

    Finds s, R, t minimising ``sum_i w_i |dst_i - (s R src_i + t)|^2``. src, dst: (N, 3) with
    N >= 3; weights: optional non-negative (N,) (need not sum to 1). A reflection (det = -1)
    is never returned. Raises ValueError for fewer than 3 points, mismatched shapes, negative,
    non-finite or all-zero weights, and degenerate sources (identical or collinear points).
    Returns ``(s, R (3, 3), t (3,))``.
    """
    src = _check(src, "src", (3,), lead="N")
    dst = _check(dst, "dst", (3,), lead="N")
    if src.shape != dst.shape:
        raise ValueError(f"dst: expected {src.shape} like src, got {dst.shape}")
    n = src.shape[0]
    if n < 3:
        raise ValueError(f"src: expected at least 3 points (N, 3), got {src.shape}")
    dtype = _out_dtype(src, dst)
    x, y = src.astype(np.float64), dst.astype(np.float64)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("src / dst: points must be finite")
    if weights is None:
        w = np.ones(n)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(f"weights: expected ({n},), got {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("weights: expected finite non-negative values")
    total = w.sum()
    if total <= 0:
        raise ValueError("weights: all zero, nothing to align")
    w = w / total
    mu_x, mu_y = w @ x, w @ y
    xc, yc = x - mu_x, y - mu_y
    src_cov = (w[:, None] * xc).T @ xc
    var_x = np.trace(src_cov)
    spread = np.linalg.eigvalsh(src_cov)  # ascending
    if var_x <= 1e-300 or spread[1] <= 1e-12 * spread[2]:
        raise ValueError("src: degenerate point set (identical or collinear points)")
    cov = (w[:, None] * yc).T @ xc  # Sigma_xy = sum w (dst - mu_y)(src - mu_x)^T
    U, D, Vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        sign[2] = -1.0
    R = (U * sign) @ Vt
    s = float((D * sign).sum() / var_x)
    t = mu_y - s * R @ mu_x
    return s, R.astype(dtype), t.astype(dtype)


def apply_sim3(points, s, R, t) -> np.ndarray:
    """Apply a similarity: ``s R p + t`` for points (..., 3); R (3, 3), t (3,). Returns (..., 3)."""
    P = _check(points, "points", (3,))
    R = _check(R, "R", (3, 3), lead=None)
    t = _check(t, "t", (3,), lead=None)
    dtype = _out_dtype(P)
    out = float(s) * (P.astype(np.float64) @ R.astype(np.float64).T) + t.astype(np.float64)
    return out.astype(dtype)


def _robust_weights(residuals: np.ndarray, c: float, loss: str) -> np.ndarray:
    r = residuals / c
    if loss == "cauchy":
        return 1.0 / (1.0 + r * r)
    return np.where(r <= 1.0, 1.0, 1.0 / np.maximum(r, 1.0))  # huber


def robust_umeyama_sim3(
    src, dst, weights=None, iterations: int = 5, threshold: float | None = None, loss: str = "cauchy"
):
    """Outlier-robust similarity by iteratively reweighted :func:`umeyama_sim3`.

    src, dst: (N, 3); weights: optional non-negative prior weights (N,). Each iteration computes
    residual distances ``|dst - (s R src + t)|`` and re-weights points with the ``loss`` kernel
    ("cauchy": ``1 / (1 + (r/c)^2)``, which fully suppresses gross outliers; "huber":
    ``min(1, c/r)``) times the prior weights. The scale c is ``threshold`` (same units as dst) or,
    when None, ``1.4826 * median residual`` of the prior-weighted points, re-estimated each
    iteration and floored at ``1e-9 * (rms spread of dst)`` to avoid division by zero.
    Returns ``(s, R (3, 3), t (3,), final_weights (N,))``; final_weights are the ones used by the
    last fit (prior times robust).
    """
    if loss not in ("cauchy", "huber"):
        raise ValueError(f"loss: expected 'cauchy' or 'huber', got {loss!r}")
    if iterations < 0:
        raise ValueError(f"iterations: expected >= 0, got {iterations}")
    if threshold is not None and not threshold > 0:
        raise ValueError(f"threshold: expected > 0, got {threshold}")
    s, R, t = umeyama_sim3(src, dst, weights)  # validates everything
    x = np.asarray(src, dtype=np.float64)
    y = np.asarray(dst, dtype=np.float64)
    prior = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
    spread = float(np.sqrt(np.mean(np.sum((y - y.mean(axis=0)) ** 2, axis=-1))))
    floor = 1e-9 * spread if spread > 0 else 1e-12
    w = prior.copy()
    for _ in range(iterations):
        residuals = np.linalg.norm(y - apply_sim3(x, s, R.astype(np.float64), t.astype(np.float64)), axis=-1)
        if threshold is None:
            c = max(1.4826 * float(np.median(residuals[prior > 0])), floor)
        else:
            c = float(threshold)
        w = prior * _robust_weights(residuals, c, loss)
        s, R, t = umeyama_sim3(src, dst, w)
    return s, R, t, w.astype(_out_dtype(np.asarray(src), np.asarray(dst)))


def relative_pose_to_first(extrinsics) -> np.ndarray:
    """Re-express camera-from-world extrinsics so frame 0 is the world frame.

    extrinsics: (S, 3, 4) (or (..., S, 3, 4)) camera-from-world. Returns ``E_i E_0^{-1}`` for
    every frame, shape unchanged; frame 0 becomes ``[I | 0]`` and relative poses
    ``E_i E_j^{-1}`` are preserved.
    """
    E = _check(extrinsics, "extrinsics", (3, 4))
    if E.ndim < 3 or E.shape[-3] == 0:
        raise ValueError(f"extrinsics: expected (..., S, 3, 4) with S >= 1, got {E.shape}")
    dtype = _out_dtype(E)
    E = E.astype(np.float64)
    inv0 = inverse_se3(E[..., :1, :, :])  # (..., 1, 3, 4)
    R = E[..., :3] @ inv0[..., :3]
    t = np.einsum("...ij,...j->...i", E[..., :3], inv0[..., 3]) + E[..., 3]
    return np.concatenate([R, t[..., None]], axis=-1).astype(dtype)
