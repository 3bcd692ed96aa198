"""VGGT training losses (upstream ``training/loss.py``: ``MultitaskLoss``, ``compute_camera_loss``,
``regression_loss``, ``gradient_loss``, ``normal_loss``, ``filter_by_quantile``).

``total = w_cam L_camera + w_depth (L_conf + L_reg + L_grad)_depth + w_point (L_conf + L_reg + L_grad)_point``

- camera: L1 between each refinement iteration's pose encoding and the ground truth's, iteration i of
  n weighted ``gamma^(n-1-i)`` (gamma 0.6; the last gets 1), averaged over iterations; translation
  errors clamped at 100; ``L_T + L_R + 0.5 L_FL``. Only samples whose first frame has more than 100
  valid pixels count (upstream). The quaternion difference is raw (no sign canonicalisation).
- depth / points: ``e = ||gt - pred||`` per valid pixel; ``L_reg = mean(e)``,
  ``L_conf = mean(gamma e c - alpha log c)`` (gamma 1, alpha 0.2, c >= 1 the predicted confidence);
  both clamped at 100 and trimmed above their 98th percentile when there are more than 1000 values
  (``valid_range``). ``L_grad``: depth uses the multi-scale (4 scales, stride 2^s) gradient matching of
  the masked residual; points use the normal loss (3 scales, 1 - cos between normals from four
  neighbour cross products; upstream's commented config) or, with ``point_gradient="grad"``, the same
  gradient matching as depth. Fewer than 100 valid pixels in the batch give ``0 * pred``.

Non-finite residuals are zeroed, as upstream's ``check_and_fix_inf_nan``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from edgescene.models.vggt.pose_encoding import extri_intri_to_pose_encoding


@dataclass(frozen=True)
class LossConfig:
    camera_weight: float = 5.0
    depth_weight: float = 1.0
    point_weight: float = 1.0
    point_gradient: str = "normal"  # "normal" | "grad"
    gamma_camera: float = 0.6
    weight_trans: float = 1.0
    weight_rot: float = 1.0
    weight_focal: float = 0.5
    match_weight: float = 1.0  # the motion cues' matches (models with them only; match_loss)
    patch_size: int = 14
    gamma: float = 1.0
    alpha: float = 0.2
    valid_range: float = 0.98
    min_valid: int = 100


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def camera_loss(
    pose_enc_list: list[torch.Tensor],
    gt_pose_enc: torch.Tensor,
    sample_mask: torch.Tensor,
    cfg: LossConfig = LossConfig(),
) -> dict[str, torch.Tensor]:
    """pose_enc_list: n tensors (B, S, 9); gt_pose_enc: (B, S, 9); sample_mask: (B,) bool."""
    n = len(pose_enc_list)
    total_t = total_r = total_fl = pose_enc_list[-1].new_zeros(())
    for i, pred in enumerate(pose_enc_list):
        weight = cfg.gamma_camera ** (n - 1 - i)
        if not bool(sample_mask.any()):
            zero = (pred * 0).mean()
            loss_t = loss_r = loss_fl = zero
        else:
            p, g = pred[sample_mask], gt_pose_enc[sample_mask]
            loss_t = _finite((p[..., :3] - g[..., :3]).abs()).clamp(max=100).mean()
            loss_r = _finite((p[..., 3:7] - g[..., 3:7]).abs()).mean()
            loss_fl = _finite((p[..., 7:] - g[..., 7:]).abs()).mean()
        total_t, total_r, total_fl = total_t + weight * loss_t, total_r + weight * loss_r, total_fl + weight * loss_fl
    loss_t, loss_r, loss_fl = total_t / n, total_r / n, total_fl / n
    total = cfg.weight_trans * loss_t + cfg.weight_rot * loss_r + cfg.weight_focal * loss_fl
    return {"camera": total, "camera_T": loss_t, "camera_R": loss_r, "camera_FL": loss_fl}


def filter_by_quantile(
    values: torch.Tensor, valid_range: float, min_elements: int = 1000, hard_max: float = 100.0
) -> torch.Tensor:
    """Clamp at ``hard_max`` and drop values at or above the ``valid_range`` quantile (only when
    more than ``min_elements`` values exist and more than that many remain)."""
    if valid_range <= 0 or values.numel() <= min_elements:
        return values
    values = values.clamp(max=hard_max)
    k = round(valid_range * (values.numel() - 1)) + 1  # nearest-rank quantile, as upstream's torch_quantile
    threshold = min(float(torch.kthvalue(values.detach().flatten(), k).values), hard_max)
    keep = values < threshold
    return values[keep] if int(keep.sum()) > min_elements else values


def gradient_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Gradient matching of the masked residual. pred, gt: (N, H, W, C); mask: (N, H, W) bool."""
    m = mask[..., None].expand_as(pred).to(pred.dtype)
    diff = (pred - gt) * m
    grad_x = ((diff[:, :, 1:] - diff[:, :, :-1]).abs() * (m[:, :, 1:] * m[:, :, :-1])).clamp(max=100)
    grad_y = ((diff[:, 1:] - diff[:, :-1]).abs() * (m[:, 1:] * m[:, :-1])).clamp(max=100)
    divisor = m.sum()
    if divisor == 0:
        return (pred * 0).sum()
    return (grad_x.sum() + grad_y.sum()) / divisor


