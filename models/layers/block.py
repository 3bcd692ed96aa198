"""Pre-norm transformer block with LayerScale, as used by DINOv2, DINOv3 and VGGT.

``x = x + ls1(attn(norm1(x), rope)); x = x + ls2(mlp(norm2(x)))`` with key names ``norm1``, ``attn``,
``ls1.gamma``, ``norm2``, ``mlp``, ``ls2.gamma`` (vggt/layers/block.py, dinov3/layers/block.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from edgescene.models.layers.attention import Attention
from edgescene.models.layers.mlp import Mlp, SwiGLUFFN


class LayerScale(nn.Module):
    """Per-channel learnable scale ``x * gamma``; gamma starts at ``init_values``."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """One transformer block. x: (B, N, dim) -> (B, N, dim).

    Args:
        ffn: ``"mlp"`` (GELU, hidden = mlp_ratio * dim) or ``"swiglu"`` (DINOv3 SwiGLU, width rounded
            up to ``swiglu_align``).
        layerscale_init: initial LayerScale value; ``None`` for no LayerScale (no ``ls*`` keys).
        norm_eps: LayerNorm epsilon of ``norm1``/``norm2`` (1e-5 DINOv3 and VGGT, 1e-6 DINOv2).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        *,
        ffn: Literal["mlp", "swiglu"] = "mlp",
        swiglu_align: int = 8,
        qkv_bias: bool = True,
        mask_k_bias: bool = False,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
        layerscale_init: float | None = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(
            dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, qk_norm=qk_norm, mask_k_bias=mask_k_bias
        )
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        hidden = int(dim * mlp_ratio)
        if ffn == "mlp":
            self.mlp: nn.Module = Mlp(dim, hidden, bias=ffn_bias)
        elif ffn == "swiglu":
            self.mlp = SwiGLUFFN(dim, hidden, bias=ffn_bias, align_to=swiglu_align)
        else:
            raise ValueError(f"ffn must be 'mlp' or 'swiglu', got {ffn!r}")
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init is not None else nn.Identity()

    def forward(self, x: torch.Tensor, rope: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))
