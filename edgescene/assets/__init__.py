"""Files shipped with the package: the sample video with its ground truth (``sample/``)."""

from pathlib import Path


def sample_dir() -> Path:
    """Folder holding ``sample.mp4``, ``sample_gt.npz`` and ``sample.json``."""
    return Path(__file__).resolve().parent / "sample"
