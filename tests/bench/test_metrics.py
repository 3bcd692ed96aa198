"""Hand cases for edgescene.bench.metrics: known answers, invariances, degenerate inputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgescene.bench.metrics import (
    ate,
    auc_from_errors,
    camera_centres,
    depth_metrics,
    pose_auc,
    relative_pose_errors,
    rotation_error_deg,
    translation_angle_deg,
)


def rot(axis, deg) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.radians(deg)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def trajectory(s: int = 6, seed: int = 0) -> np.ndarray:
    """Camera-from-world (S, 3, 4): an arc of cameras, each turned a little, all moving."""
    rng = np.random.default_rng(seed)
    E = []
    for i in range(s):
        R = rot(rng.normal(size=3), rng.uniform(5, 40))
        c = np.array([np.cos(0.3 * i) * 3, 0.2 * i, np.sin(0.3 * i) * 3]) + rng.normal(scale=0.05, size=3)
        E.append(np.concatenate([R, (-R @ c)[:, None]], axis=1))
    return np.stack(E)


def similarity(E: np.ndarray, s: float, Q: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The same cameras in a world moved by x' = s Q x + u."""
    R = E[:, :, :3] @ Q.T
    c = s * camera_centres(E) @ Q.T + u
    t = -np.einsum("sij,sj->si", R, c)
    return np.concatenate([R, t[..., None]], axis=-1)


# ----------------------------------------------------------------------------------------- depth
def test_perfect_depth():
    gt = np.random.default_rng(0).uniform(1, 10, (3, 8, 10))
    m = depth_metrics(gt, gt)
    assert m["abs_rel"] == 0.0 and m["delta_1_25"] == 1.0 and m["median_scale"] == pytest.approx(1.0)


def test_depth_off_by_a_global_factor_is_perfect():
    gt = np.random.default_rng(1).uniform(1, 10, (3, 8, 10))
    m = depth_metrics(gt * 0.137, gt)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert m["delta_1_25"] == 1.0
    assert m["median_scale"] == pytest.approx(1 / 0.137)


def test_known_error_pattern():
    gt = np.full((2, 10, 10), 4.0)
    pred = gt.copy()
    pred[:, :4] *= 1.1  # 40% of the pixels 10% too far; the median stays 4 -> scale 1
    m = depth_metrics(pred, gt)
    assert m["median_scale"] == pytest.approx(1.0)
    assert m["abs_rel"] == pytest.approx(0.04)
    assert m["delta_1_25"] == 1.0
    pred = gt.copy()
    pred[:, :3] *= 1.3  # 30% of the pixels 30% too far: past 1.25
    m = depth_metrics(pred, gt)
    assert m["abs_rel"] == pytest.approx(0.09)
    assert m["delta_1_25"] == pytest.approx(0.7)


def test_depth_masks_invalid_pixels_and_misses_non_positive_predictions():
    gt = np.full((1, 4, 4), 2.0)
    gt[0, 0] = 0.0  # no depth
    pred = np.full((1, 4, 4), 2.0)
    pred[0, 0] = 100.0  # ignored: gt is 0 there
    assert depth_metrics(pred, gt)["abs_rel"] == 0.0
    valid = np.ones_like(gt, bool)
    valid[0, 1] = False
    pred[0, 1] = -5.0  # masked out
    assert depth_metrics(pred, gt, valid)["delta_1_25"] == 1.0
    pred[0, 2, :2] = -5.0  # 2 of the 8 valid pixels negative: misses
    assert depth_metrics(pred, gt, valid)["delta_1_25"] == pytest.approx(6 / 8)


def test_depth_degenerate_inputs():
    with pytest.raises(ValueError, match="no valid ground-truth depth"):
        depth_metrics(np.ones((1, 4, 4)), np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="must both be"):
        depth_metrics(np.ones((1, 4, 4)), np.ones((1, 4, 5)))
    with pytest.raises(ValueError, match="not finite"):
        depth_metrics(np.full((1, 4, 4), np.nan), np.ones((1, 4, 4)))
    with pytest.raises(ValueError, match="not positive"):
        depth_metrics(-np.ones((1, 4, 4)), np.ones((1, 4, 4)))


# ----------------------------------------------------------------------------------------- poses
def test_rotation_and_translation_angles():
    assert rotation_error_deg(rot([0, 0, 1], 30), np.eye(3)) == pytest.approx(30.0)
    assert rotation_error_deg(rot([1, 2, 3], 179.0), np.eye(3)) == pytest.approx(179.0)
    assert rotation_error_deg(np.eye(3), np.eye(3)) == 0.0
    assert translation_angle_deg(np.array([1.0, 0, 0]), np.array([0, 2.0, 0])) == pytest.approx(90.0)
    assert translation_angle_deg(np.array([1.0, 0, 0]), np.array([-1.0, 0, 0])) == pytest.approx(180.0)
    assert translation_angle_deg(np.array([1.0, 0, 0]), np.array([-1.0, 0, 0]), sign_ambiguity=True) == pytest.approx(
        0.0
    )
    assert translation_angle_deg(np.zeros(3), np.array([1.0, 0, 0])) == 90.0
    assert translation_angle_deg(np.zeros(3), np.zeros(3)) == 0.0


