"""Checkpoints a run starts from or produces: identify one, fetch VGGT from the Hub, list presets.

The trainers' public view of the model registry, for callers above the training layer (the web
app's Model setup and Train tabs), which never import :mod:`edgescene.models` themselves:

- :func:`inspect_checkpoint` loads a file safely (``weights_only`` / safetensors) and says which
  family and preset it is, checked key for key against the official layout;
- :func:`download_vggt` takes a VGGT checkpoint from the Hugging Face cache or the Hub (offline it
  fails at once with the command that fixes it);
- :func:`training_presets` and :func:`patch_size` list what a run can be configured with.

Imports torch (through :mod:`edgescene.models`) when a function runs, not on import.
"""

from __future__ import annotations

from pathlib import Path


def inspect_checkpoint(path: str | Path) -> dict:
    """Family, preset, form, parameter count and key check of a checkpoint file (ValueError if unusable)."""
    from edgescene.models.weights.inspect import inspect_checkpoint as inspect

    return inspect(Path(path))


def download_vggt(repo_id: str, filename: str | None = None) -> Path:
    """Path of a VGGT checkpoint from the Hugging Face cache, downloading it when online."""
    from edgescene.models.weights.vggt import download_from_hub

    return download_from_hub(repo_id, filename)


def training_presets(family: str) -> list[str]:
    """The presets of ``family`` ("vggt" or "dinov3") a run can start from, sorted."""
    if family == "vggt":
        from edgescene.models.vggt.config import VGGT_PRESETS as presets
    elif family == "dinov3":
        from edgescene.models.dinov3 import DINOV3_PRESETS as presets
    else:
        raise ValueError(f"family must be 'vggt' or 'dinov3', got {family!r}")
    return sorted(presets)


def patch_size(preset: str) -> int:
    """Patch size in pixels of a DINOv3 or VGGT preset."""
    from edgescene.models.registry import get_spec

    return get_spec(preset).patch_size  # ValueError with close matches for an unknown name


__all__ = ["download_vggt", "inspect_checkpoint", "patch_size", "training_presets"]
