"""VGGT aggregator: per-frame patch embedding, then alternating frame / global attention.

Follows ``vggt/models/aggregator.py`` (facebookresearch/vggt): each frame's tokens are
``[camera(1), registers(4), patches]``; the camera and register tokens come in two learned
versions, index 0 for the first frame (the world / reference frame) and index 1 for all others.
Blocks are pre-norm with QK-norm, 2D RoPE and LayerScale 0.01; frame blocks attend within one image
(B*S, P, C), global blocks across all tokens of all frames (B, S*P, C). After each frame+global
pair the two outputs are concatenated to 2C channels.

``aggregator.fast_attention`` (a :class:`~edgescene.models.vggt.token_merge.FastAttention`, off by
default) merges tokens in the global blocks: training-free, faster at many frames, not exact.

Export-minded differences with the same numbers: RoPE tables come from Python ints (no
``cartesian_prod``, no data-dependent table length) and only the layers the heads read
(``config.kept_layers``) are kept, instead of all 24 (the main memory cost per frame upstream).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from edgescene.models.layers import Block, PatchEmbed, vggt_rope_tables
from edgescene.models.vggt.config import VGGTConfig
from edgescene.models.vggt.dinov2 import DinoV2PatchEmbed
from edgescene.models.vggt.token_merge import FastAttention, MergePlan, merged_global_block

if TYPE_CHECKING:
    from edgescene.models.dinov3 import DinoVisionTransformer

RESNET_MEAN = (0.485, 0.456, 0.406)
RESNET_STD = (0.229, 0.224, 0.225)


def expand_first_and_others(token: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
    """(1, 2, n, C) learned tokens -> (batch*frames, n, C): index 0 for frame 0, index 1 for the rest."""
    first = token[:, 0:1].expand(batch, 1, *token.shape[2:])
    others = token[:, 1:].expand(batch, frames - 1, *token.shape[2:])
    return torch.cat((first, others), dim=1).reshape(batch * frames, *token.shape[2:])


class _Clock:
    """Adds a block's seconds to ``times[key]`` when ``times`` is a dict; does nothing otherwise."""

    def __init__(self, times: dict[str, float] | None, device: torch.device) -> None:
        self.times, self.device, self.key, self.start = times, device, "", 0.0

    def __call__(self, key: str) -> _Clock:
        self.key = key
        return self

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> None:
        if self.times is not None:
            self._sync()
            self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        if self.times is not None:
            self._sync()
            self.times[self.key] = self.times.get(self.key, 0.0) + time.perf_counter() - self.start


