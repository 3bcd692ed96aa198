"""DINOv3 self-supervised training and fine-tuning (``edgescene train dinov3``).

Follows facebookresearch/dinov3's ``dinov3/train`` (SSLMetaArch: DINO + iBOT + KoLeo, EMA teacher,
multi-crop) for ViT backbones. Modules: :mod:`.config` (the typed configuration), :mod:`.data`
(manifest images and multi-crop augmentation), :mod:`.heads`, :mod:`.losses`, :mod:`.trainer`
(the loop) and :mod:`.cli` (``python -m edgescene.train.dinov3.cli``, also under ``torchrun``).
"""

from edgescene.train.dinov3.config import DinoTrainConfig

__all__ = ["DinoTrainConfig", "train"]


def train(config: DinoTrainConfig) -> dict[str, float]:
    """Run the trainer (imported lazily so ``import edgescene.train.dinov3`` stays light)."""
    from edgescene.train.dinov3.trainer import train as _train

    return _train(config)
