"""Multi-head self-attention with optional QK-norm (VGGT), masked-k qkv bias (DINOv3) and RoPE.

Attention is ``F.scaled_dot_product_attention`` (scale 1/sqrt(head_dim)), which uses the fused
flash / memory-efficient kernels on CPU and GPU and exports to ONNX as plain MatMul/Softmax. An
exporter may route the attention core through :func:`attention_core_override` instead (e.g. to emit
one fused onnxruntime ``MultiHeadAttention`` node, see ``edgescene.export.fused_attention``); the
override receives q, k, v after QK-norm and RoPE and must compute the same thing.
Key names: ``qkv``, ``q_norm``, ``k_norm``, ``proj`` (vggt/layers/attention.py,
dinov3/layers/attention.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

# (q, k, v each (B, heads, N, head_dim), heads) -> (B, N, heads * head_dim); None = SDPA
AttentionCore = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
_core_override: AttentionCore | None = None


@contextlib.contextmanager
def attention_core_override(core: AttentionCore) -> Iterator[None]:
    """Use ``core`` instead of SDPA in every :class:`Attention` while the context is open (export only)."""
    global _core_override
    previous, _core_override = _core_override, core
    try:
        yield
    finally:
        _core_override = previous


class LinearKMaskedBias(nn.Linear):
    """DINOv3's qkv projection: the effective bias is ``bias * bias_mask``.

    ``bias_mask`` is a persistent buffer (it is in the released checkpoints) holding 1 for the q and v
    thirds and 0 for the k third. It is initialised to that pattern here; loading a checkpoint
    replaces it with the file's values, which is what the upstream model computes with.
    """

    bias_mask: torch.Tensor  # buffer (out_features,)

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if not bias:
            raise ValueError("LinearKMaskedBias needs bias=True; use nn.Linear for a bias-free qkv")
        third = out_features // 3
        mask = torch.cat([torch.ones(third), torch.zeros(third), torch.ones(out_features - 2 * third)])
        self.register_buffer("bias_mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias * self.bias_mask)


class Attention(nn.Module):
    """x: (B, N, dim) -> (B, N, dim).

    ``rope`` is a callable applied to q and k of shape (B, heads, N, head_dim) after QK-norm
    (see :mod:`edgescene.models.layers.rope`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        mask_k_bias: bool = False,
        qk_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        if mask_k_bias and qkv_bias:
            self.qkv: nn.Linear = LinearKMaskedBias(dim, 3 * dim)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=qk_norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=qk_norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(
        self,
        x: torch.Tensor,
        rope: Callable[[torch.Tensor], torch.Tensor] | None = None,
        attn_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``attn_bias``: added to the attention logits, broadcast to (B, heads, N, N) (e.g. (B, 1, 1, N):
        a per-key term, as token merging's proportional attention); None: plain attention. A biased
        attention always runs SDPA (an exporter's core override, which takes no bias, is skipped)."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope(q), rope(k)
        if _core_override is not None and attn_bias is None:  # a biased attention stays SDPA (plain ops)
            return self.proj(_core_override(q, k, v, self.num_heads))
        x = (
            F.scaled_dot_product_attention(q, k, v)
            if attn_bias is None
            else F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
        )
        return self.proj(x.transpose(1, 2).reshape(b, n, c))
