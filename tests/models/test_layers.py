"""Shared layers against direct transcriptions of the upstream formulas (VGGT.md, DINOV3.md):
RoPE layouts, the DPT UV embedding, the DPT residual unit's in-place-ReLU semantics, SwiGLU widths,
and the DINOv2 position-embedding resize."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgescene.models.layers import DinoRopeEmbedding, rotate_half, swiglu_hidden_dim, vggt_rope_tables
from edgescene.models.vggt.config import DinoV2PatchEmbedConfig
from edgescene.models.vggt.dinov2 import DinoV2PatchEmbed
from edgescene.models.vggt.dpt_head import ResidualConvUnit, uv_position_embedding


def test_vggt_rope_equals_the_upstream_formulation():
    """Upstream: positions = cartesian_prod(rows, cols) + 1 (special tokens at 0), a cos/sin table
    looked up with F.embedding, the first head half rotated by rows, the second by columns."""
    h, w, head_dim, prefix, frames = 3, 4, 16, 5, 2
    torch.manual_seed(0)
    q = torch.randn(1, 2, frames * (prefix + h * w), head_dim)
    pos = torch.cartesian_prod(torch.arange(h), torch.arange(w)) + 1
    pos = torch.cat([torch.zeros(prefix, 2, dtype=torch.long), pos]).repeat(frames, 1)
    half = head_dim // 2
    inv_freq = 1.0 / (100.0 ** (torch.arange(0, half, 2).float() / half))
    angles = torch.einsum("i,j->ij", torch.arange(int(pos.max()) + 1).float(), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    cos_table, sin_table = angles.cos(), angles.sin()

    def rope_1d(x, p):
        return x * F.embedding(p, cos_table) + rotate_half(x) * F.embedding(p, sin_table)

    rows, cols = q.chunk(2, dim=-1)
    expected = torch.cat((rope_1d(rows, pos[:, 0]), rope_1d(cols, pos[:, 1])), dim=-1)
    got = vggt_rope_tables(h, w, head_dim, prefix=prefix)(q)
    assert torch.equal(got, expected)


def test_dinov3_rope_equals_the_upstream_formulation():
    h, w, head_dim = 3, 5, 16
    rope = DinoRopeEmbedding(head_dim).eval()(h, w, prefix=5)
    periods = 100.0 ** (2 * torch.arange(head_dim // 4).float() / (head_dim // 2))
    ch = (torch.arange(h).float() + 0.5) / h
    cw = (torch.arange(w).float() + 0.5) / w
    coords = 2 * torch.stack(torch.meshgrid(ch, cw, indexing="ij"), dim=-1).reshape(-1, 2) - 1
    angles = (2 * math.pi * coords[:, :, None] / periods).flatten(1).tile(2)
    assert torch.allclose(rope.cos, angles.cos(), atol=1e-6) and torch.allclose(rope.sin, angles.sin(), atol=1e-6)
    q = torch.randn(2, 3, 5 + h * w, head_dim)
    out = rope(q)
    assert torch.equal(out[:, :, :5], q[:, :, :5])  # CLS and storage tokens are not rotated
    assert torch.allclose(out.norm(dim=-1), q.norm(dim=-1), atol=1e-5)  # a rotation keeps norms


def test_vggt_rope_scores_depend_only_on_relative_position():
    rope = vggt_rope_tables(4, 4, 8, prefix=0)
    q, k = torch.randn(8), torch.randn(8)
    qs, ks = rope(q.expand(1, 1, 16, 8)), rope(k.expand(1, 1, 16, 8))
    score = lambda a, b: float(qs[0, 0, a] @ ks[0, 0, b])
    assert score(0, 5) == pytest.approx(score(5, 10), abs=1e-5)  # both (+1 row, +1 col)


def test_uv_embedding_equals_the_float64_torch_formula():
    width, height, channels, aspect = 7, 5, 16, 518 / 392
    diag = (aspect**2 + 1) ** 0.5
    sx, sy = aspect / diag, 1 / diag
    xs = torch.linspace(-sx * (width - 1) / width, sx * (width - 1) / width, width)
    ys = torch.linspace(-sy * (height - 1) / height, sy * (height - 1) / height, height)
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")
    omega = 1.0 / 100.0 ** (torch.arange(channels // 4, dtype=torch.float64) / (channels // 4))

    def embed(p):
        out = torch.einsum("m,d->md", p.reshape(-1).double(), omega)
        return torch.cat([out.sin(), out.cos()], dim=1)

    expected = torch.cat([embed(uu), embed(vv)], dim=1).float().reshape(height, width, channels).permute(2, 0, 1)
    x_part, y_part = uv_position_embedding(width, height, channels, aspect)
    got = torch.cat(
        [
            torch.from_numpy(x_part)[:, None, :].expand(-1, height, -1),
            torch.from_numpy(y_part)[:, :, None].expand(-1, -1, width),
        ]
    )
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-6)


def test_residual_conv_unit_matches_upstream_in_place_relu_semantics():
    torch.manual_seed(0)
    unit = ResidualConvUnit(4)
    relu = nn.ReLU(inplace=True)

    def upstream(x):  # as written upstream: out = act(x) mutates x, then out + x
        out = relu(x)
        out = unit.conv2(relu(unit.conv1(out)))
        return out + x

    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(unit(x.clone()), upstream(x.clone()))


def test_swiglu_widths_of_the_released_models():
    assert swiglu_hidden_dim(384 * 6, 8) == 1536
    assert swiglu_hidden_dim(1024 * 6, 8) == 4096
    assert swiglu_hidden_dim(1280 * 6, 8) == 5120
    assert swiglu_hidden_dim(4096 * 3, 64) == 8192


def test_dinov2_position_embedding_resize_is_antialiased_bicubic():
    torch.manual_seed(0)
    embed = DinoV2PatchEmbed(
        DinoV2PatchEmbedConfig(embed_dim=16, depth=1, num_heads=2), img_size=14 * 6, patch_size=14
    ).eval()
    assert embed.pos_embed_for(6, 6) is embed.pos_embed  # the training grid is used as is
    grid = embed.pos_embed[:, 1:].reshape(1, 6, 6, 16).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(4, 9), mode="bicubic", antialias=True).permute(0, 2, 3, 1).reshape(1, 36, 16)
    with torch.no_grad():
        got = embed.pos_embed_for(4, 9)
        assert got is embed.pos_embed_for(4, 9)  # cached per resolution in eval / no-grad
    assert torch.equal(got[:, 1:], expected) and torch.equal(got[:, :1], embed.pos_embed[:, :1])
    assert np.isfinite(got.numpy()).all()
