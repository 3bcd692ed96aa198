"""DINOv3 Vision Transformer backbones (Simeoni et al., "DINOv3", arXiv 2508.10104).

Follows ``dinov3/models/vision_transformer.py`` and ``dinov3/hub/backbones.py`` of
facebookresearch/dinov3: the module tree reproduces the released checkpoints key for key
(``shared/reference/dinov3_keys.json``), so an official ``.pth`` loads with ``strict=True``.

Architecture: patch-16 conv embedding, ``[CLS, 4 storage tokens, patches]`` (patches row-major),
pre-norm blocks with LayerScale, masked-k qkv bias, axial RoPE (base 100, per-axis normalised
coordinates, prefix tokens unrotated), LayerNorm eps 1e-5, GELU MLP or SwiGLU, no absolute position
embedding. Any input size that is a multiple of 16 works, non-square included.

Input images are normalised RGB: ``(x - mean) / std`` with the preset's statistics (ImageNet for
LVD-1689M weights, satellite statistics for SAT-493M), shape (B, 3, H, W).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypedDict

import torch
from torch import nn

from edgescene.models.layers import Block, DinoRopeEmbedding, PatchEmbed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAT493M_MEAN = (0.430, 0.411, 0.296)
SAT493M_STD = (0.213, 0.156, 0.143)


@dataclass(frozen=True)
class DinoV3Config:
    """Hyper-parameters of a DINOv3 ViT. Defaults are those of every released backbone."""

    embed_dim: int
    depth: int
    num_heads: int
    ffn: Literal["mlp", "swiglu"] = "mlp"
    ffn_ratio: float = 4.0
    swiglu_align: int = 8
    qkv_bias: bool = True
    mask_k_bias: bool = True
    patch_size: int = 16
    in_chans: int = 3
    n_storage_tokens: int = 4
    layerscale_init: float = 1e-5
    norm_eps: float = 1e-5
    untie_global_and_local_cls_norm: bool = False
    rope_base: float = 100.0
    rope_rescale_coords: float | None = 2.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights_tag: str = "lvd1689m"

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if (self.embed_dim // self.num_heads) % 4:
            raise ValueError("head_dim must be divisible by 4 for the axial RoPE")
        if self.ffn not in ("mlp", "swiglu"):
            raise ValueError(f"ffn must be 'mlp' or 'swiglu', got {self.ffn!r}")
        if self.depth < 1 or self.n_storage_tokens < 0:
            raise ValueError("depth must be >= 1 and n_storage_tokens >= 0")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def n_prefix_tokens(self) -> int:
        return 1 + self.n_storage_tokens


class _WeightsStats(TypedDict):
    """Normalisation statistics and tag of a weights release (keyword arguments of :class:`DinoV3Config`)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_tag: str


_SAT = _WeightsStats(mean=SAT493M_MEAN, std=SAT493M_STD, weights_tag="sat493m")
_VIT7B = DinoV3Config(
    4096, 40, 32, ffn="swiglu", ffn_ratio=3.0, swiglu_align=64, qkv_bias=False, untie_global_and_local_cls_norm=True
)
_VITL = DinoV3Config(1024, 24, 16)

DINOV3_PRESETS: dict[str, DinoV3Config] = {
    "dinov3_vits16": DinoV3Config(384, 12, 6),  # 21,601,152 params
    "dinov3_vits16plus": DinoV3Config(384, 12, 6, ffn="swiglu", ffn_ratio=6.0),  # 28,697,472
    "dinov3_vitb16": DinoV3Config(768, 12, 12),  # 85,669,632
    "dinov3_vitl16": _VITL,  # 303,154,176
    "dinov3_vitl16_sat493m": replace(_VITL, untie_global_and_local_cls_norm=True, **_SAT),  # 303,156,224
    "dinov3_vitl16plus": DinoV3Config(1024, 24, 16, ffn="swiglu", ffn_ratio=6.0),  # 403,915,776
    "dinov3_vith16plus": DinoV3Config(1280, 32, 20, ffn="swiglu", ffn_ratio=6.0),  # 840,633,600
    "dinov3_vit7b16": _VIT7B,  # 6,716,043,264
    "dinov3_vit7b16_sat493m": replace(_VIT7B, **_SAT),  # 6,716,043,264 (same keys as LVD 7B)
    "dinov3_tiny": DinoV3Config(64, 2, 4, weights_tag="none"),  # 149,952: tests only
}


