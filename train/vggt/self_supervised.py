"""Self-supervised VGGT losses: what a model can learn from footage with no depth and no cameras.

Every term compares the model's own predictions with each other or with the images:

- **photometric reprojection** (Monodepth2, Godard et al. 2019, "Digging Into Self-Supervised
  Monocular Depth Estimation"): each target frame's depth warps every other frame of the window onto
  it; the error ``alpha (1 - SSIM) / 2 + (1 - alpha) |I_t - I_s->t|`` (alpha 0.85, SSIM on 3x3
  windows) is taken per pixel as the *minimum over source frames* (occlusions: some source sees the
  pixel), and *auto-masked*: pixels where an unwarped source already matches better than the warp
  (static camera, objects moving with it, textureless sky) are left out. The warp's relative poses
  are by default *measured on the frames* (:mod:`edgescene.train.vggt.match_poses`: optical flow,
  the essential matrix, one depth scale per window) rather than taken from the camera head: a head
  far from the footage's domain predicts poses that cannot tell a good depth from a bad one
  (``warp_poses="camera_head"`` keeps the head's). Where the data carry the camera's calibration
  (``known_intrinsics``) the warp goes through it, and the head's field of view is supervised by it;
- **edge-aware smoothness** of the mean-normalised inverse depth, down-weighted across image edges;
- **depth / point-map consistency**: the depth head unprojected through the camera head
  (``depth_to_world_points``) against the point-map head, over the scene's scale;
- **camera / point-map consistency**: each frame's camera-to-world rotation from the camera head
  against the one implied by the geometry (the rigid fit, Kabsch, of the frame's depth unprojected
  in its own camera onto its point-map head points);
- **camera / measured-pose consistency**: the camera head's relative rotations and translation
  directions against the measured ones (``match_pose_weight``).

Confidence weighting (``conf_alpha`` > 0): the photometric and the consistency terms are weighted as
VGGT weights its regression losses, ``c e - lambda log c`` (c >= 1 the head's confidence). Off by
default: on the thermal-like benchmark it made the adapted depth worse.

Conventions: images (B, S, 3, H, W) in [0, 1]; predictions as :class:`edgescene.models.vggt.VGGT`
returns them (depth (B, S, H, W, 1), depth_conf (B, S, H, W), pose_enc (B, S, 9), world_points
(B, S, H, W, 3), world_points_conf (B, S, H, W)); cameras are camera-from-world, frame 0's camera
is the world, OpenCV axes, pixel (u, v) = (column, row) with no +0.5 (as
``edgescene.core.geometry.unproject_depth``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edgescene.models.vggt.pose_encoding import depth_to_world_points, pose_encoding_to_extri_intri
from edgescene.train.vggt.match_poses import MatchPoseConfig, known_poses, match_poses

__all__ = [
    "SelfSupervisedConfig",
    "camera_consistency",
    "match_pose_consistency",
    "point_consistency",
    "photometric_loss",
    "self_supervised_loss",
    "smoothness_loss",
    "ssim",
    "warp_to_target",
]


WARP_POSES = ("matches", "camera_head")


@dataclass(frozen=True)
class SelfSupervisedConfig:
    """Weights of the self-supervised terms (0 turns one off) and their constants."""

    photometric_weight: float = 1.0
    smoothness_weight: float = 1e-3  # Monodepth2's
    # the consistency terms: off by default (measured on the thermal-like benchmark, docs/self_supervised.md: all three
    # at 0.1 gave AbsRel -10.2 % and AUC@30 +3.9 %, against -13.4 % and +10.0 % with all three off)
    point_weight: float = 0.0
    camera_weight: float = 0.0
    ssim_alpha: float = 0.85  # share of the SSIM term in the photometric error (Monodepth2)
    # lambda of c e - lambda log c; 0 (the default): confidence ignored (docs/self_supervised.md:
    # on the thermal-like benchmark, weighting by confidence made the adapted depth worse)
    conf_alpha: float = 0.0
    automask: bool = True
    max_sources: int = 4  # source frames per target: the nearest in the window (a window of S has S - 1)
    warp_poses: str = "matches"  # the warp's relative poses: "matches" (measured on the frames) or "camera_head"
    match_pose_weight: float = 0.0  # camera head against the measured poses (warp_poses="matches" only)
    intrinsics_weight: float = 0.1  # camera head's fields of view against known intrinsics (where given)
    matching: MatchPoseConfig = MatchPoseConfig()  # how the poses are measured (warp_poses="matches")

    def __post_init__(self) -> None:
        names = ("photometric_weight", "smoothness_weight", "point_weight", "camera_weight", "conf_alpha",
                 "match_pose_weight", "intrinsics_weight")  # fmt: skip
        for name in names:
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not 0 <= self.ssim_alpha <= 1:
            raise ValueError(f"ssim_alpha must be in [0, 1], got {self.ssim_alpha}")
        if self.max_sources < 1:
            raise ValueError(f"max_sources must be >= 1, got {self.max_sources}")
        if self.warp_poses not in WARP_POSES:
            raise ValueError(f"warp_poses must be one of {', '.join(WARP_POSES)}, got {self.warp_poses!r}")
        if self.photometric_weight == self.smoothness_weight == self.point_weight == self.camera_weight == 0:
            raise ValueError("every self-supervised weight is 0: nothing to train")


# ----------------------------------------------------------------------------- image terms


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1 - SSIM) / 2 per pixel and channel on 3x3 windows (reflection padding): (N, C, H, W) -> same, in [0, 1]."""
    c1, c2 = 0.01**2, 0.03**2
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x**2
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y**2
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2)
    return torch.clamp((1 - num / den) / 2, 0, 1)