def test_auc_matches_streamvggt_histogram():
    # 1-degree bins up to the threshold; cumsum / pairs, averaged
    assert auc_from_errors([0.0, 0.5], 30) == 1.0
    assert auc_from_errors([31.0, 90.0], 30) == 0.0
    assert auc_from_errors([0.5, 40.0], 30) == pytest.approx(0.5)
    assert auc_from_errors([10.5], 30) == pytest.approx(20 / 30)  # bins 10..29 hold it
    with pytest.raises(ValueError, match="positive whole number"):
        auc_from_errors([1.0], 0)


def test_pose_auc_perfect_perturbed_and_similarity_invariant():
    gt = trajectory()
    assert pose_auc(gt, gt)["auc_30"] == pytest.approx(1.0, abs=1e-9)
    moved = similarity(gt, 2.7, rot([0.3, -1, 0.2], 77), np.array([5.0, -2, 1]))
    assert pose_auc(moved, gt)["auc_30"] == pytest.approx(1.0, abs=1e-9)
    assert pose_auc(moved.astype(np.float32), gt)["auc_30"] == pytest.approx(1.0, abs=1e-9)
    rng = np.random.default_rng(3)
    noisy = gt.copy()
    for i in range(len(noisy)):
        noisy[i, :, :3] = rot(rng.normal(size=3), 8.0) @ noisy[i, :, :3]
    auc = pose_auc(noisy, gt, thresholds=(5, 30))
    assert auc["auc_30"] < 0.9 and auc["auc_5"] < auc["auc_30"]
    noisy_moved = similarity(noisy, 0.4, rot([1, 1, 0], -33), np.array([0.0, 3, 0]))
    assert pose_auc(noisy_moved, gt, thresholds=(5, 30)) == pytest.approx(auc, abs=1e-9)


def test_relative_pose_errors_pairs_and_zero_motion():
    gt = trajectory(4)
    rot_err, trans_err = relative_pose_errors(gt, gt)
    assert rot_err.shape == trans_err.shape == (6,)
    still = np.tile(np.eye(3, 4), (4, 1, 1))  # no motion: no translation direction -> 90 degrees
    _, trans_err = relative_pose_errors(still, gt)
    assert np.all(trans_err == 90.0)
    assert pose_auc(still, gt)["auc_30"] == 0.0


def test_pose_degenerate_inputs():
    with pytest.raises(ValueError, match="at least 2 cameras"):
        pose_auc(trajectory(1), trajectory(1))
    with pytest.raises(ValueError, match="same shape"):
        pose_auc(trajectory(3), trajectory(4))
    with pytest.raises(ValueError, match=r"\(S, 3, 4\)"):
        pose_auc(np.zeros((3, 4, 4)), np.zeros((3, 4, 4)))
    bad = trajectory(3)
    bad[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        pose_auc(bad, trajectory(3))


# ------------------------------------------------------------------------------------------- ATE
def test_ate_zero_for_a_similar_trajectory():
    gt = trajectory(8)
    moved = similarity(gt, 0.31, rot([2, -1, 0.5], 120), np.array([1.0, 2, 3]))
    m = ate(camera_centres(moved), camera_centres(gt))
    assert m["ate_rmse"] == pytest.approx(0.0, abs=1e-9) and m["ate_rel"] == pytest.approx(0.0, abs=1e-9)


def test_ate_known_error_and_relative_extent():
    gt = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])  # unit square, extent sqrt(2)
    pred = gt * 3.0
    pred[0] += [0, 0, 0.3]
    pred[2] -= [0, 0, 0.3]  # after alignment the z offsets cannot be explained by a similarity
    m = ate(pred, gt)
    assert 0 < m["ate_rmse"] < 0.1
    assert m["ate_rel"] == pytest.approx(m["ate_rmse"] / np.sqrt(2))


def test_ate_collinear_and_static_predictions():
    gt = np.stack([np.arange(5.0), np.zeros(5), np.zeros(5)], 1)  # a straight walk
    line = np.stack([np.zeros(5), np.zeros(5), 2.0 * np.arange(5)], 1)
    assert ate(line, gt)["ate_rmse"] == pytest.approx(0.0, abs=1e-9)
    still = np.zeros((5, 3))  # no motion: best is every centre on the gt mean
    expected = np.sqrt(np.mean(np.sum((gt - gt.mean(0)) ** 2, 1)))
    assert ate(still, gt)["ate_rmse"] == pytest.approx(expected)


def test_ate_degenerate_inputs():
    with pytest.raises(ValueError, match="at least 3 cameras"):
        ate(np.zeros((2, 3)), np.eye(3)[:2])
    with pytest.raises(ValueError, match="do not move"):
        ate(np.random.default_rng(0).normal(size=(4, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"\(S, 3\)"):
        ate(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="finite"):
        ate(np.full((3, 3), np.inf), np.eye(3))
