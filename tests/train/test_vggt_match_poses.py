"""Relative poses measured on the frames (flow + essential matrix + the depth's scale), and how the
self-supervised loss uses them: rendered frames with exact depth, cameras and intrinsics."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

from edgescene.models.vggt.pose_encoding import extri_intri_to_pose_encoding
from edgescene.train.data.synthetic import render_sequence
from edgescene.train.vggt.match_poses import MatchPoseConfig, correspondences, match_poses
from edgescene.train.vggt.self_supervised import (
    SelfSupervisedConfig,
    known_fov,
    match_pose_consistency,
    photometric_loss,
    self_supervised_loss,
)

PAIRS = [(t, j) for t in range(4) for j in range(4) if j != t]


@pytest.fixture(scope="module")
def orbit():
    """4 consecutive orbit frames (6.5 degrees apart) at 96x128: images, depth (sky far), extrinsics, intrinsics."""
    seq = render_sequence(seed=3, trajectory="orbit", frames=24, width=128, height=96)
    images = torch.tensor(seq.frames[:4].transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32)[None]
    depth = torch.tensor(seq.depth[:4], dtype=torch.float32)[None]
    depth = torch.where(depth > 0, depth, torch.full_like(depth, 1e3))
    extrinsics = torch.tensor(np.asarray(seq.extrinsics[:4]), dtype=torch.float32)[None]
    intrinsics = torch.tensor(np.repeat(seq.intrinsics[None], 4, 0), dtype=torch.float32)[None]
    return images, depth, extrinsics, intrinsics


def _relative(extrinsics: torch.Tensor) -> torch.Tensor:
    """(B, S, 3, 4) camera-from-world -> (B, S, S, 3, 4) source-from-target."""
    r, t = extrinsics[..., :3], extrinsics[..., 3]
    rel_r = r[:, None] @ r[:, :, None].transpose(-1, -2)
    rel_t = t[:, None] - (rel_r @ t[:, :, None, :, None])[..., 0]
    return torch.cat([rel_r, rel_t[..., None]], -1)


def _rotation_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    cos = ((a.transpose(-1, -2) @ b).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return float(torch.rad2deg(torch.acos(cos.clamp(-1, 1))))


def test_measured_poses_follow_the_true_motion_and_its_scale(orbit):
    images, depth, extrinsics, intrinsics = orbit
    poses, ok, counts = match_poses(images, depth, intrinsics, PAIRS)
    truth = _relative(extrinsics)
    assert poses.shape == (1, 4, 4, 3, 4) and ok.dtype == torch.bool
    measured = [(t, j) for t, j in PAIRS if ok[0, t, j]]
    # measured: 5 of the 12 pairs pass the gate (40 inliers at 0.5 px), all of them 1 frame apart;
    # rotation errors 0.3-8 degrees for a true 6.5, translation within 0.03-0.8 of a true 0.55
    assert len(measured) >= 4 and all(abs(t - j) == 1 for t, j in measured)
    errors = [_rotation_deg(poses[0, t, j, :, :3], truth[0, t, j, :, :3]) for t, j in measured]
    assert np.median(errors) < 3.0  # measured 1.8
    assert min(errors) < 1.0
    lengths = [float(poses[0, t, j, :, 3].norm() / truth[0, t, j, :, 3].norm()) for t, j in measured]
    assert 0.5 < np.median(lengths) < 2.0  # the true depth's scale, so the true translation's length
    assert (counts[ok] >= MatchPoseConfig().min_inliers).all() and (counts[~ok] == 0).all()


def test_the_same_frames_give_the_same_poses(orbit):
    images, depth, _, intrinsics = orbit
    a = match_poses(images, depth, intrinsics, PAIRS)
    b = match_poses(images, depth, intrinsics, PAIRS)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_flat_frames_have_no_pose_and_leave_the_photometric_loss_unwarped():
    images = torch.full((1, 3, 3, 48, 64), 0.5)
    depth = torch.ones(1, 3, 48, 64)
    intrinsics = torch.tensor([[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]]).expand(1, 3, 3, 3)
    pairs = [(t, j) for t in range(3) for j in range(3) if j != t]
    poses, ok, _ = match_poses(images, depth, intrinsics, pairs)
    assert not ok.any() and torch.equal(poses[0, 0, 1], torch.eye(3, 4))
    grey = np.full((48, 64), 128, np.uint8)
    import cv2

    uv_t, uv_s = correspondences(grey, grey, MatchPoseConfig(), cv2.DISOpticalFlow.create())
    assert len(uv_t) == len(uv_s) == 0  # no texture, no correspondence
    loss, info = photometric_loss(images, depth, None, intrinsics, relative=(poses, ok))
    assert float(info["photo_kept"]) == 0.0 and float(loss) < 1e-4  # every pixel costs its unwarped error


def test_relative_poses_warp_exactly_as_the_cameras_they_come_from(orbit):
    images, depth, extrinsics, intrinsics = orbit
    cfg = SelfSupervisedConfig(conf_alpha=0.0, automask=False)
    by_cameras, _ = photometric_loss(images, depth, extrinsics, intrinsics, cfg=cfg)
    everything = torch.ones(1, 4, 4, dtype=torch.bool)
    relative = (_relative(extrinsics), everything)
    by_pairs, _ = photometric_loss(images, depth, None, intrinsics, cfg=cfg, relative=relative)
    assert float(by_pairs) == pytest.approx(float(by_cameras), abs=1e-5)
    none = torch.zeros(1, 4, 4, dtype=torch.bool)
    _, info = photometric_loss(images, depth, None, intrinsics, cfg=cfg, relative=(_relative(extrinsics), none))
    assert float(info["photo_kept"]) == 0.0  # a pair without a pose is left out


def test_match_pose_consistency_is_zero_for_agreeing_cameras_and_grows_with_disagreement(orbit):
    _, _, extrinsics, _ = orbit
    truth = _relative(extrinsics)
    ok = ~torch.eye(4, dtype=torch.bool)[None]  # the pairs: every frame against every other
    assert float(match_pose_consistency(extrinsics, truth, ok)) < 5e-3  # acos is clamped 1e-6 short of 1
    scaled = truth.clone()
    scaled[..., 3] *= 3.0  # the scale is the head's own: no cost
    assert float(match_pose_consistency(extrinsics, scaled, ok)) < 5e-3
    still = extrinsics[:, :1].expand_as(extrinsics).clone()  # a head predicting no motion at all
    still[..., 3] += torch.randn_like(still[..., 3]) * 0.01
    assert float(match_pose_consistency(still, truth, ok)) > 0.1
    assert float(match_pose_consistency(still, truth, torch.zeros_like(ok))) == 0.0  # no pair, no cost


def test_known_intrinsics_are_warped_through_and_supervise_the_field_of_view(orbit):
    images, depth, extrinsics, intrinsics = orbit
    wrong = intrinsics.clone()
    wrong[..., 0, 0] *= 1.3
    wrong[..., 1, 1] *= 1.3  # the camera head's focal length 1.3x off, as measured on the thermal benchmark
    pose_enc = extri_intri_to_pose_encoding(extrinsics, wrong, (96, 128)).requires_grad_(True)
    predictions = {"depth": depth[..., None], "pose_enc": pose_enc}
    cfg = SelfSupervisedConfig(warp_poses="camera_head", conf_alpha=0.0, point_weight=0, camera_weight=0)
    head = self_supervised_loss(images, predictions, cfg)
    known = self_supervised_loss(images, predictions, cfg, intrinsics, torch.tensor([True]))
    # the true calibration warps better
    assert float(known["photometric"].detach()) < float(head["photometric"].detach())
    expected = (pose_enc[..., 7:] - known_fov(intrinsics, (96, 128))).abs().mean()
    assert float(known["intrinsics"].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert float(expected.detach()) > 0.1
    known["total"].backward()
    assert pose_enc.grad is not None and pose_enc.grad[..., 7:].abs().sum() > 0
    skipped = self_supervised_loss(images, predictions, cfg, intrinsics, torch.tensor([False]))
    assert "intrinsics" not in skipped  # a window without a calibration keeps the head's


def test_the_default_loss_measures_its_poses_and_tells_how_many_pairs_had_one(orbit):
    images, depth, extrinsics, intrinsics = orbit
    pose_enc = extri_intri_to_pose_encoding(extrinsics, intrinsics, (96, 128)).requires_grad_(True)
    d = depth.clone().requires_grad_(True)
    out = self_supervised_loss(images, {"depth": d[..., None], "pose_enc": pose_enc})
    assert 0.3 < float(out["matched_pairs"]) <= 1.0  # measured 5 of 12 pairs on these frames
    # measured 1.06 rad (rotation + translation direction, summed) against the true cameras: at 128x96
    # the measured translation directions are loose; the term is small weight for that reason
    assert "match_pose" in out and 0 < float(out["match_pose"]) < 1.3
    out["total"].backward()
    assert d.grad is not None and d.grad.abs().sum() > 0