def _photometric_error(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """(N, 3, H, W) x 2 -> (N, H, W): alpha (1 - SSIM) / 2 + (1 - alpha) L1, averaged over channels."""
    l1 = (a - b).abs().mean(1)
    return alpha * ssim(a, b).mean(1) + (1 - alpha) * l1 if alpha > 0 else l1


def warp_to_target(
    source: torch.Tensor,
    depth_t: torch.Tensor,
    extr_t: torch.Tensor,
    intr_t: torch.Tensor,
    extr_s: torch.Tensor,
    intr_s: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The source image seen from the target camera through the target's depth.

    source (N, 3, H, W); depth_t (N, H, W) along the target's z; extrinsics (N, 3, 4) camera-from-world
    and intrinsics (N, 3, 3) of target and source. Returns the warped image (N, 3, H, W) and a mask
    (N, H, W) of pixels whose point is in front of the source camera and inside its image.
    """
    n, _, h, w = source.shape
    dtype, device = depth_t.dtype, depth_t.device
    v, u = torch.meshgrid(torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype),
                          indexing="ij")  # fmt: skip
    fx, fy = intr_t[:, 0, 0, None, None], intr_t[:, 1, 1, None, None]
    cx, cy = intr_t[:, 0, 2, None, None], intr_t[:, 1, 2, None, None]
    cam_t = torch.stack(((u - cx) / fx * depth_t, (v - cy) / fy * depth_t, depth_t), dim=-1)  # (N, H, W, 3)
    world = (cam_t - extr_t[:, None, None, :, 3]) @ extr_t[:, None, :, :3]  # R^T (x - t), as row vectors
    cam_s = world @ extr_s[:, None, :, :3].transpose(-1, -2) + extr_s[:, None, None, :, 3]
    z = cam_s[..., 2]
    z_safe = z.clamp(min=1e-4)  # behind or at the camera: masked below; no division blow-up (nor its gradient)
    us = intr_s[:, 0, 0, None, None] * cam_s[..., 0] / z_safe + intr_s[:, 0, 2, None, None]
    vs = intr_s[:, 1, 1, None, None] * cam_s[..., 1] / z_safe + intr_s[:, 1, 2, None, None]
    grid = torch.stack((2 * us / max(w - 1, 1) - 1, 2 * vs / max(h - 1, 1) - 1), dim=-1)  # align_corners=True
    # far outside the image or not finite (a diverging model): CPU grid_sample must never see such
    # coordinates (it can read out of bounds); those pixels are masked out anyway
    grid = torch.nan_to_num(grid, nan=-2.0, posinf=2.0, neginf=-2.0).clamp(-2.0, 2.0)
    warped = F.grid_sample(source, grid.to(source.dtype), mode="bilinear", padding_mode="border", align_corners=True)
    inside = (z > 1e-4) & (us >= 0) & (us <= w - 1) & (vs >= 0) & (vs <= h - 1) & torch.isfinite(depth_t)
    return warped, inside


def _sources(s: int, t: int, count: int) -> list[int]:
    """The ``count`` frames nearest to ``t`` in a window of ``s`` (ties: the earlier first)."""
    others = sorted((i for i in range(s) if i != t), key=lambda i: (abs(i - t), i))
    return others[:count]


def photometric_loss(
    images: torch.Tensor,
    depth: torch.Tensor,
    extrinsics: torch.Tensor | None,
    intrinsics: torch.Tensor,
    conf: torch.Tensor | None = None,
    cfg: SelfSupervisedConfig = SelfSupervisedConfig(),
    relative: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Minimum-reprojection photometric loss with auto-masking over a window, averaged over every pixel.

    images (B, S, 3, H, W) in [0, 1]; depth (B, S, H, W); extrinsics (B, S, 3, 4); intrinsics
    (B, S, 3, 3); conf (B, S, H, W) >= 1 or None. ``relative``, when given, is ``(poses, ok)``:
    source-from-target poses (B, S, S, 3, 4) (``poses[:, t, s]``, as :func:`match_poses` measures
    them) used instead of the extrinsics, and which pairs have one (B, S, S) bool; a pair without
    one is left out (its pixels are seen by no source through it).

    Per target pixel: the smallest error over the source frames that see it (``warp``) and over the
    unwarped source frames (``still``). With auto-masking the pixel costs ``min(warp, still)``: where
    no motion explains it better than the predicted one, its cost is a constant, so it sends no
    gradient (Monodepth2's mask). A pixel no source sees (the predicted cameras look elsewhere) costs
    ``still`` too: every pixel counts in the mean, so moving the cameras until the frames stop
    overlapping can never lower the loss. Without auto-masking the pixel costs ``warp`` where a source
    sees it, else ``still``.

    Returns the loss (a scalar) and diagnostics: the share of pixels the warp explains better than
    no motion (``photo_kept``), their mean error (``photo_error``), and ``photo_score``, the mean cost
    without confidence (the held-out score of training: lower, the geometry explains more of the
    change between frames).
    """
    b, s, _, h, w = images.shape
    if s < 2:
        raise ValueError(f"the photometric loss needs windows of 2 frames or more, got {s}")
    terms, kept, errors, scores = [], [], [], []
    for t in range(s):
        srcs = _sources(s, t, cfg.max_sources)
        target = images[:, t]
        warped_err, identity_err = [], []
        for j in srcs:
            if relative is None:
                if extrinsics is None:
                    raise ValueError("photometric_loss needs the extrinsics or the relative poses")
                extr_t, extr_s = extrinsics[:, t], extrinsics[:, j]
            else:
                extr_s = relative[0][:, t, j].to(depth.dtype)
                extr_t = torch.eye(3, 4, dtype=depth.dtype, device=depth.device).expand_as(extr_s)
            warped, inside = warp_to_target(
                images[:, j], depth[:, t], extr_t, intrinsics[:, t], extr_s, intrinsics[:, j]
            )  # fmt: skip
            if relative is not None:
                inside = inside & relative[1][:, t, j, None, None]
            err = _photometric_error(warped, target, cfg.ssim_alpha)
            warped_err.append(torch.where(inside, err, torch.full_like(err, 1e3)))  # unseen: never the minimum
            with torch.no_grad():
                identity_err.append(_photometric_error(images[:, j], target, cfg.ssim_alpha))
        best = torch.stack(warped_err).min(0).values  # (B, H, W)
        still = torch.stack(identity_err).min(0).values + 1e-5  # the epsilon breaks ties on flat images
        seen = best < 1e2
        explained = seen & (best < still)
        use_warp = explained if cfg.automask else seen
        cost = torch.where(use_warp, best, still)  # every pixel; constant (no gradient) where the warp is not used
        if conf is not None and cfg.conf_alpha > 0:
            c = conf[:, t].clamp(min=1.0)
            per_pixel = torch.where(use_warp, c * cost - cfg.conf_alpha * torch.log(c), cost)
        else:
            per_pixel = cost
        terms.append(per_pixel.mean())
        scores.append(cost.mean().detach())
        kept.append(explained.float().mean().detach())
        errors.append(
            (torch.where(explained, best, torch.zeros_like(best)).sum() / explained.sum().clamp(min=1)).detach()
        )
    loss = torch.stack(terms).mean()
    return loss, {
        "photo_kept": torch.stack(kept).mean(),
        "photo_error": torch.stack(errors).mean(),
        "photo_score": torch.stack(scores).mean(),
    }


def smoothness_loss(images: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness of mean-normalised inverse depth. images (B, S, 3, H, W); depth (B, S, H, W)."""
    disp = 1.0 / depth.clamp(min=1e-6)
    disp = disp / disp.mean(dim=(-2, -1), keepdim=True).clamp(min=1e-6)
    gray = images.mean(2)
    dx = (disp[..., :, 1:] - disp[..., :, :-1]).abs() * torch.exp(-(gray[..., :, 1:] - gray[..., :, :-1]).abs() * 10)
    dy = (disp[..., 1:, :] - disp[..., :-1, :]).abs() * torch.exp(-(gray[..., 1:, :] - gray[..., :-1, :]).abs() * 10)
    return dx.mean() + dy.mean()


# ----------------------------------------------------------------------------- geometry terms


def point_consistency(
    depth: torch.Tensor,
    pose_enc: torch.Tensor,
    world_points: torch.Tensor,
    conf: torch.Tensor | None = None,
    conf_alpha: float = 0.05,
) -> torch.Tensor:
    """The depth head through the camera head against the point-map head, over the scene's scale.

    depth (B, S, H, W); pose_enc (B, S, 9); world_points (B, S, H, W, 3); conf (B, S, H, W) >= 1 or None.
    """
    from_depth = torch.stack([depth_to_world_points(d, p) for d, p in zip(depth, pose_enc, strict=True)])
    scale = depth.detach().mean(dim=(1, 2, 3)).clamp(min=1e-6)[:, None, None, None]
    err = (from_depth - world_points).norm(dim=-1) / scale
    err = torch.where(torch.isfinite(err), err, torch.zeros_like(err))
    if conf is not None and conf_alpha > 0:
        c = conf.clamp(min=1.0)
        return (c * err - conf_alpha * torch.log(c)).mean()
    return err.mean()


def _kabsch_rotation(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Rotation (N, 3, 3) best aligning centred src onto dst (N, P, 3) with weights (N, P) (no reflection)."""
    w = weights / weights.sum(-1, keepdim=True).clamp(min=1e-12)
    mu_s = (w[..., None] * src).sum(1, keepdim=True)
    mu_d = (w[..., None] * dst).sum(1, keepdim=True)
    cov = ((dst - mu_d) * w[..., None]).transpose(1, 2) @ (src - mu_s)  # (N, 3, 3)
    U, _, Vt = torch.linalg.svd(cov)
    sign = torch.sign(torch.det(U @ Vt))
    D = torch.diag_embed(torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], -1))
    return U @ D @ Vt


def camera_consistency(
    depth: torch.Tensor, pose_enc: torch.Tensor, world_points: torch.Tensor, conf: torch.Tensor | None = None
) -> torch.Tensor:
    """Camera head rotation vs the one implied by the frame's own geometry (radians, mean over frames).

    For each frame the depth, unprojected in the frame's own camera (intrinsics of the camera head),
    is fitted rigidly (Kabsch) onto the point-map head's world points; that fit's rotation is the
    camera-to-world rotation the geometry implies (a target: no gradient through it), compared with
    the camera head's ``R^T``. depth (B, S, H, W); pose_enc (B, S, 9); world_points (B, S, H, W, 3).
    """
    b, s, h, w = depth.shape
    extrinsics, intrinsics = pose_encoding_to_extri_intri(pose_enc, (h, w))
    with torch.no_grad():
        identity = torch.zeros_like(pose_enc)
        identity[..., 6] = 1.0  # quaternion (0, 0, 0, 1): the camera at the world origin
        identity[..., 7:] = pose_enc[..., 7:]  # the same field of view
        cam = torch.stack([depth_to_world_points(d, p) for d, p in zip(depth, identity, strict=True)])
        step = max(1, int((h * w / 4096) ** 0.5))  # ~4k points a frame are plenty for a rotation
        src = cam[:, :, ::step, ::step].reshape(b * s, -1, 3).float()
        dst = world_points[:, :, ::step, ::step].reshape(b * s, -1, 3).float()
        weights = torch.ones(src.shape[:2], device=src.device)
        if conf is not None:
            weights = conf[:, :, ::step, ::step].reshape(b * s, -1).float().clamp(min=1.0)
        finite = torch.isfinite(src).all(-1) & torch.isfinite(dst).all(-1) & torch.isfinite(weights)
        src, dst = torch.where(finite[..., None], src, 0.0), torch.where(finite[..., None], dst, 0.0)
        weights = torch.where(finite, weights, 0.0)
        usable = finite.sum(-1) >= 3  # frames with too few finite points get no rotation target
        weights = torch.where(usable[:, None], weights, 1.0)
        implied = _kabsch_rotation(src, dst, weights).reshape(b, s, 3, 3)  # camera-to-world
    head = extrinsics[..., :3].transpose(-1, -2)  # camera-to-world from the camera head
    cos = (((implied.to(head.dtype).transpose(-1, -2) @ head).diagonal(dim1=-2, dim2=-1).sum(-1)) - 1) / 2
    angle = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
    return torch.where(usable.reshape(b, s), angle, torch.zeros_like(angle)).mean()


def _angle(cos: torch.Tensor) -> torch.Tensor:
    return torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))