class Aggregator(nn.Module):
    """images (B, S, 3, H, W) in [0, 1] -> {layer index: tokens (B, S, P, 2C)} for ``kept_layers``.

    P = 1 + num_register_tokens + (H/p)(W/p); patch tokens start at ``patch_start_idx``.
    """

    def __init__(self, config: VGGTConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.patch_size = c.patch_size
        self.patch_start_idx = c.patch_start_idx
        self.kept_layers = c.kept_layers
        self.gradient_checkpointing = False
        self.fast_attention: FastAttention | None = None  # token merging in global attention (not a weight)
        # profiling: when a dict, each forward adds the seconds of its frame blocks, global blocks and
        # merge plan under "frame_blocks_s", "global_blocks_s", "merge_plan_s" (synchronising CUDA)
        self.block_times: dict[str, float] | None = None
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, c.embed_dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, c.num_register_tokens, c.embed_dim))
        self.patch_embed = self._build_patch_embed(c)
        self.frame_blocks = nn.ModuleList(
            Block(c.embed_dim, c.num_heads, c.mlp_ratio, qk_norm=True, norm_eps=1e-5, layerscale_init=c.layerscale_init)
            for _ in range(c.depth)
        )
        self.global_blocks = nn.ModuleList(
            Block(c.embed_dim, c.num_heads, c.mlp_ratio, qk_norm=True, norm_eps=1e-5, layerscale_init=c.layerscale_init)
            for _ in range(c.depth)
        )
        mean, std = RESNET_MEAN, RESNET_STD
        if c.patch_embed == "dinov3":
            backbone = cast("DinoVisionTransformer", self.patch_embed)
            mean, std = backbone.config.mean, backbone.config.std
        self.mean, self.std = tuple(mean), tuple(std)  # constants, not buffers: nothing stays on meta after loading
        if not self.camera_token.is_meta:
            nn.init.normal_(self.camera_token, std=1e-6)
            nn.init.normal_(self.register_token, std=1e-6)
            for m in list(self.frame_blocks.modules()) + list(self.global_blocks.modules()):
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)

    @staticmethod
    def _build_patch_embed(c: VGGTConfig) -> nn.Module:
        if c.patch_embed == "dinov2":
            return DinoV2PatchEmbed(c.dinov2, c.img_size, c.patch_size)
        if c.patch_embed == "dinov3":
            from edgescene.models.dinov3 import DINOV3_PRESETS, DinoVisionTransformer

            if c.dinov3_preset not in DINOV3_PRESETS:
                raise ValueError(f"unknown dinov3_preset {c.dinov3_preset!r}; valid: {sorted(DINOV3_PRESETS)}")
            backbone_cfg = DINOV3_PRESETS[c.dinov3_preset]
            if backbone_cfg.embed_dim != c.embed_dim:
                raise ValueError(
                    f"{c.dinov3_preset} has embed_dim {backbone_cfg.embed_dim}, the aggregator {c.embed_dim}: "
                    "they must match"
                )
            return DinoVisionTransformer(backbone_cfg)
        return PatchEmbed(c.patch_size, 3, c.embed_dim)

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised -> patch tokens (N, (H/p)(W/p), C)."""
        if self.config.patch_embed == "dinov3":
            backbone = cast("DinoVisionTransformer", self.patch_embed)
            return backbone.forward_features(images)["x_norm_patchtokens"]
        return self.patch_embed(images)

    def _block(self, block: nn.Module, tokens: torch.Tensor, rope) -> torch.Tensor:
        if self.gradient_checkpointing and self.training:
            return checkpoint(block, tokens, rope, use_reentrant=False)
        return block(tokens, rope)

    def forward(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        b, s = images.shape[:2]
        h_img, w_img = int(images.shape[-2]), int(images.shape[-1])  # static per export; b, s stay dynamic
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 1, 3, 1, 1)
        images = (images - mean) / std
        patches = self.embed_patches(images.reshape(b * s, 3, h_img, w_img))
        camera = expand_first_and_others(self.camera_token, b, s)
        register = expand_first_and_others(self.register_token, b, s)
        tokens = torch.cat((camera, register, patches), dim=1)
        p, c = tokens.shape[1], tokens.shape[2]
        rope = vggt_rope_tables(
            h_img // self.patch_size,
            w_img // self.patch_size,
            self.config.head_dim,
            prefix=self.patch_start_idx,
            base=self.config.rope_base,
            device=images.device,
        )
        outputs: dict[int, torch.Tensor] = {}
        fast = self.fast_attention if s > 1 else None  # one frame: nothing to merge
        plan: MergePlan | None = None
        grid = (h_img // self.patch_size, w_img // self.patch_size)
        clock = _Clock(self.block_times, images.device)
        for i in range(self.config.depth):
            with clock("frame_blocks_s"):
                tokens = self._block(self.frame_blocks[i], tokens.reshape(b * s, p, c), rope)
            frame_out = tokens.reshape(b, s, p, c)
            tokens = tokens.reshape(b, s * p, c)
            if fast is not None and i >= fast.start_block:
                block = cast(Block, self.global_blocks[i])
                if plan is None:
                    with clock("merge_plan_s"):
                        plan = MergePlan.build(block.norm1(tokens), self.patch_start_idx, grid, fast, rope)
                with clock("global_blocks_s"):
                    tokens = merged_global_block(block, tokens, plan)
            else:
                with clock("global_blocks_s"):
                    tokens = self._block(self.global_blocks[i], tokens, rope)
            if i in self.kept_layers:
                outputs[i] = torch.cat((frame_out, tokens.reshape(b, s, p, c)), dim=-1)
        return outputs
