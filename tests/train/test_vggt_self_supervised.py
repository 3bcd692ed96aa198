"""Self-supervised VGGT losses on hand-made cases: rendered frames with their exact depth and
cameras (an identity warp, a known rigid motion, a wrong depth scale), and each consistency term
against geometry whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgescene.models.vggt.pose_encoding import depth_to_world_points, extri_intri_to_pose_encoding
from edgescene.train.data.synthetic import render_sequence
from edgescene.train.vggt.self_supervised import (
    SelfSupervisedConfig,
    camera_consistency,
    photometric_loss,
    point_consistency,
    self_supervised_loss,
    smoothness_loss,
    ssim,
    warp_to_target,
)

NO_CONF = SelfSupervisedConfig(conf_alpha=0.0, automask=False)


@pytest.fixture(scope="module")
def scene():
    """4 consecutive frames of an orbit (a few degrees apart) at 96x128 with exact depth and cameras
    (first camera = world)."""
    seq = render_sequence(seed=3, trajectory="orbit", frames=24, width=128, height=96)
    E = np.asarray(seq.extrinsics[:4], np.float64)
    first = np.concatenate([E[0], [[0, 0, 0, 1]]])
    rel = np.stack([e @ np.linalg.inv(first) for e in np.concatenate([E, np.tile([[[0, 0, 0, 1]]], (4, 1, 1))], 1)])
    images = torch.tensor(seq.frames[:4].transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32)[None]
    depth = torch.tensor(seq.depth[:4], dtype=torch.float32)[None]
    extrinsics = torch.tensor(rel[:, :3], dtype=torch.float32)[None]
    intrinsics = torch.tensor(np.repeat(seq.intrinsics[None], 4, 0), dtype=torch.float32)[None]
    return images, depth, extrinsics, intrinsics


def _sky_filled(depth):
    """Sky pixels have depth 0 in the renders: give them a far depth (they stay masked out by the warp test)."""
    return torch.where(depth > 0, depth, torch.full_like(depth, 1e3))


def test_ssim_is_zero_for_equal_images_and_grows_with_noise():
    x = torch.rand(1, 3, 32, 32)
    assert ssim(x, x).max() < 1e-6
    assert ssim(x, (x + 0.3 * torch.randn_like(x)).clamp(0, 1)).mean() > 0.1


def test_identity_warp_gives_zero_photometric_loss(scene):
    images, depth, extrinsics, intrinsics = scene
    same = images[:, :1].expand(1, 3, *images.shape[2:]).contiguous()  # one frame three times, one camera
    d = _sky_filled(depth[:, :1]).expand(1, 3, *depth.shape[2:])
    E = extrinsics[:, :1].expand(1, 3, 3, 4)
    K = intrinsics[:, :1].expand(1, 3, 3, 3)
    loss, info = photometric_loss(same, d, E, K, cfg=NO_CONF)
    assert float(loss) < 1e-6  # measured 0 up to rounding
    assert float(info["photo_kept"]) > 0.98  # the border column can land a hair outside


def test_a_known_rigid_motion_with_true_depth_gives_near_zero_loss_and_a_wrong_scale_more(scene):
    images, depth, extrinsics, intrinsics = scene
    d = _sky_filled(depth)
    true, _ = photometric_loss(images, d, extrinsics, intrinsics, cfg=NO_CONF)
    scaled, _ = photometric_loss(images, d * 1.3, extrinsics, intrinsics, cfg=NO_CONF)  # depth off, cameras not
    still = extrinsics[:, :1].expand_as(extrinsics)  # the cameras did not move: wrong
    unmoved, _ = photometric_loss(images, d, still, intrinsics, cfg=NO_CONF)
    assert float(true) < 0.035  # measured 0.026: bilinear resampling, texture level of detail, occlusion borders
    # measured: x1.3 depth 0.071, cameras that never moved 0.076
    assert float(scaled) > 2 * float(true)
    assert float(unmoved) > 2 * float(true)


def test_warp_reproduces_the_other_view(scene):
    images, depth, extrinsics, intrinsics = scene
    warped, inside = warp_to_target(
        images[:, 1], _sky_filled(depth[:, 0]), extrinsics[:, 0], intrinsics[:, 0], extrinsics[:, 1], intrinsics[:, 1]
    )
    ground = (depth[:, 0] > 0) & inside
    diff = (warped - images[:, 0]).abs().mean(1)[ground]
    assert float(diff.median()) < 0.02 and ground.float().mean() > 0.5


def test_automask_drops_pixels_a_static_source_explains(scene):
    images, depth, extrinsics, intrinsics = scene
    frozen = images[:, :1].expand_as(images).contiguous()  # a camera that never moved...
    _, info = photometric_loss(frozen, _sky_filled(depth), extrinsics, intrinsics, cfg=SelfSupervisedConfig())
    assert float(info["photo_kept"]) < 0.05  # ...is explained by the unwarped frames: masked out


def test_confidence_weighting_lowers_the_cost_where_the_model_is_unsure(scene):
    images, depth, extrinsics, intrinsics = scene
    d = _sky_filled(depth) * 1.3
    cfg = SelfSupervisedConfig(automask=False, conf_alpha=0.05)  # off by default
    sure, _ = photometric_loss(images, d, extrinsics, intrinsics, torch.full_like(d, 5.0), cfg)
    unsure, _ = photometric_loss(images, d, extrinsics, intrinsics, torch.ones_like(d), cfg)
    assert float(unsure) < float(sure)


def test_smoothness_prefers_depth_edges_on_image_edges():
    image = torch.zeros(1, 1, 3, 16, 16)
    image[..., 8:] = 1.0  # an image edge at column 8
    depth_on_edge = torch.ones(1, 1, 16, 16)
    depth_on_edge[..., 8:] = 2.0
    depth_off_edge = torch.ones(1, 1, 16, 16)
    depth_off_edge[..., 4:] = 2.0
    assert float(smoothness_loss(image, depth_on_edge)) < 0.1 * float(smoothness_loss(image, depth_off_edge))
    assert float(smoothness_loss(image, torch.full((1, 1, 16, 16), 3.0))) == 0.0


def test_point_and_camera_consistency_are_zero_for_consistent_heads_and_not_otherwise(scene):
    _, depth, extrinsics, intrinsics = scene
    d = torch.where(depth > 0, depth, torch.full_like(depth, 50.0))  # sky: far, but within float32's comfort
    pose_enc = extri_intri_to_pose_encoding(extrinsics, intrinsics, (96, 128))
    points = depth_to_world_points(d[0], pose_enc[0])[None]
    assert float(point_consistency(d, pose_enc, points, conf_alpha=0)) < 1e-4
    assert float(camera_consistency(d, pose_enc, points)) < 1e-2  # radians
    under = pose_enc.clone()
    under[..., 3:7] = torch.tensor([0.0, 0.0, 0.0, 1.0])  # a camera head that predicts no rotation at all
    assert float(point_consistency(d, under, points, conf_alpha=0)) > 0.05
    angle = float(camera_consistency(d, under, points))
    true_angles = [np.degrees(float(np.arccos(np.clip((np.trace(e[:3, :3].numpy()) - 1) / 2, -1, 1))))
                   for e in extrinsics[0]]  # fmt: skip
    assert np.degrees(angle) == pytest.approx(np.mean(true_angles), abs=0.5)


def test_all_terms_together_give_gradients_to_every_head(scene):
    images, depth, extrinsics, intrinsics = scene
    d = torch.where(depth > 0, depth, torch.full_like(depth, 50.0)).requires_grad_(True)
    pose_enc = extri_intri_to_pose_encoding(extrinsics, intrinsics, (96, 128)).clone().requires_grad_(True)
    points = (depth_to_world_points(d[0].detach(), pose_enc[0].detach())[None] * 1.05).requires_grad_(True)
    conf = torch.full_like(d, 2.0, requires_grad=True)
    out = self_supervised_loss(
        images,
        {
            "depth": d[..., None],
            "pose_enc": pose_enc,
            "depth_conf": conf,
            "world_points": points,
            "world_points_conf": torch.ones_like(d),
        },  # fmt: skip
        SelfSupervisedConfig(warp_poses="camera_head", conf_alpha=0.05, point_weight=0.1, camera_weight=0.1),
    )
    assert {"photometric", "smoothness", "point_consistency", "camera_consistency", "total"} <= set(out)
    out["total"].backward()
    for t in (d, pose_enc, points, conf):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_config_refuses_nothing_to_train_and_bad_values():
    with pytest.raises(ValueError, match="nothing to train"):
        SelfSupervisedConfig(photometric_weight=0, smoothness_weight=0, point_weight=0, camera_weight=0)
    with pytest.raises(ValueError, match="ssim_alpha"):
        SelfSupervisedConfig(ssim_alpha=2)
    with pytest.raises(ValueError, match="max_sources"):
        SelfSupervisedConfig(max_sources=0)
    with pytest.raises(ValueError, match="2 frames or more"):
        photometric_loss(torch.zeros(1, 1, 3, 8, 8), torch.ones(1, 1, 8, 8), torch.zeros(1, 1, 3, 4),
                         torch.eye(3)[None, None])  # fmt: skip


def test_a_diverging_prediction_never_reaches_grid_sample_as_nan(scene):
    """NaN / inf / zero depth (a model blowing up) must give a finite loss or a NaN, never a crash."""
    images, depth, extrinsics, intrinsics = scene
    bad = _sky_filled(depth).clone()
    bad[0, 0, :10] = float("nan")
    bad[0, 1, 10:20] = float("inf")
    bad[0, 2, 20:30] = 0.0
    bad[0, 3, 30:40] = -5.0
    warped, inside = warp_to_target(images[:, 1], bad[:, 0], extrinsics[:, 0], intrinsics[:, 0],
                                    extrinsics[:, 1], intrinsics[:, 1])  # fmt: skip
    assert torch.isfinite(warped).all() and not inside[0, :10].any()
    loss, info = photometric_loss(images, bad, extrinsics, intrinsics, cfg=SelfSupervisedConfig())
    assert torch.isfinite(loss) and 0 <= float(info["photo_score"]) < 1


def test_photo_score_counts_every_pixel(scene):
    images, depth, extrinsics, intrinsics = scene
    d = _sky_filled(depth)
    _, good = photometric_loss(images, d, extrinsics, intrinsics)
    _, bad = photometric_loss(images, d * 1.3, extrinsics, intrinsics)
    assert float(good["photo_score"]) < float(bad["photo_score"])  # measured in the tests above: 0.026 vs 0.071