def match_pose_consistency(extrinsics: torch.Tensor, poses: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """The camera head's relative poses against the matched ones (radians, mean over the pairs that have one).

    extrinsics (B, S, 3, 4) camera-from-world from the camera head; poses (B, S, S, 3, 4)
    source-from-target and ok (B, S, S), as :func:`edgescene.train.vggt.match_poses.match_poses`
    gives them. Per pair: the angle between the two relative rotations plus the angle between the two
    translation directions (scale-free: the head's scene scale is its own).
    """
    r, t = extrinsics[..., :3], extrinsics[..., 3]
    rel_r = r[:, None] @ r[:, :, None].transpose(-1, -2)  # [b, t, s] = R_s R_t^T
    rel_t = t[:, None] - (rel_r @ t[:, :, None, :, None])[..., 0]  # [b, t, s] = t_s - R_s R_t^T t_t
    target_r, target_t = poses[..., :3].to(r.dtype), poses[..., 3].to(r.dtype)
    rot = _angle(((target_r.transpose(-1, -2) @ rel_r).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2)
    norms = rel_t.norm(dim=-1) * target_t.norm(dim=-1)
    moved = norms > 1e-12  # a pure rotation has no translation direction
    cos = (rel_t * target_t).sum(-1) / norms.clamp(min=1e-12)
    trans = torch.where(moved, _angle(cos), torch.zeros_like(cos))
    use = ok.to(r.dtype)
    return ((rot + trans) * use).sum() / use.sum().clamp(min=1.0)


# ----------------------------------------------------------------------------- all together

FOV_RANGE = (0.05, 3.0)  # radians: 2.9 to 172 degrees


def safe_pose_encoding(pose_enc: torch.Tensor) -> torch.Tensor:
    """The pose encoding with its fields of view clamped to :data:`FOV_RANGE`: a camera head that
    drifts to a field of view of 0 (its ReLU floor) would give an infinite focal length, and the
    warp's gradient would turn every weight into NaN at the next step. (B, S, 9) -> (B, S, 9)."""
    return torch.cat([pose_enc[..., :7], pose_enc[..., 7:].clamp(*FOV_RANGE)], dim=-1)


def known_fov(intrinsics: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(..., 3, 3) pixel intrinsics -> (..., 2) fields of view (vertical, horizontal), radians, as pose_enc[..., 7:]."""
    h, w = hw
    vertical = 2 * torch.atan(h / 2 / intrinsics[..., 1, 1])
    return torch.stack([vertical, 2 * torch.atan(w / 2 / intrinsics[..., 0, 0])], -1)


def self_supervised_loss(
    images: torch.Tensor,
    predictions: dict[str, torch.Tensor],
    cfg: SelfSupervisedConfig = SelfSupervisedConfig(),
    known_intrinsics: torch.Tensor | None = None,
    has_intrinsics: torch.Tensor | None = None,
    known_extrinsics: torch.Tensor | None = None,
    has_extrinsics: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Every term a VGGT's predictions allow (a missing head skips its terms); ``total`` is the weighted sum.

    images (B, S, 3, H, W) in [0, 1]; predictions: the model's outputs (see the module docstring).
    ``known_intrinsics`` (B, S, 3, 3) in the images' pixels and ``has_intrinsics`` (B,) bool: the
    camera's calibration where the data carry it. Those windows are warped (and their poses measured)
    through it instead of the camera head's, and the head's fields of view are supervised by it
    (``intrinsics``, radians). ``known_extrinsics`` (B, S, 3, 4) camera-from-world and
    ``has_extrinsics`` (B,) bool: cameras the data carry (structure-from-motion's, a rig's); with
    ``warp_poses="matches"`` those windows are warped through them (brought to the depth's scale,
    :func:`~edgescene.train.vggt.match_poses.known_poses`) instead of poses measured on the frames.
    Computed in float32 whatever the autocast dtype of the forward pass.
    """
    h, w = images.shape[-2:]
    images = images.float()
    if "depth" not in predictions or "pose_enc" not in predictions:
        raise ValueError("self-supervised training needs the depth and camera heads (depth, pose_enc)")
    depth = predictions["depth"][..., 0].float()
    pose_enc = safe_pose_encoding(predictions["pose_enc"].float())
    depth_conf = predictions.get("depth_conf")
    depth_conf = depth_conf.float() if depth_conf is not None else None
    extrinsics, intrinsics = pose_encoding_to_extri_intri(pose_enc, (h, w))
    out: dict[str, torch.Tensor] = {}
    total = depth.new_zeros(())
    if known_intrinsics is not None and has_intrinsics is not None and bool(has_intrinsics.any()):
        known = has_intrinsics.to(torch.bool).view(-1, 1, 1, 1)
        calibration = known_intrinsics.to(intrinsics.dtype)
        intrinsics = torch.where(known, calibration, intrinsics)  # the true calibration: no gradient to the head
        # the head's fields of view against the calibration: a term when weighted, else logged only
        error = (pose_enc[..., 7:] - known_fov(calibration, (h, w))).abs().mean(dim=(1, 2))
        out["intrinsics"] = (error * known[:, 0, 0, 0]).sum() / known.sum()
        if cfg.intrinsics_weight > 0:
            total = total + cfg.intrinsics_weight * out["intrinsics"]
        else:
            out["intrinsics"] = out["intrinsics"].detach()
    relative = None
    if cfg.warp_poses == "matches" and (cfg.photometric_weight > 0 or cfg.match_pose_weight > 0):
        s = images.shape[1]
        pairs = [(t, j) for t in range(s) for j in _sources(s, t, cfg.max_sources)]
        b = images.shape[0]
        given = torch.zeros(b, dtype=torch.bool, device=depth.device)
        if known_extrinsics is not None and has_extrinsics is not None:
            given = has_extrinsics.to(device=depth.device, dtype=torch.bool)
        poses = torch.eye(3, 4, device=depth.device).expand(b, s, s, 3, 4).clone()
        ok = torch.zeros(b, s, s, dtype=torch.bool, device=depth.device)
        if bool((~given).any()):  # measured on the frames, only where the data carry no cameras
            poses[~given], ok[~given], _ = match_poses(
                images[~given], depth[~given], intrinsics[~given], pairs, cfg.matching
            )  # fmt: skip
        if known_extrinsics is not None and bool(given.any()):
            poses[given], ok[given] = known_poses(
                images[given], depth[given], intrinsics[given], known_extrinsics[given].to(depth.dtype), pairs,
                cfg.matching,
            )  # fmt: skip
        relative = (poses, ok)
        out["matched_pairs"] = ok.sum() / max(len(pairs) * images.shape[0], 1)  # share of pairs with a pose
        if cfg.match_pose_weight > 0:
            out["match_pose"] = match_pose_consistency(extrinsics, poses, ok)
            total = total + cfg.match_pose_weight * out["match_pose"]
    if cfg.photometric_weight > 0:
        # with measured poses the warp's intrinsics are the ones they were measured with: held fixed, or
        # the loss would bend the field of view to suit poses that assumed it
        warp_intrinsics = intrinsics if relative is None else intrinsics.detach()
        out["photometric"], diagnostics = photometric_loss(
            images, depth, extrinsics, warp_intrinsics, depth_conf, cfg, relative
        )  # fmt: skip
        out.update(diagnostics)
        total = total + cfg.photometric_weight * out["photometric"]
    if cfg.smoothness_weight > 0:
        out["smoothness"] = smoothness_loss(images, depth)
        total = total + cfg.smoothness_weight * out["smoothness"]
    points = predictions.get("world_points")
    if points is not None:
        points = points.float()
        points_conf = predictions.get("world_points_conf")
        points_conf = points_conf.float() if points_conf is not None else None
        if cfg.point_weight > 0:
            out["point_consistency"] = point_consistency(depth, pose_enc, points, points_conf, cfg.conf_alpha)
            total = total + cfg.point_weight * out["point_consistency"]
        if cfg.camera_weight > 0:
            out["camera_consistency"] = camera_consistency(depth.detach(), pose_enc, points.detach(), points_conf)
            total = total + cfg.camera_weight * out["camera_consistency"]
    # the camera head takes part in every step's graph, even when no term of this batch reaches it
    # (a window without known intrinsics): DDP expects a gradient for each trained parameter
    out["total"] = total + 0.0 * pose_enc.sum()
    return out
