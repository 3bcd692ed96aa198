"""One fused onnxruntime ``com.microsoft.MultiHeadAttention`` node per attention layer in the ONNX graph.

The TorchScript exporter writes ``F.scaled_dot_product_attention`` as MatMul -> Softmax -> MatMul,
which materialises the (tokens x tokens) score matrix of every head: for VGGT's global attention
over all frames that is most of the run time on onnxruntime (the peers' "ORT is 2x slower than
PyTorch" report, EXPORT_AND_RUNTIME_PEERS.md). onnxruntime's contrib ``MultiHeadAttention`` runs a
flash-attention kernel on CPU and CUDA instead. Within :func:`fused_attention_export`, every
:class:`edgescene.models.layers.attention.Attention` routes q, k, v (after QK-norm and RoPE, which
stay ordinary ONNX ops) through :class:`OrtMultiHeadAttention`, whose eager forward is SDPA (so the
traced values are unchanged) and whose ONNX symbolic is the contrib node.

The node is onnxruntime-only: TensorRT and other runtimes get the standard graph (TensorRT fuses
the MatMul-Softmax-MatMul pattern itself).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from edgescene.models.layers.attention import attention_core_override

FUSED_OP = "com.microsoft::MultiHeadAttention"


class OrtMultiHeadAttention(torch.autograd.Function):
    """q, k, v: (B, N, heads * head_dim) -> (B, N, heads * head_dim); softmax scale 1/sqrt(head_dim)."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
        b, n, c = q.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], num_heads, c // num_heads).transpose(1, 2)

        return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, n, c)

    @staticmethod
    def symbolic(g, q, k, v, num_heads: int):
        out = g.op(FUSED_OP, q, k, v, num_heads_i=num_heads)
        out.setType(q.type().with_sizes([None, None, None]))  # dtype and rank of the query; sizes stay symbolic
        return out


def _fused_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    # Sizes come from v, which is straight out of the qkv projection: after RoPE the tracer can see
    # q and k with static shapes and would bake the example frame count into the graph. num_heads
    # comes from the layer for the same reason (the node attribute must be a constant).
    b, _, n, d = v.shape

    def flat(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2).reshape(b, n, num_heads * d)

    return OrtMultiHeadAttention.apply(flat(q), flat(k), flat(v), num_heads)


@contextlib.contextmanager
def fused_attention_export(enabled: bool = True) -> Iterator[None]:
    """While open (and ``enabled``), attention layers trace to one fused onnxruntime node each."""
    if not enabled:
        yield
        return
    with attention_core_override(_fused_core):
        yield


def count_fused_nodes(model) -> int:
    """How many fused attention nodes an ``onnx.ModelProto`` holds."""
    domain, op = FUSED_OP.split("::")
    return sum(1 for node in model.graph.node if node.op_type == op and node.domain == domain)
