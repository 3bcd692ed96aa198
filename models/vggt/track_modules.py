"""Update transformer of VGGT's tracker (CoTracker2's "efficient" space-time transformer).

Follows ``vggt/heads/track_modules/blocks.py`` (``EfficientUpdateFormer``) and
``vggt/heads/track_modules/modules.py`` (``AttnBlock``, ``CrossAttnBlock``) of facebookresearch/vggt,
themselves adapted from facebookresearch/co-tracker (CoTracker2) and facebookresearch/vggsfm.

Input tokens are (B, N, T, D_in): N tracks, T frames. Each of the ``depth`` steps runs one
attention over time (per track, T tokens) and then one step over space (per frame) through
``num_virtual_tracks`` learned "virtual" tracks: virtual <- points (cross), virtual <- virtual
(self), points <- virtual (cross). Output (B, N, T, output_dim).

Upstream quirks kept because the released weights depend on them:
- both blocks are "normalise, then add": ``x = norm1(x); x = x + attn(x); x = x + mlp(norm2(x))``.
  The residual stream is the *normalised* input, unlike a standard pre-norm block;
- the learned virtual tokens are stored as ``virual_tracks`` (sic), shape (1, V, 1, hidden);
- upstream runs a space step after time block ``i`` when ``i % (time_depth // space_depth) == 0``;
  VGGT uses the same depth for both, so that is after every time block, which is what this does.

Attention is ``nn.MultiheadAttention(batch_first=True)`` (keys ``in_proj_weight``/``out_proj``),
called as upstream does (``need_weights=True``, weights discarded). That keeps PyTorch's explicit
softmax path and gives bit-identical outputs to upstream; ``need_weights=False`` (SDPA) differs by
float32 rounding, which the tracker's high-frequency flow embedding (up to ~1000 rad/pixel)
amplifies over iterations. The attention maps are small (T x T over frames, V x N over tracks).
MLPs use exact-erf GELU.
"""

from __future__ import annotations

import torch
from torch import nn

from edgescene.models.layers import Mlp


class AttnBlock(nn.Module):
    """Self-attention block: ``x = norm1(x); x = x + attn(x); x + mlp(norm2(x))``. x: (B, L, C)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)  # upstream: the residual branch starts from the normalised tokens
        x = x + self.attn(x, x, x, need_weights=True)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Cross-attention block: x (B, L, C) attends to context (B, M, C); same residual quirk as AttnBlock."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm_context = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.cross_attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + self.cross_attn(x, context, context, need_weights=True)[0]
        return x + self.mlp(self.norm2(x))


class EfficientUpdateFormer(nn.Module):
    """tokens (B, N, T, input_dim) -> updates (B, N, T, output_dim) by alternating time / space attention."""

    def __init__(
        self,
        depth: int = 6,
        input_dim: int = 388,
        hidden_size: int = 384,
        num_heads: int = 8,
        output_dim: int = 130,
        mlp_ratio: float = 4.0,
        num_virtual_tracks: int = 64,
    ) -> None:
        super().__init__()
        self.num_virtual_tracks = num_virtual_tracks
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim)
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))  # (sic) upstream key

        def self_blocks() -> nn.ModuleList:
            return nn.ModuleList(AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))

        def cross_blocks() -> nn.ModuleList:
            return nn.ModuleList(CrossAttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))

        self.time_blocks = self_blocks()
        self.space_virtual_blocks = self_blocks()
        self.space_point2virtual_blocks = cross_blocks()
        self.space_virtual2point_blocks = cross_blocks()
        self._init_weights()

    def _init_weights(self) -> None:
        """Upstream init: Xavier-uniform Linear weights, zero biases, flow head N(0, 1e-3) truncated."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.input_transform(self.input_norm(x))
        init_tokens = tokens
        b, n, t, c = tokens.shape
        virtual = self.virual_tracks.expand(b, -1, t, -1).to(tokens.dtype)
        tokens = torch.cat([tokens, virtual], dim=1)  # (B, M, T, C), M = N + V
        m = n + self.num_virtual_tracks
        for i, time_block in enumerate(self.time_blocks):
            tokens = time_block(tokens.reshape(b * m, t, c)).reshape(b, m, t, c)
            space = tokens.permute(0, 2, 1, 3).reshape(b * t, m, c)  # (B*T, M, C)
            points, virtual = space[:, :n], space[:, n:]
            virtual = self.space_virtual2point_blocks[i](virtual, points)
            virtual = self.space_virtual_blocks[i](virtual)
            points = self.space_point2virtual_blocks[i](points, virtual)
            tokens = torch.cat([points, virtual], dim=1).reshape(b, t, m, c).permute(0, 2, 1, 3)
        tokens = tokens[:, :n] + init_tokens
        return self.flow_head(self.output_norm(tokens))
