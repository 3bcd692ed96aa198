"""Track head of VGGT: a DPT feature extractor and an iterative point tracker.

Follows ``vggt/heads/track_head.py`` of facebookresearch/vggt (released version): the aggregator
tokens go through ``DPTHead(feature_only=True, features=128, down_ratio=2, pos_embed=False)``,
giving per-frame features (B, S, 128, H/2, W/2); ``BaseTrackerPredictor`` (``tracker.py``) then
tracks query points of frame 0 through all frames for ``iters`` refinement steps.

The official module is ``TrackHead(dim_in=2048, patch_size=14)`` with ``TrackHeadConfig()``;
its state_dict (``feature_extractor.*``, ``tracker.*``; 65,941,396 parameters) loads strictly.

Coordinates: ``query_points`` (B, N, 2) are pixel (x, y) in frame 0 of the input images, pixel
centres at integers; returned tracks use the same convention.
"""

from __future__ import annotations

import torch
from torch import nn

from edgescene.models.vggt.config import TrackHeadConfig
from edgescene.models.vggt.dpt_head import DPTHead
from edgescene.models.vggt.tracker import BaseTrackerPredictor


class TrackHead(nn.Module):
    """tokens {layer: (B, S, P, dim_in)} + queries (B, N, 2) ->
    (tracks per iteration [(B, S, N, 2)], visibility (B, S, N), confidence (B, S, N)).

    ``out_channels`` are the DPT projection widths; upstream always uses the DPT default
    (256, 512, 1024, 1024). Small presets may pass narrower ones.
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        intermediate_layer_idx: tuple[int, int, int, int] = (4, 11, 17, 23),
        cfg: TrackHeadConfig | None = None,
        out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024),
    ) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else TrackHeadConfig()
        self.patch_size = patch_size
        self.iters = cfg.iters
        self.feature_extractor = DPTHead(
            dim_in=dim_in,
            patch_size=patch_size,
            features=cfg.features,
            out_channels=out_channels,
            intermediate_layer_idx=intermediate_layer_idx,
            pos_embed=False,
            feature_only=True,
            down_ratio=2,
        )
        self.tracker = BaseTrackerPredictor(
            stride=cfg.stride,
            corr_levels=cfg.corr_levels,
            corr_radius=cfg.corr_radius,
            latent_dim=cfg.features,
            hidden_size=cfg.hidden_size,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            num_virtual_tracks=cfg.num_virtual_tracks,
            max_scale=cfg.max_scale,
        )

    def forward(
        self,
        tokens: dict[int, torch.Tensor],
        image_hw: tuple[int, int],
        patch_start_idx: int,
        query_points: torch.Tensor,
        iters: int | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        features = self.feature_extractor(tokens, image_hw, patch_start_idx)  # (B, S, C, H/2, W/2)
        return self.tracker(query_points, features, iters=self.iters if iters is None else iters)