def point_map_to_normal(
    points: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """points (N, H, W, 3), mask (N, H, W) -> normals (4, N, H, W, 3) and their valid masks (4, N, H, W)."""
    pm = F.pad(mask, (1, 1, 1, 1), value=False)
    pts = F.pad(points.permute(0, 3, 1, 2), (1, 1, 1, 1)).permute(0, 2, 3, 1)
    center = pts[:, 1:-1, 1:-1]
    up, left = pts[:, :-2, 1:-1] - center, pts[:, 1:-1, :-2] - center
    down, right = pts[:, 2:, 1:-1] - center, pts[:, 1:-1, 2:] - center
    normals = torch.stack(
        [
            torch.cross(up, left, dim=-1),
            torch.cross(left, down, dim=-1),
            torch.cross(down, right, dim=-1),
            torch.cross(right, up, dim=-1),
        ]
    )
    c = pm[:, 1:-1, 1:-1]
    valids = torch.stack(
        [
            pm[:, :-2, 1:-1] & c & pm[:, 1:-1, :-2],
            pm[:, 1:-1, :-2] & c & pm[:, 2:, 1:-1],
            pm[:, 2:, 1:-1] & c & pm[:, 1:-1, 2:],
            pm[:, 1:-1, 2:] & c & pm[:, :-2, 1:-1],
        ]
    )
    return F.normalize(normals, p=2, dim=-1, eps=eps), valids


def normal_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, cos_eps: float = 1e-8) -> torch.Tensor:
    """Mean ``1 - cos`` between predicted and ground-truth surface normals. (N, H, W, 3) each."""
    n_pred, v_pred = point_map_to_normal(pred.float(), mask, eps=cos_eps)
    n_gt, v_gt = point_map_to_normal(gt.float(), mask, eps=cos_eps)
    both = v_pred & v_gt
    if int(both.sum()) < 10:
        return (pred * 0).sum()
    dot = (n_pred[both] * n_gt[both]).sum(-1).clamp(-1 + cos_eps, 1 - cos_eps)
    return _finite(1 - dot).mean()


def multi_scale(fn, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, scales: int) -> torch.Tensor:
    total = sum(
        fn(pred[:, :: 2**s, :: 2**s], gt[:, :: 2**s, :: 2**s], mask[:, :: 2**s, :: 2**s]) for s in range(scales)
    )
    return total / scales


def regression_loss(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor,
    conf: torch.Tensor,
    gradient: str | None,
    cfg: LossConfig = LossConfig(),
) -> dict[str, torch.Tensor]:
    """pred, gt: (B, S, H, W, C); mask: (B, S, H, W) bool; conf: (B, S, H, W) >= 1 -> conf, reg, grad terms."""
    b, s, h, w, c = pred.shape
    if int(mask.sum()) < cfg.min_valid:
        zero = (pred * 0).mean()
        return {"conf": zero, "reg": zero, "grad": zero}
    err = _finite(torch.linalg.vector_norm(gt[mask] - pred[mask], dim=-1))
    conf_terms = _finite(cfg.gamma * err * conf[mask] - cfg.alpha * torch.log(conf[mask]))
    flat = (pred.reshape(b * s, h, w, c), gt.reshape(b * s, h, w, c), mask.reshape(b * s, h, w))
    if gradient == "grad":
        grad = multi_scale(gradient_loss, *flat, scales=4)
    elif gradient == "normal":
        grad = multi_scale(normal_loss, *flat, scales=3)
    elif gradient is None:
        grad = (pred * 0).mean()
    else:
        raise ValueError(f"gradient must be 'grad', 'normal' or None, got {gradient!r}")
    conf_terms = filter_by_quantile(conf_terms, cfg.valid_range)
    err = filter_by_quantile(err, cfg.valid_range)
    return {"conf": conf_terms.mean(), "reg": err.mean(), "grad": grad}


