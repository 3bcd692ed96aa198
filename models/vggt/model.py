"""VGGT: aggregator + camera, depth, point-map and track heads (facebookresearch/vggt ``vggt/models/vggt.py``).

``VGGT(config)(images, query_points=None)`` with images (S, 3, H, W) or (B, S, 3, H, W), RGB in
[0, 1], H and W multiples of the patch size (518 on the long side is what VGGT-1B was trained at).
Outputs, as upstream:

============================  ==========================  ===========================================
key                           shape                       meaning
============================  ==========================  ===========================================
``pose_enc``                  (B, S, 9)                   last camera refinement (absT_quaR_FoV)
``pose_enc_list``             list of (B, S, 9)           every refinement iteration (for the loss)
``depth``                     (B, S, H, W, 1)             depth along the camera z axis, > 0
``depth_conf``                (B, S, H, W)                confidence >= 1
``world_points``              (B, S, H, W, 3)             point map in the first camera's frame
``world_points_conf``         (B, S, H, W)                confidence >= 1
``track``                     (B, S, N, 2)                pixel (x, y) of each query in every frame
``vis``, ``conf``             (B, S, N)                   visibility and confidence in (0, 1)
``images``                    (B, S, 3, H, W)             the input (eval mode only)
``motion_match``              (B, S, P, 2)                motion cues' matches (training, if any)
============================  ==========================  ===========================================

Geometry is in the first camera's frame (OpenCV axes) at a normalised, non-metric scale. Heads run
in float32 with autocast disabled, as upstream.
"""

from __future__ import annotations

from typing import TypedDict

import torch
from torch import nn

from edgescene.models.vggt.aggregator import Aggregator
from edgescene.models.vggt.camera_head import CameraHead
from edgescene.models.vggt.config import VGGT_PRESETS, VGGTConfig
from edgescene.models.vggt.dpt_head import DPTHead
from edgescene.models.vggt.motion import pixel_descriptors
from edgescene.models.vggt.track_head import TrackHead


class _DPTShared(TypedDict):
    """The :class:`DPTHead` arguments the point and depth heads share."""

    patch_size: int
    features: int
    out_channels: tuple[int, int, int, int]
    intermediate_layer_idx: tuple[int, int, int, int]


class VGGT(nn.Module):
    """The full VGGT model; submodule names match the official checkpoint."""

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        dim_in = 2 * c.embed_dim
        self.aggregator = Aggregator(c)
        self.camera_head = (
            CameraHead(dim_in, c.camera_trunk_depth, c.camera_num_heads, motion=c.camera_motion)
            if c.enable_camera
            else None
        )
        dpt = _DPTShared(
            patch_size=c.patch_size,
            features=c.dpt_features,
            out_channels=c.dpt_out_channels,
            intermediate_layer_idx=c.intermediate_layer_idx,
        )
        self.point_head = (
            DPTHead(dim_in, output_dim=4, activation="inv_log", conf_activation="expp1", **dpt)
            if c.enable_point
            else None
        )
        self.depth_head = (
            DPTHead(dim_in, output_dim=2, activation="exp", conf_activation="expp1", **dpt) if c.enable_depth else None
        )
        self.track_head = (
            TrackHead(dim_in, c.patch_size, c.intermediate_layer_idx, c.track, out_channels=c.dpt_out_channels)
            if c.enable_track
            else None
        )

    def forward(self, images: torch.Tensor, query_points: torch.Tensor | None = None) -> dict:
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if query_points is not None and query_points.dim() == 2:
            query_points = query_points.unsqueeze(0)
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be (S, 3, H, W) or (B, S, 3, H, W) RGB in [0, 1], got {tuple(images.shape)}")
        tokens = self.aggregator(images)
        image_hw = (int(images.shape[-2]), int(images.shape[-1]))  # static per export; frames stay dynamic
        start = self.aggregator.patch_start_idx
        predictions: dict = {}
        with torch.autocast(device_type=images.device.type, enabled=False):
            tokens32 = {k: v.float() for k, v in tokens.items()}
            if self.camera_head is not None:
                last = tokens32[self.config.depth - 1]
                motion = None
                if self.camera_head.motion is not None:
                    grid = (image_hw[0] // self.config.patch_size, image_hw[1] // self.config.patch_size)
                    pixels = pixel_descriptors(images, self.config.patch_size)
                    embedding, offset, matched = self.camera_head.motion(last[:, :, start:], grid, pixels)
                    motion = (embedding, offset)
                    if self.training:
                        predictions["motion_match"] = matched
                poses = self.camera_head(last, self.config.camera_iterations, motion)
                predictions["pose_enc"] = poses[-1]
                predictions["pose_enc_list"] = poses
            if self.depth_head is not None:
                predictions["depth"], predictions["depth_conf"] = self.depth_head(tokens32, image_hw, start)
            if self.point_head is not None:
                predictions["world_points"], predictions["world_points_conf"] = self.point_head(
                    tokens32, image_hw, start
                )
        if self.track_head is not None and query_points is not None:
            tracks, vis, conf = self.track_head(tokens, image_hw, start, query_points)
            predictions["track"], predictions["vis"], predictions["conf"] = tracks[-1], vis, conf
        if not self.training:
            predictions["images"] = images
        return predictions


def build_vggt(name_or_config: str | VGGTConfig) -> VGGT:
    """Build a randomly initialised VGGT from a preset name or a config."""
    if isinstance(name_or_config, VGGTConfig):
        return VGGT(name_or_config)
    if name_or_config not in VGGT_PRESETS:
        raise ValueError(f"unknown VGGT preset {name_or_config!r}; valid: {sorted(VGGT_PRESETS)}")
    return VGGT(VGGT_PRESETS[name_or_config])
