"""Feed-forward layers: the GELU MLP (ViT, DINOv2, VGGT) and SwiGLU (DINOv3 "plus" and 7B models).

Key names follow the official checkpoints: ``fc1``/``fc2`` for the MLP, ``w1``/``w2``/``w3`` for SwiGLU
(dinov3/layers/ffn_layers.py in facebookresearch/dinov3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    """``fc2(act(fc1(x)))`` with exact-erf GELU by default. x: (..., in_features)."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int | None = None,
        bias: bool = True,
        act_layer: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def swiglu_hidden_dim(hidden_features: int, align_to: int) -> int:
    """DINOv3's SwiGLU width: two thirds of the nominal hidden size, rounded up to ``align_to``."""
    d = int(hidden_features * 2 / 3)
    return d + (-d % align_to)


class SwiGLUFFN(nn.Module):
    """``w3(silu(w1 x) * w2 x)``. ``hidden_features`` is the nominal (ffn_ratio * dim) size."""

    def __init__(self, in_features: int, hidden_features: int, bias: bool = True, align_to: int = 8) -> None:
        super().__init__()
        hidden = swiglu_hidden_dim(hidden_features, align_to)
        self.w1 = nn.Linear(in_features, hidden, bias=bias)
        self.w2 = nn.Linear(in_features, hidden, bias=bias)
        self.w3 = nn.Linear(hidden, in_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))
