"""Transformer building blocks shared by DINOv3, the VGGT aggregator and the VGGT heads."""

from edgescene.models.layers.attention import Attention, LinearKMaskedBias
from edgescene.models.layers.block import Block, LayerScale
from edgescene.models.layers.mlp import Mlp, SwiGLUFFN, swiglu_hidden_dim
from edgescene.models.layers.patch_embed import PatchEmbed
from edgescene.models.layers.rope import DinoRopeEmbedding, Rope, rotate_half, vggt_rope_tables

__all__ = [
    "Attention",
    "Block",
    "DinoRopeEmbedding",
    "LayerScale",
    "LinearKMaskedBias",
    "Mlp",
    "PatchEmbed",
    "Rope",
    "SwiGLUFFN",
    "rotate_half",
    "swiglu_hidden_dim",
    "vggt_rope_tables",
]
