"""Configuration and presets of VGGT (Wang et al., "VGGT: Visual Geometry Grounded Transformer", CVPR 2025).

``vggt_1b`` reproduces the released facebook/VGGT-1B module tree (1797 state_dict keys,
1,256,537,516 parameters; ``shared/reference/vggt_1b_keys.json``). The tiny presets keep every
structural feature (DINOv2 or DINOv3 patch embedding, alternating attention, all four heads) at a
size that runs forward and backward on a CPU in well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, TypedDict


@dataclass(frozen=True)
class DinoV2PatchEmbedConfig:
    """The DINOv2 ViT with registers that VGGT uses as its patch embedding (upstream ``vit_large``)."""

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    layerscale_init: float = 1.0
    norm_eps: float = 1e-6


@dataclass(frozen=True)
class TrackHeadConfig:
    """Track head (DPT feature extractor + CoTracker/VGGSfM-style iterative tracker)."""

    features: int = 128
    hidden_size: int = 384
    iters: int = 4
    stride: int = 2
    corr_levels: int = 7
    corr_radius: int = 4
    depth: int = 6
    num_heads: int = 8
    num_virtual_tracks: int = 64
    max_scale: int = 518


@dataclass(frozen=True)
class VGGTConfig:
    """Hyper-parameters of a VGGT model.

    ``patch_embed``: ``"dinov2"`` (upstream: a DINOv2 ViT/14 with registers whose normalised patch
    tokens feed the aggregator), ``"dinov3"`` (a DINOv3 backbone, patch 16, named by
    ``dinov3_preset``; for custom training) or ``"conv"`` (a single conv layer, for ablations).
    """

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    layerscale_init: float = 0.01
    rope_base: float = 100.0
    patch_embed: Literal["dinov2", "dinov3", "conv"] = "dinov2"
    dinov2: DinoV2PatchEmbedConfig = field(default_factory=DinoV2PatchEmbedConfig)
    dinov3_preset: str | None = None
    intermediate_layer_idx: tuple[int, int, int, int] = (4, 11, 17, 23)
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    camera_iterations: int = 4
    camera_motion: bool = False  # edgescene's motion cues for the camera head (motion.py); not upstream
    track: TrackHeadConfig = field(default_factory=TrackHeadConfig)
    enable_camera: bool = True
    enable_depth: bool = True
    enable_point: bool = True
    enable_track: bool = True

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads or (self.embed_dim // self.num_heads) % 4:
            raise ValueError(
                f"embed_dim {self.embed_dim} / num_heads {self.num_heads} must give a head_dim divisible by 4"
            )
        bad = [i for i in self.intermediate_layer_idx if not 0 <= i < self.depth]
        if bad:
            raise ValueError(
                f"intermediate_layer_idx {self.intermediate_layer_idx} out of range for depth {self.depth}"
            )
        if self.patch_embed not in ("dinov2", "dinov3", "conv"):
            raise ValueError(f"patch_embed must be 'dinov2', 'dinov3' or 'conv', got {self.patch_embed!r}")
        if self.patch_embed == "dinov2" and self.dinov2.embed_dim != self.embed_dim:
            raise ValueError("the DINOv2 patch embedding must have the aggregator's embed_dim")
        if self.patch_embed == "dinov3":
            if self.dinov3_preset is None:
                raise ValueError("patch_embed='dinov3' needs dinov3_preset (e.g. 'dinov3_vitl16')")
            if self.patch_size != 16:
                raise ValueError("a DINOv3 patch embedding has patch_size 16")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def patch_start_idx(self) -> int:
        """Tokens before the patches in every frame: 1 camera token + register tokens."""
        return 1 + self.num_register_tokens

    @property
    def kept_layers(self) -> tuple[int, ...]:
        """Aggregator layers any enabled head reads; only these are kept in memory."""
        keep: set[int] = set()
        if self.enable_depth or self.enable_point or self.enable_track:
            keep.update(self.intermediate_layer_idx)
        if self.enable_camera:
            keep.add(self.depth - 1)
        return tuple(sorted(keep))


class _TinyCommon(TypedDict):
    """The fields the tiny presets share (keyword arguments of :class:`VGGTConfig`)."""

    img_size: int
    embed_dim: int
    depth: int
    num_heads: int
    intermediate_layer_idx: tuple[int, int, int, int]
    dpt_features: int
    dpt_out_channels: tuple[int, int, int, int]
    camera_trunk_depth: int
    camera_num_heads: int
    track: TrackHeadConfig


_TINY_COMMON = _TinyCommon(
    img_size=224,
    embed_dim=64,
    depth=4,
    num_heads=4,
    intermediate_layer_idx=(0, 1, 2, 3),
    dpt_features=32,
    dpt_out_channels=(32, 64, 64, 64),
    camera_trunk_depth=2,
    camera_num_heads=4,
    track=TrackHeadConfig(
        features=32, hidden_size=64, corr_levels=3, corr_radius=2, depth=2, num_heads=4, num_virtual_tracks=8
    ),
)

_VGGT_SMALL = VGGTConfig(
    img_size=168,
    embed_dim=128,
    depth=6,
    num_heads=4,
    intermediate_layer_idx=(1, 3, 4, 5),
    dinov2=DinoV2PatchEmbedConfig(embed_dim=128, depth=2, num_heads=4),
    dpt_features=64,
    dpt_out_channels=(64, 128, 128, 128),
    camera_trunk_depth=2,
    camera_num_heads=4,
    track=TrackHeadConfig(
        features=48, hidden_size=96, corr_levels=3, corr_radius=3, depth=2, num_heads=4, num_virtual_tracks=16
    ),
)

VGGT_PRESETS: dict[str, VGGTConfig] = {
    "vggt_1b": VGGTConfig(),  # 1,256,537,516 params (facebook/VGGT-1B)
    "vggt_tiny": VGGTConfig(  # tests and CPU demos
        dinov2=DinoV2PatchEmbedConfig(embed_dim=64, depth=2, num_heads=4), **_TINY_COMMON
    ),
    "vggt_small": _VGGT_SMALL,  # the bundled default model's architecture (trained on synthetic scenes)
    "vggt_small_motion": replace(_VGGT_SMALL, camera_motion=True),  # + motion cues for its camera head (motion.py)
    "vggt_tiny_dinov3": VGGTConfig(  # DINOv3 patch embedding (patch 16), for custom training
        patch_size=16, patch_embed="dinov3", dinov3_preset="dinov3_tiny", **_TINY_COMMON
    ),
}