def match_targets(
    world_points: torch.Tensor,
    valid: torch.Tensor,
    depth: torch.Tensor,
    extrinsics: torch.Tensor,
    intrinsics: torch.Tensor,
    patch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the centre of every patch of frame i lies in frame i - 1 (the first frame: in itself),
    in the units of :func:`edgescene.models.vggt.motion.grid_coordinates`, and whether that frame
    sees it: what the motion cues' matches are trained towards.

    world_points (B, S, H, W, 3) in the first camera's frame, valid and depth (B, S, H, W),
    extrinsics (B, S, 3, 4) and intrinsics (B, S, 3, 3): :func:`normalize_batch`'s. A patch's centre
    is its pixel (p // 2, p // 2); its point projects into the previous camera, lands inside the
    image and is not hidden there (that frame's depth at the pixel within 5 %). Returns
    (B, S, P, 2), (B, S, P).
    """
    b, s, h, w = depth.shape
    gh, gw = h // patch_size, w // patch_size
    c = patch_size // 2
    points = world_points[:, :, c::patch_size, c::patch_size][:, :, :gh, :gw].reshape(b, s, -1, 3)
    ok = valid[:, :, c::patch_size, c::patch_size][:, :, :gh, :gw].reshape(b, s, -1)
    prev = torch.cat((torch.arange(1), torch.arange(s - 1))).to(depth.device)  # frame i -> i - 1
    rotation, translation = extrinsics[:, prev, :, :3], extrinsics[:, prev, :, 3]
    cam = torch.einsum("bsij,bspj->bspi", rotation, points) + translation[:, :, None]
    k = intrinsics[:, prev]  # (B, S, 3, 3)
    z = cam[..., 2]
    safe_z = z.clamp(min=1e-6)
    u = k[..., None, 0, 0] * cam[..., 0] / safe_z + k[..., None, 0, 2]
    v = k[..., None, 1, 1] * cam[..., 1] / safe_z + k[..., None, 1, 2]
    inside = (z > 1e-6) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    row, col = v.round().clamp(0, h - 1).long(), u.round().clamp(0, w - 1).long()
    seen_depth = torch.gather(depth[:, prev].reshape(b, s, h * w), 2, (row * w + col)).reshape(z.shape)
    seen = (seen_depth > 0) & ((seen_depth - z).abs() < 0.05 * z)
    half = max(gh - 1, gw - 1, 1) / 2
    col_f = (u - (patch_size - 1) / 2) / patch_size
    row_f = (v - (patch_size - 1) / 2) / patch_size
    target = torch.stack(((col_f - (gw - 1) / 2) / half, (row_f - (gh - 1) / 2) / half), dim=-1)
    return target, ok & inside & seen


def match_loss(matched: torch.Tensor, gt: dict[str, torch.Tensor], patch_size: int) -> torch.Tensor:
    """Mean L1 distance (grid units) between the motion cues' matches (B, S, P, 2) and the true
    correspondences (:func:`match_targets`), over frames after the first and patches it sees."""
    target, ok = match_targets(
        gt["world_points"], gt["valid"], gt["depth"], gt["extrinsics"], gt["intrinsics"], patch_size
    )
    ok = ok[:, 1:]
    if not bool(ok.any()):
        return (matched * 0).sum()
    return (matched[:, 1:] - target[:, 1:]).abs().sum(-1)[ok].mean()


def vggt_loss(
    predictions: dict, gt: dict[str, torch.Tensor], cfg: LossConfig = LossConfig()
) -> dict[str, torch.Tensor]:
    """The total objective and its terms.

    predictions: the model's outputs (``pose_enc_list``, ``depth`` (B, S, H, W, 1), ``depth_conf``,
    ``world_points``, ``world_points_conf``); gt: :func:`normalize_batch`'s output. Terms whose
    weight is 0 are skipped (and absent from the dict).
    """
    valid = gt["valid"]
    out: dict[str, torch.Tensor] = {}
    total = gt["depth"].new_zeros(())
    if cfg.camera_weight > 0:
        image_hw = tuple(gt["depth"].shape[-2:])
        gt_pose = extri_intri_to_pose_encoding(gt["extrinsics"], gt["intrinsics"], image_hw)
        sample_mask = valid[:, 0].sum(dim=(-1, -2)) > cfg.min_valid
        out.update(camera_loss(predictions["pose_enc_list"], gt_pose, sample_mask, cfg))
        total = total + cfg.camera_weight * out["camera"]
    for name, weight, pred_key, gt_value, gradient in (
        ("depth", cfg.depth_weight, "depth", gt["depth"][..., None], "grad"),
        ("point", cfg.point_weight, "world_points", gt["world_points"], cfg.point_gradient),
    ):
        if weight <= 0:
            continue
        terms = regression_loss(predictions[pred_key], gt_value, valid, predictions[pred_key + "_conf"], gradient, cfg)
        out.update({f"{name}_{k}": v for k, v in terms.items()})
        out[name] = terms["conf"] + terms["reg"] + terms["grad"]
        total = total + weight * out[name]
    if "motion_match" in predictions and cfg.match_weight > 0:
        out["match"] = match_loss(predictions["motion_match"], gt, cfg.patch_size)
        total = total + cfg.match_weight * out["match"]
    out["total"] = total
    return out
