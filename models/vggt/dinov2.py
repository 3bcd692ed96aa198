"""DINOv2 ViT with registers, as VGGT's patch embedding (Oquab et al. 2023; Darcet et al. 2024).

Follows ``vggt/layers/vision_transformer.py`` (``vit_large(img_size=518, patch_size=14,
num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0, init_values=1.0)``):
learned absolute position embedding for a 37x37 grid, resized for other grids with antialiased
bicubic interpolation (upstream numbers are kept: same op, same arguments), LayerNorm eps 1e-6,
LayerScale, GELU MLP. Returns the normalised patch tokens; CLS and register outputs are dropped.

The resized position embedding depends only on the weights and the grid, so in eval mode without
gradients it is computed once per resolution and cached; an export traced after one warm-up forward
sees it as a constant (the antialiased resize has no ONNX equivalent).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgescene.models.layers import Block, PatchEmbed
from edgescene.models.vggt.config import DinoV2PatchEmbedConfig


class DinoV2PatchEmbed(nn.Module):
    """images (N, 3, H, W) ImageNet-normalised -> normalised patch tokens (N, (H/p)(W/p), D)."""

    def __init__(self, config: DinoV2PatchEmbedConfig, img_size: int, patch_size: int) -> None:
        super().__init__()
        c = config
        grid = img_size // patch_size
        self.patch_size = patch_size
        self.num_register_tokens = c.num_register_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, c.embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, c.num_register_tokens, c.embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, c.embed_dim), requires_grad=False)
        self.patch_embed = PatchEmbed(patch_size, 3, c.embed_dim)
        self.blocks = nn.ModuleList(
            Block(c.embed_dim, c.num_heads, c.mlp_ratio, norm_eps=c.norm_eps, layerscale_init=c.layerscale_init)
            for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        if not self.pos_embed.is_meta:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.normal_(self.cls_token, std=1e-6)
            nn.init.normal_(self.register_tokens, std=1e-6)

    def _resize_pos_embed(self, h: int, w: int) -> torch.Tensor:
        n = self.pos_embed.shape[1] - 1
        if n == h * w and h == w:
            return self.pos_embed
        pos = self.pos_embed.float()
        m = int(math.sqrt(n))
        grid = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=True)
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat((pos[:, :1], grid), dim=1).to(self.pos_embed.dtype)

    def pos_embed_for(self, h: int, w: int) -> torch.Tensor:
        """Position embedding (1, 1 + h*w, D) for an h x w patch grid (cached in eval/no-grad)."""
        if self.training or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self._resize_pos_embed(h, w)
        p = self.pos_embed
        key = (h, w, p.device, p.dtype, p._version, p.data_ptr())
        if key not in self._pos_cache:
            if len(self._pos_cache) >= 8:
                self._pos_cache.clear()
            self._pos_cache[key] = self._resize_pos_embed(h, w).detach()
        return self._pos_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]) // self.patch_size, int(x.shape[-1]) // self.patch_size  # static grid
        tokens = self.patch_embed(x)
        n = tokens.shape[0]
        tokens = torch.cat((self.cls_token.expand(n, -1, -1), tokens), dim=1) + self.pos_embed_for(h, w)
        tokens = torch.cat((tokens[:, :1], self.register_tokens.expand(n, -1, -1), tokens[:, 1:]), dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 1 + self.num_register_tokens :]
