"""One registry of every model preset: ``create_model(name, weights=None)`` and ``list_models()``.

Names are ``dinov3_*`` (DINOv3 backbones) and ``vggt_*`` (VGGT). Parameter counts are computed on
the meta device (no memory, milliseconds), so the table cannot drift from the code.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import torch

from edgescene.models.dinov3 import DINOV3_PRESETS, DinoVisionTransformer
from edgescene.models.vggt.config import VGGT_PRESETS
from edgescene.models.vggt.model import VGGT
from edgescene.models.vggt.token_merge import FastAttention, set_fast_attention

_DINOV3_WEIGHTS = "gated: request at ai.meta.com/dinov3 (official .pth) or accept on Hugging Face facebook/dinov3-*"
_WEIGHTS = {
    "dinov3_vits16": _DINOV3_WEIGHTS,
    "dinov3_vits16plus": _DINOV3_WEIGHTS,
    "dinov3_vitb16": _DINOV3_WEIGHTS,
    "dinov3_vitl16": _DINOV3_WEIGHTS,
    "dinov3_vitl16_sat493m": _DINOV3_WEIGHTS + " (satellite, SAT-493M)",
    "dinov3_vitl16plus": _DINOV3_WEIGHTS,
    "dinov3_vith16plus": _DINOV3_WEIGHTS,
    "dinov3_vit7b16": _DINOV3_WEIGHTS,
    "dinov3_vit7b16_sat493m": _DINOV3_WEIGHTS + " (satellite, SAT-493M)",
    "vggt_1b": "hub facebook/VGGT-1B (non-commercial licence) or facebook/VGGT-1B-Commercial (gated)",
    "vggt_small": "bundled: edgescene/assets/models/vggt_small_synthetic (ONNX, trained on synthetic scenes)",
    "vggt_small_motion": "train it: edgescene train vggt --preset vggt_small_motion (grows from vggt_small weights)",
}


@dataclass(frozen=True)
class ModelSpec:
    """A registered preset."""

    name: str
    family: Literal["dinov3", "vggt"]
    patch_size: int
    embed_dim: int
    depth: int
    weights: str

    @property
    def num_parameters(self) -> int:
        return _count_parameters(self.name)


def _specs() -> dict[str, ModelSpec]:
    specs = {}
    for name, c in DINOV3_PRESETS.items():
        specs[name] = ModelSpec(
            name, "dinov3", c.patch_size, c.embed_dim, c.depth, _WEIGHTS.get(name, "none (random init, tests)")
        )
    for name, vc in VGGT_PRESETS.items():
        specs[name] = ModelSpec(
            name, "vggt", vc.patch_size, vc.embed_dim, vc.depth, _WEIGHTS.get(name, "none (random init, tests)")
        )
    return specs


MODELS: dict[str, ModelSpec] = _specs()


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Valid names: {', '.join(MODELS)}")
    return MODELS[name]


def _build(name: str) -> VGGT | DinoVisionTransformer:
    spec = get_spec(name)
    if spec.family == "dinov3":
        return DinoVisionTransformer(DINOV3_PRESETS[name])
    return VGGT(VGGT_PRESETS[name])


@cache
def _count_parameters(name: str) -> int:
    with torch.device("meta"):
        model = _build(name)
    return sum(p.numel() for p in model.parameters())


def list_models() -> list[ModelSpec]:
    return list(MODELS.values())


def create_model(
    name: str, weights: str | Path | None = None, fast_attention: bool | FastAttention = False
) -> VGGT | DinoVisionTransformer:
    """Build preset ``name``; with ``weights`` (a file, or for VGGT a Hub repo id) load them strictly.

    Without weights the model is randomly initialised and in training mode; with weights it is in
    eval mode and the checkpoint must match the preset key for key. ``fast_attention`` (VGGT only):
    token merging in the global attention (:mod:`edgescene.models.vggt.token_merge`); exact by default.
    """
    spec = get_spec(name)
    if fast_attention and spec.family != "vggt":
        raise ValueError(f"fast_attention applies to VGGT presets, not {name} ({spec.family})")
    if weights is None:
        model = _build(name)
    elif spec.family == "dinov3":
        from edgescene.models.weights.dinov3 import load_dinov3

        return load_dinov3(weights, preset=name)
    else:
        from edgescene.models.weights.vggt import load_vggt

        model = load_vggt(weights, preset=name)
    if spec.family == "vggt":
        set_fast_attention(model, fast_attention)
    return model
