"""Projection heads of DINOv3 self-supervised training (follows ``dinov3/layers/dino_head.py``).

``DINOHead``: MLP ``Linear(D, hidden) -> GELU -> Linear(hidden, hidden) -> GELU -> Linear(hidden,
bottleneck)``, L2-normalisation, then ``last_layer = Linear(bottleneck, K, bias=False)``. No batch
norm and, unlike DINOv2, no weight-norm on the last layer. Key names (``mlp.0``, ``mlp.2``,
``mlp.4``, ``last_layer``) are upstream's. The trainer builds two of them: one for the CLS token
(DINO loss) and a separate one for patch tokens (iBOT loss). Upstream does not release its heads,
so fine-tuning always starts them fresh.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    """x: (N, in_dim) -> prototype logits (N, out_dim)."""

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, nlayers: int = 3
    ) -> None:
        super().__init__()
        if nlayers < 2:
            raise ValueError(f"nlayers must be >= 2, got {nlayers}")
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
        for _ in range(nlayers - 2):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream init: trunc-normal (std 0.02) weights, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2, eps=1e-6 if x.dtype == torch.float16 else 1e-12)
        return self.last_layer(x)
