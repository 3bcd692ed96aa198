"""VGGT training: config, multi-view data, ground-truth normalisation, losses and the loop.

``python -m edgescene.train.vggt.cli --help`` (or ``torchrun ... -m edgescene.train.vggt.cli``);
from Python: ``train(VGGTTrainConfig(dataset_dir=..., out_dir=...))``. Follows facebookresearch/vggt
``training/`` (loss.py, train_utils/normalization.py, data loaders, trainer.py).
"""

from edgescene.train.vggt.config import VGGTTrainConfig

__all__ = ["VGGTTrainConfig", "train"]


def __getattr__(name: str):
    if name == "train":
        from edgescene.train.vggt.trainer import train

        return train
    raise AttributeError(name)