class DinoVisionTransformer(nn.Module):
    """DINOv3 ViT backbone. Input x: (B, 3, H, W) normalised, H and W multiples of 16."""

    def __init__(self, config: DinoV3Config) -> None:
        super().__init__()
        self.config = config
        c = config
        self.patch_size = c.patch_size
        self.n_storage_tokens = c.n_storage_tokens
        self.embed_dim = c.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.storage_tokens = nn.Parameter(torch.zeros(1, c.n_storage_tokens, c.embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, c.embed_dim))
        self.patch_embed = PatchEmbed(c.patch_size, c.in_chans, c.embed_dim)
        self.rope_embed = DinoRopeEmbedding(c.head_dim, base=c.rope_base, rescale_coords=c.rope_rescale_coords)
        self.blocks = nn.ModuleList(
            Block(
                c.embed_dim,
                c.num_heads,
                c.ffn_ratio,
                ffn=c.ffn,
                swiglu_align=c.swiglu_align,
                qkv_bias=c.qkv_bias,
                mask_k_bias=c.mask_k_bias,
                norm_eps=c.norm_eps,
                layerscale_init=c.layerscale_init,
            )
            for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        # Used by upstream only for the local crops during training; never at inference.
        self.local_cls_norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps) if c.untie_global_and_local_cls_norm else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random init as upstream ``init_weights`` (trunc-normal 0.02 linears, zero biases)."""
        if self.cls_token.is_meta:
            return
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.storage_tokens, std=0.02)
        nn.init.zeros_(self.mask_token)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def prepare_tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> tuple[torch.Tensor, int, int]:
        """(B, 3, H, W) -> tokens (B, 1 + n_storage + h*w, D), h, w (patch grid)."""
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        patches = self.patch_embed(x)
        if masks is not None:
            patches = torch.where(masks.unsqueeze(-1), self.mask_token.to(patches.dtype).unsqueeze(0), patches)
            cls_token: torch.Tensor = self.cls_token
        else:
            cls_token = self.cls_token + 0 * self.mask_token  # keeps mask_token in the graph, as upstream
        b = patches.shape[0]
        tokens = torch.cat([cls_token.expand(b, -1, -1), self.storage_tokens.expand(b, -1, -1), patches], dim=1)
        return tokens, h, w

    def _run_blocks(self, x: torch.Tensor, masks: torch.Tensor | None, keep: set[int] | None = None):
        tokens, h, w = self.prepare_tokens(x, masks)
        rope = self.rope_embed(h, w, prefix=self.config.n_prefix_tokens)
        kept = []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, rope)
            if keep is not None and i in keep:
                kept.append(tokens)
        return tokens, kept, h, w

    def forward_features(self, x: torch.Tensor, masks: torch.Tensor | None = None, local_crops: bool = False) -> dict:
        """Returns a dict of
        ``x_norm_clstoken`` (B, D), ``x_storage_tokens`` (B, n_storage, D) (normalised),
        ``x_norm_patchtokens`` (B, h*w, D), ``x_prenorm`` (B, 1 + n_storage + h*w, D) and ``masks``.

        ``local_crops=True`` (training only) normalises CLS and storage tokens with
        ``local_cls_norm`` where the preset has one, as upstream does for local crops.
        """
        tokens, _, _, _ = self._run_blocks(x, masks)
        n_prefix = self.config.n_prefix_tokens
        if local_crops and self.training and self.local_cls_norm is not None:
            cls_reg = self.local_cls_norm(tokens[:, :n_prefix])
            patch = self.norm(tokens[:, n_prefix:])
        else:
            normed = self.norm(tokens)
            cls_reg, patch = normed[:, :n_prefix], normed[:, n_prefix:]
        return {
            "x_norm_clstoken": cls_reg[:, 0],
            "x_storage_tokens": cls_reg[:, 1:],
            "x_norm_patchtokens": patch,
            "x_prenorm": tokens,
            "masks": masks,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised CLS token (B, D), as upstream ``model(x)`` with an identity head."""
        return self.forward_features(x)["x_norm_clstoken"]

    def get_intermediate_layers(
        self,
        x: torch.Tensor,
        *,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        return_extra_tokens: bool = False,
        norm: bool = True,
    ) -> tuple:
        """Outputs of selected blocks, as upstream.

        ``n``: the last n blocks (int) or explicit block indices. Each entry is patch tokens
        (B, h*w, D), or (B, D, h, w) with ``reshape=True``, optionally in a tuple with the class
        token (B, D) and/or the storage tokens (B, n_storage, D).
        """
        depth = len(self.blocks)
        indices = list(range(depth - n, depth)) if isinstance(n, int) else list(n)
        bad = [i for i in indices if not 0 <= i < depth]
        if bad or not indices:
            raise ValueError(f"layer indices must be in [0, {depth - 1}], got {indices}")
        _, outputs, h, w = self._run_blocks(x, None, keep=set(indices))
        by_index = dict(zip(sorted(set(indices)), outputs, strict=True))
        outputs = [self.norm(by_index[i]) if norm else by_index[i] for i in indices]
        n_prefix = self.config.n_prefix_tokens
        class_tokens = [o[:, 0] for o in outputs]
        extra_tokens = [o[:, 1:n_prefix] for o in outputs]
        patches = [o[:, n_prefix:] for o in outputs]
        if reshape:
            patches = [p.reshape(p.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous() for p in patches]
        parts = [patches]
        if return_class_token:
            parts.append(class_tokens)
        if return_extra_tokens:
            parts.append(extra_tokens)
        return tuple(patches) if len(parts) == 1 else tuple(zip(*parts, strict=True))


def build_dinov3(name_or_config: str | DinoV3Config) -> DinoVisionTransformer:
    """Build a randomly initialised DINOv3 backbone from a preset name or a config."""
    if isinstance(name_or_config, DinoV3Config):
        return DinoVisionTransformer(name_or_config)
    if name_or_config not in DINOV3_PRESETS:
        raise ValueError(f"unknown DINOv3 preset {name_or_config!r}; valid: {sorted(DINOV3_PRESETS)}")
    return DinoVisionTransformer(DINOV3_PRESETS[name_or_config])
