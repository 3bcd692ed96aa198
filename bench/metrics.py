"""Accuracy metrics for depth and camera poses, pure numpy.

Definitions follow the published evaluation code (``shared/reference/EXPORT_AND_RUNTIME_PEERS.md``
section 3.2) so that numbers are comparable:

- Video depth (CUT3R ``eval/video_depth``): one median scale per sequence, then AbsRel and
  delta < 1.25 over every valid pixel of the sequence (all frames pooled).
- Pose AUC (StreamVGGT ``test_co3d.py::calculate_auc_np``): for every image pair, the error is the
  larger of the relative rotation error and the relative translation angle error, in degrees;
  histogram in 1-degree bins up to the threshold, cumulative sum over the number of pairs, averaged.
- ATE (CUT3R ``eval/relpose``, ``evo ape --align --correct_scale``): RMSE of camera centres after
  a Sim(3) Umeyama alignment of the prediction onto the ground truth.

Conventions as :mod:`edgescene.core.geometry`: extrinsics are camera-from-world ``[R | t]``
(S, 3, 4), OpenCV axes. Everything is computed in float64; results are Python floats. Degenerate
inputs (fewer than two cameras, no valid depth, non-finite values) raise ``ValueError``.
Imports numpy and :mod:`edgescene.core.geometry` only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgescene.core.geometry import inverse_se3, umeyama_sim3

__all__ = [
    "depth_metrics",
    "rotation_error_deg",
    "translation_angle_deg",
    "relative_pose_errors",
    "auc_from_errors",
    "pose_auc",
    "ate",
    "camera_centres",
]

DELTA = 1.25


# ----------------------------------------------------------------------------------------- depth
def depth_metrics(pred, gt, valid=None) -> dict[str, float]:
    """Scale-invariant depth accuracy of one sequence.

    pred, gt: (S, H, W) z-depth (or (H, W) for one frame); valid: optional bool mask of the same
    shape. Valid pixels are ``valid & isfinite(gt) & (gt > 0)`` (gt 0 marks no depth).

    - ``median_scale`` = median(gt) / median(pred) over the valid pixels: ONE factor for the whole
      sequence, so a prediction off by a global factor is perfect.
    - ``abs_rel`` = mean over valid pixels of ``|s pred - gt| / gt``.
    - ``delta_1_25`` = fraction of valid pixels with ``max(s pred / gt, gt / (s pred)) < 1.25``;
      a pixel whose predicted depth is not positive counts as a miss.

    Raises ValueError for mismatched shapes, no valid pixel, a non-finite prediction at a valid
    pixel or a non-positive median prediction (nothing to scale).
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim not in (2, 3):
        raise ValueError(f"depth_metrics: pred {pred.shape} and gt {gt.shape} must both be (S, H, W) or (H, W)")
    mask = np.isfinite(gt) & (gt > 0)
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != gt.shape:
            raise ValueError(f"depth_metrics: valid {valid.shape} must match gt {gt.shape}")
        mask &= valid.astype(bool)
    if not mask.any():
        raise ValueError("depth_metrics: no valid ground-truth depth (gt > 0, finite, inside valid)")
    p, g = pred[mask], gt[mask]
    if not np.all(np.isfinite(p)):
        raise ValueError(f"depth_metrics: prediction is not finite at {int((~np.isfinite(p)).sum())} valid pixels")
    med_p = float(np.median(p))
    if med_p <= 0:
        raise ValueError(f"depth_metrics: median predicted depth is {med_p:g} (not positive); cannot scale it")
    scale = float(np.median(g)) / med_p
    p = p * scale
    abs_rel = float(np.mean(np.abs(p - g) / g))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(p > 0, np.maximum(p / g, g / p), np.inf)
    return {"abs_rel": abs_rel, "delta_1_25": float(np.mean(ratio < DELTA)), "median_scale": scale}


# ----------------------------------------------------------------------------------------- poses
def _extrinsics(E, name: str) -> np.ndarray:
    E = np.asarray(E, dtype=np.float64)
    if E.ndim != 3 or E.shape[1:] != (3, 4):
        raise ValueError(f"{name}: expected (S, 3, 4) camera-from-world extrinsics, got {E.shape}")
    if not np.all(np.isfinite(E)):
        raise ValueError(f"{name}: extrinsics must be finite")
    return E


