"""Non-overlapping convolutional patch embedding (ViT / DINOv2 / DINOv3 ``patch_embed.proj``)."""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """images (N, C, H, W) -> tokens (N, (H/p)*(W/p), D), patches in row-major order.

    H and W must be multiples of ``patch_size``; anything else is a ValueError (upstream silently
    floor-crops, which hides preprocessing mistakes).
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        if not torch.jit.is_tracing() and (h % self.patch_size or w % self.patch_size):
            raise ValueError(
                f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}; "
                f"resize or crop to a multiple of {self.patch_size} first"
            )
        return self.proj(x).flatten(2).transpose(1, 2)
