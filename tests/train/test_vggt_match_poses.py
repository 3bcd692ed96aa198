"""Relative poses measured on the frames (flow + essential matrix + the depth's scale), and how the
self-supervised loss uses them: rendered frames with exact depth, cameras and intrinsics."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

from edgescene.models.vggt.pose_encoding import extri_intri_to_pose_encoding
from edgescene.train.data.synthetic import render_sequence
from edgescene.train.vggt.match_poses import (
    MatchPoseConfig,
    correspondences,
    known_poses,
    match_poses,
    through_reference,
)
from edgescene.train.vggt.self_supervised import (
    SelfSupervisedConfig,
    known_fov,
    match_pose_consistency,
    photometric_loss,
    self_supervised_loss,
)

PAIRS = [(t, j) for t in range(4) for j in range(4) if j != t]


def _render(trajectory: str, width: int, height: int):
    """4 consecutive frames of a rendered sequence (seed 3): images, depth (sky far), extrinsics, intrinsics."""
    seq = render_sequence(seed=3, trajectory=trajectory, frames=24, width=width, height=height)
    images = torch.tensor(seq.frames[:4].transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32)[None]
    depth = torch.tensor(seq.depth[:4], dtype=torch.float32)[None]
    depth = torch.where(depth > 0, depth, torch.full_like(depth, 1e3))
    extrinsics = torch.tensor(np.asarray(seq.extrinsics[:4]), dtype=torch.float32)[None]
    intrinsics = torch.tensor(np.repeat(seq.intrinsics[None], 4, 0), dtype=torch.float32)[None]
    return images, depth, extrinsics, intrinsics


@pytest.fixture(scope="module")
def orbit():
    """An orbit (6.5 degrees between frames) at 96x128."""
    return _render("orbit", 128, 96)


@pytest.fixture(scope="module")
def handheld():
    """A handheld sweep (7.9 degrees between neighbours) at 192x256."""
    return _render("handheld", 256, 192)


def _relative(extrinsics: torch.Tensor) -> torch.Tensor:
    """(B, S, 3, 4) camera-from-world -> (B, S, S, 3, 4) source-from-target."""
    r, t = extrinsics[..., :3], extrinsics[..., 3]
    rel_r = r[:, None] @ r[:, :, None].transpose(-1, -2)
    rel_t = t[:, None] - (rel_r @ t[:, :, None, :, None])[..., 0]
    return torch.cat([rel_r, rel_t[..., None]], -1)


def _rotation_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    cos = ((a.transpose(-1, -2) @ b).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return float(torch.rad2deg(torch.acos(cos.clamp(-1, 1))))


def _errors(poses, ok, extrinsics):
    """Rotation errors (degrees) and translation errors relative to the true length, over the pairs with a pose."""
    truth = _relative(extrinsics)
    rot, trans = [], []
    for t, j in PAIRS:
        if ok[0, t, j]:
            rot.append(_rotation_deg(poses[0, t, j, :, :3], truth[0, t, j, :, :3]))
            trans.append(float((poses[0, t, j, :, 3] - truth[0, t, j, :, 3]).norm() / truth[0, t, j, :, 3].norm()))
    return np.array(rot), np.array(trans)


def test_measured_poses_follow_the_true_motion_and_its_scale(handheld):
    images, depth, extrinsics, intrinsics = handheld
    poses, ok, counts = match_poses(images, depth, intrinsics, PAIRS)
    assert poses.shape == (1, 4, 4, 3, 4) and ok.dtype == torch.bool
    assert bool(ok[0][~torch.eye(4, dtype=torch.bool)].all())  # every pair, through the reference frame
    rot, trans = _errors(poses, ok, extrinsics)
    # measured: rotation error median 0.59, max 0.96 degrees (true rotations 7.9 degrees a frame);
    # translation off by 8 % of its length (median): the true depth gives the true scale
    assert np.median(rot) < 1.0 and rot.max() < 1.5
    assert np.median(trans) < 0.15
    assert int(counts.max()) >= MatchPoseConfig().min_inliers  # the reference pairs were measured directly


def test_one_reference_frame_gives_the_window_one_scale():
    """Pairs measured each in its target's own scale come out in the reference frame's."""
    rng = np.random.default_rng(0)
    absolute = {}
    for j in range(4):  # camera-from-world of 4 cameras
        r = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        r *= np.sign(np.linalg.det(r))
        absolute[j] = np.concatenate([r, rng.normal(size=(3, 1))], axis=1)

    def rel(t, j):
        a, b = absolute[t], absolute[j]
        r = b[:, :3] @ a[:, :3].T
        return np.concatenate([r, (b[:, 3] - r @ a[:, 3])[:, None]], axis=1)

    own_scale = {0: 1.0, 1: 1.3, 2: 0.8, 3: 1.1}  # each target's depth a different scale
    measured = {}
    for t in range(4):
        for j in range(4):
            if t != j:
                pose = rel(t, j)
                measured[(t, j)] = np.concatenate([pose[:, :3], pose[:, 3:] * own_scale[t]], axis=1)
    found = through_reference(measured, [0, 1, 2, 3])
    assert set(found) == set(measured)
    ref_scale = {
        own_scale[t] for t in range(4) if all(np.allclose(found[(t, j)], measured[(t, j)]) for j in range(4) if j != t)
    }
    assert len(ref_scale) == 1  # the reference's own pairs are kept as measured
    scale = ref_scale.pop()
    for (t, j), pose in found.items():
        truth = rel(t, j)
        assert np.allclose(pose[:, :3], truth[:, :3], atol=1e-9)
        assert np.allclose(pose[:, 3], truth[:, 3] * scale, atol=1e-9)  # one scale for every pair


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
    grey, still = np.full((48, 64), 128, np.uint8), np.zeros((48, 64, 2), np.float32)
    uv_t, uv_s = correspondences(grey, still, still, MatchPoseConfig())
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
    out = self_supervised_loss(
        images, {"depth": d[..., None], "pose_enc": pose_enc}, SelfSupervisedConfig(match_pose_weight=0.1)
    )
    assert 0.3 < float(out["matched_pairs"]) <= 1.0  # measured 6 of 12 pairs on these frames
    # measured 1.06 rad (rotation + translation direction, summed) against the true cameras: at 128x96
    # the measured translation directions are loose; the term is small weight for that reason
    assert "match_pose" in out and 0 < float(out["match_pose"].detach()) < 1.3
    out["total"].backward()
    assert d.grad is not None and d.grad.abs().sum() > 0


def test_cameras_the_data_carry_are_brought_to_the_depths_scale(handheld):
    """Structure-from-motion's cameras come in their own unit: known_poses keeps their rotations and
    directions and reads the unit off the depth."""
    images, depth, extrinsics, intrinsics = handheld
    sfm = extrinsics.clone()
    sfm[..., 3] *= 3.7  # SfM's arbitrary scale
    poses, ok = known_poses(images, depth, intrinsics, sfm, PAIRS)
    assert bool(ok[0][~torch.eye(4, dtype=torch.bool)].all())
    rot, trans = _errors(poses, ok, extrinsics)
    assert rot.max() < 1e-3  # the given rotations, untouched
    assert np.median(trans) < 0.03  # measured 1.0 %: the true depth's scale, recovered
    half = depth * 0.5  # a depth predicted at half the scale gets translations at half the length
    poses_half, _ = known_poses(images, half, intrinsics, sfm, PAIRS)
    ratio = poses_half[0, 0, 1, :, 3].norm() / poses[0, 0, 1, :, 3].norm()
    assert float(ratio) == pytest.approx(0.5, rel=0.02)
    flat = torch.full_like(images, 0.5)  # no texture: the scale cannot be read, no pose
    _, none = known_poses(flat, depth, intrinsics, sfm, PAIRS)
    assert not none.any()


def test_the_loss_warps_through_the_cameras_the_data_carry(handheld):
    images, depth, extrinsics, intrinsics = handheld
    d = depth.clone().requires_grad_(True)
    pose_enc = extri_intri_to_pose_encoding(extrinsics, intrinsics, (192, 256))
    predictions = {"depth": d[..., None], "pose_enc": pose_enc}
    measured = self_supervised_loss(images, predictions, SelfSupervisedConfig(), intrinsics, torch.tensor([True]))
    given = self_supervised_loss(
        images, predictions, SelfSupervisedConfig(), intrinsics, torch.tensor([True]), extrinsics, torch.tensor([True])
    )  # fmt: skip
    # the true cameras explain the frames better than the poses measured on them (0.0102 vs 0.0140)
    assert float(given["photo_score"]) < float(measured["photo_score"])
    assert float(given["matched_pairs"]) == 1.0
    given["total"].backward()
    assert d.grad is not None and d.grad.abs().sum() > 0
