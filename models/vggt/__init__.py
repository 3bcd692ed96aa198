"""VGGT (facebookresearch/vggt): aggregator, camera / DPT / track heads and the full model."""

from edgescene.models.vggt.config import VGGT_PRESETS, DinoV2PatchEmbedConfig, TrackHeadConfig, VGGTConfig
from edgescene.models.vggt.model import VGGT, build_vggt

__all__ = ["VGGT", "VGGT_PRESETS", "DinoV2PatchEmbedConfig", "TrackHeadConfig", "VGGTConfig", "build_vggt"]
