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
import math
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
        key_log_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``key_log_weights`` (B, N): added to every query's logit for that key (token merging's
        proportional attention: a merged key weighs as much as the tokens it stands for). It rides in
        one extra q / k dimension (see :func:`_with_key_weights`), so the fused attention kernels and an
        exporter's core override still apply (no attention mask); None: plain attention."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope(q), rope(k)
        if key_log_weights is not None:
            q, k, v = _with_key_weights(q, k, v, key_log_weights)
        dim = q.shape[-1]
        if _core_override is not None:
            out = _core_override(q, k, v, self.num_heads)  # (B, N, heads * dim)
        else:
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, self.num_heads * dim)
        if dim != self.head_dim:  # drop the padding the key weights rode in
            out = out.reshape(b, n, self.num_heads, dim)[..., : self.head_dim].reshape(b, n, c)
        return self.proj(out)


KEY_WEIGHT_PAD = 8  # extra head dims carrying the key weights (keeps head sizes multiples of 8 for fused kernels)


def _with_key_weights(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_log_weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (B, h, N, d) -> (B, h, N, d + 8) whose attention under the default scale 1/sqrt(d + 8)
    equals softmax(q k^T / sqrt(d) + w) v with w = key_log_weights (B, N) per key: q is rescaled by
    sqrt((d + 8) / d) and gets a 1, k gets sqrt(d + 8) * w in the same extra dimension, v gets zeros."""
    b, h, n, d = q.shape
    big = d + KEY_WEIGHT_PAD
    q = torch.cat(
        (q * math.sqrt(big / d), torch.ones_like(q[..., :1]), torch.zeros_like(q[..., : KEY_WEIGHT_PAD - 1])), -1
    )
    w = (key_log_weights.to(k.dtype) * math.sqrt(big))[:, None, :, None].expand(-1, h, -1, 1)
    k = torch.cat((k, w, torch.zeros_like(k[..., : KEY_WEIGHT_PAD - 1])), dim=-1)
    v = torch.cat((v, torch.zeros_like(v[..., :KEY_WEIGHT_PAD])), dim=-1)
    return q, k, v
