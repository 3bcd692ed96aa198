"""Files shipped with the package: the sample video with its ground truth (``sample/``) and the
default VGGT model, an exported ONNX artifact with its model card (``models/``)."""

from pathlib import Path


def sample_dir() -> Path:
    """Folder holding ``sample.mp4``, ``sample_gt.npz`` and ``sample.json``."""
    return Path(__file__).resolve().parent / "sample"


DEFAULT_MODEL = "vggt_small_synthetic"


def default_model_dir() -> Path:
    """The bundled VGGT artifact folder that ``edgescene reconstruct`` uses when no --model is given."""
    return Path(__file__).resolve().parent / "models" / DEFAULT_MODEL