def rotation_error_deg(R_pred, R_gt) -> np.ndarray:
    """Geodesic angle in degrees of ``R_pred R_gt^T`` for rotations (..., 3, 3), in [0, 180].

    Computed as ``atan2(|vee(M - M^T)| / 2, (trace(M) - 1) / 2)`` with ``M = R_pred R_gt^T``: exact
    near 0 and 180 degrees (``arccos`` of the trace loses half the digits near 0).
    """
    A = np.asarray(R_pred, dtype=np.float64)
    B = np.asarray(R_gt, dtype=np.float64)
    if A.ndim < 2 or A.shape[-2:] != (3, 3) or B.shape[-2:] != (3, 3):
        raise ValueError(f"rotation_error_deg: expected (..., 3, 3) rotations, got {A.shape} and {B.shape}")
    M = A @ np.swapaxes(B, -1, -2)
    vee = np.stack([M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0], M[..., 1, 0] - M[..., 0, 1]], -1)
    sin = 0.5 * np.linalg.norm(vee, axis=-1)
    cos = 0.5 * (np.trace(M, axis1=-2, axis2=-1) - 1.0)
    return np.degrees(np.arctan2(sin, cos))


def translation_angle_deg(t_pred, t_gt, sign_ambiguity: bool = False) -> np.ndarray:
    """Angle in degrees between translation directions (..., 3) -> (...), in [0, 180].

    A vector of zero length has no direction: the angle is 0 when both are zero and 90 degrees when
    only one is (StreamVGGT's eps-normalised formula gives 90 for a zero vector). "Zero" means a
    length at most 1e-9 times the largest length in the same array (or exactly 0). With
    ``sign_ambiguity`` the angle is folded to ``min(a, 180 - a)`` as VGGT / StreamVGGT
    ``translation_angle(..., ambiguity=True)`` do (then in [0, 90]).
    """
    a = np.asarray(t_pred, dtype=np.float64)
    b = np.asarray(t_gt, dtype=np.float64)
    if a.shape != b.shape or a.shape[-1:] != (3,):
        raise ValueError(f"translation_angle_deg: expected equal (..., 3) shapes, got {a.shape} and {b.shape}")
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    za = na <= 1e-9 * (na.max() if na.size else 0.0)
    zb = nb <= 1e-9 * (nb.max() if nb.size else 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = np.linalg.norm(np.cross(a, b), axis=-1)
        dot = np.sum(a * b, axis=-1)
        angle = np.degrees(np.arctan2(cross, dot))  # exact near 0 and 180
    angle = np.where(za | zb, 90.0, angle)
    angle = np.where(za & zb, 0.0, angle)
    if sign_ambiguity:
        angle = np.minimum(angle, np.abs(180.0 - angle))
    return angle


def relative_pose_errors(pred_extrinsics, gt_extrinsics, sign_ambiguity: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation errors in degrees for every pair ``i < j`` (P = S (S - 1) / 2 pairs).

    The relative pose of a pair is ``E_i E_j^-1`` (camera i from camera j), as StreamVGGT's
    ``se3_to_relative_pose_error``: ``R_ij = R_i R_j^T``, ``t_ij = t_i - R_ij t_j``. Rotation error:
    :func:`rotation_error_deg` of ``R_ij_pred`` against ``R_ij_gt``; translation error:
    :func:`translation_angle_deg` of ``t_ij_pred`` against ``t_ij_gt``. Both are invariant to any
    similarity (rotation, translation, positive scale) applied to either world. Pairs are in the
    order of ``np.triu_indices(S, 1)`` (= ``torch.combinations``). Returns ``(rot (P,), trans (P,))``.
    """
    P = _extrinsics(pred_extrinsics, "pred_extrinsics")
    G = _extrinsics(gt_extrinsics, "gt_extrinsics")
    if P.shape != G.shape:
        raise ValueError(f"pred_extrinsics {P.shape} and gt_extrinsics {G.shape} must have the same shape")
    if P.shape[0] < 2:
        raise ValueError(f"pose metrics need at least 2 cameras (one pair), got {P.shape[0]}")
    i, j = np.triu_indices(P.shape[0], 1)

    def relative(E):
        R = E[i, :, :3] @ np.swapaxes(E[j, :, :3], -1, -2)
        t = E[i, :, 3] - np.einsum("pab,pb->pa", R, E[j, :, 3])
        return R, t

    Rp, tp = relative(P)
    Rg, tg = relative(G)
    return rotation_error_deg(Rp, Rg), translation_angle_deg(tp, tg, sign_ambiguity)


def auc_from_errors(errors, threshold: int) -> float:
    """StreamVGGT ``calculate_auc_np`` on per-pair errors in degrees (already ``max(rot, trans)``).

    ``histogram(errors, bins=arange(threshold + 1))`` (1-degree bins, the last one closed at the
    threshold), divided by the number of pairs, cumulative sum, mean over the ``threshold`` bins.
    Errors above the threshold count as misses. 1.0 when every error is below 1 degree.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or threshold < 1:
        raise ValueError(f"AUC threshold must be a positive whole number of degrees, got {threshold!r}")
    e = np.asarray(errors, dtype=np.float64).ravel()
    if e.size == 0:
        raise ValueError("AUC needs at least one pair error")
    histogram, _ = np.histogram(e, bins=np.arange(int(threshold) + 1))
    return float(np.mean(np.cumsum(histogram / float(e.size))))


def pose_auc(
    pred_extrinsics, gt_extrinsics, thresholds: Sequence[int] = (30,), sign_ambiguity: bool = False
) -> dict[str, float]:
    """Pose AUC of one sequence: ``{"auc_30": ...}`` (one key ``auc_<t>`` per threshold).

    pred_extrinsics, gt_extrinsics: (S, 3, 4) camera-from-world, S >= 2. For every pair i < j the
    error is ``max(rotation error, translation angle error)`` of the relative poses
    (:func:`relative_pose_errors`), scored with :func:`auc_from_errors`. Invariant to a global
    similarity of either trajectory; perfect poses give 1.0. ``sign_ambiguity=True`` reproduces
    StreamVGGT's sign-blind translation angle; the default compares directions with their sign.
    """
    rot, trans = relative_pose_errors(pred_extrinsics, gt_extrinsics, sign_ambiguity)
    err = np.maximum(rot, trans)
    if not thresholds:
        raise ValueError("pose_auc needs at least one threshold")
    return {f"auc_{int(t)}": auc_from_errors(err, t) for t in thresholds}


# ------------------------------------------------------------------------------------------- ATE
def camera_centres(extrinsics) -> np.ndarray:
    """Camera centres (S, 3) in world coordinates of camera-from-world extrinsics: ``-R^T t``."""
    E = _extrinsics(extrinsics, "extrinsics")
    return inverse_se3(E)[:, :, 3]


def _sim3_residuals(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Residuals ``dst - (s R src + t)`` of the least-squares similarity.

    :func:`edgescene.core.geometry.umeyama_sim3` when it accepts the points; it refuses
    collinear or identical sources because the rotation is then not unique. The
    residual of the optimum still is, so for those the same closed form is applied here: Umeyama's
    ``R = U diag(1, 1, det) V^T`` remains optimal for a rank-deficient covariance, and a source
    without spread gets ``s = 0`` (the infimum over positive scales: every centre on the gt mean).
    """
    try:
        s, R, t = umeyama_sim3(src, dst)
        return dst - (s * src @ np.asarray(R, np.float64).T + np.asarray(t, np.float64))
    except ValueError:
        pass
    mu_x, mu_y = src.mean(0), dst.mean(0)
    xc, yc = src - mu_x, dst - mu_y
    var_x = float(np.mean(np.sum(xc * xc, axis=1)))
    if var_x <= 1e-300:
        return yc
    U, D, Vt = np.linalg.svd(yc.T @ xc / len(src))
    sign = np.array([1.0, 1.0, -1.0 if np.linalg.det(U) * np.linalg.det(Vt) < 0 else 1.0])
    R = (U * sign) @ Vt
    s = float((D * sign).sum() / var_x)
    return yc - s * xc @ R.T


def ate(pred_centres, gt_centres) -> dict[str, float]:
    """Absolute trajectory error of one sequence after Sim(3) alignment.

    pred_centres, gt_centres: (S, 3) camera centres, S >= 3 (use :func:`camera_centres` for
    extrinsics). The prediction is aligned onto the ground truth with the least-squares similarity
    (Umeyama: rotation, translation, scale), then

    - ``ate_rmse`` = ``sqrt(mean_i |gt_i - (s R pred_i + t)|^2)``, in ground-truth units;
    - ``ate_rel`` = ``ate_rmse / extent``, extent = the largest distance between two gt centres.

    A prediction that differs from the ground truth by a similarity gives 0. Raises ValueError for
    fewer than 3 cameras (a similarity maps any 2 distinct centres exactly: ATE would always be 0),
    mismatched shapes, non-finite values or a ground truth that does not move.
    """
    p = np.asarray(pred_centres, dtype=np.float64)
    g = np.asarray(gt_centres, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or p.shape != g.shape:
        raise ValueError(f"ate: pred_centres {p.shape} and gt_centres {g.shape} must both be (S, 3)")
    if p.shape[0] < 3:
        raise ValueError(f"ate needs at least 3 cameras (2 always align exactly), got {p.shape[0]}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(g))):
        raise ValueError("ate: camera centres must be finite")
    extent = float(np.max(np.linalg.norm(g[:, None] - g[None], axis=-1)))
    if extent <= 0:
        raise ValueError("ate: the ground-truth cameras do not move (zero extent); ATE is undefined")
    rmse = float(np.sqrt(np.mean(np.sum(_sim3_residuals(p, g) ** 2, axis=1))))
    return {"ate_rmse": rmse, "ate_rel": rmse / extent}
