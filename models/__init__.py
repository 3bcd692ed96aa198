"""PyTorch re-implementations of DINOv3 and VGGT that load the official checkpoints key for key.

Public API::

    from edgescene.models import create_model, list_models, load_dinov3, load_vggt
    backbone = load_dinov3("dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth")   # preset detected
    vggt = load_vggt("facebook/VGGT-1B")                                    # or a path to model.pt
    tiny = create_model("vggt_tiny")                                        # random weights, tests

This package imports torch only; it does no I/O beyond reading weights.
"""

from edgescene.models.dinov3 import DINOV3_PRESETS, DinoV3Config, DinoVisionTransformer, build_dinov3
from edgescene.models.registry import MODELS, ModelSpec, create_model, get_spec, list_models
from edgescene.models.vggt import VGGT, VGGT_PRESETS, VGGTConfig, build_vggt
from edgescene.models.weights.dinov3 import load_dinov3
from edgescene.models.weights.vggt import load_vggt

__all__ = [
    "DINOV3_PRESETS",
    "MODELS",
    "VGGT",
    "VGGT_PRESETS",
    "DinoV3Config",
    "DinoVisionTransformer",
    "ModelSpec",
    "VGGTConfig",
    "build_dinov3",
    "build_vggt",
    "create_model",
    "get_spec",
    "list_models",
    "load_dinov3",
    "load_vggt",
]
