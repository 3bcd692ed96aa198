"""Identify a checkpoint file without building the model in memory (comparisons run on meta)."""

from __future__ import annotations

from pathlib import Path

import torch

from edgescene.models.dinov3 import DINOV3_PRESETS, DinoVisionTransformer
from edgescene.models.weights.common import StateDictMismatchError, compare_state_dict, read_checkpoint
from edgescene.models.weights.dinov3 import detect_dinov3_preset, dinov3_state_dict_from_file
from edgescene.models.weights.vggt import config_for_state_dict, unwrap_vggt_checkpoint


def _is_vggt(raw) -> bool:
    return any(k.startswith("aggregator.") for k in unwrap_vggt_checkpoint(raw))


def inspect_checkpoint(path: str | Path, preset: str | None = None) -> dict:
    """A report dict: file, size, family, form, preset, parameters, hash check, key check.

    Raises CheckpointError / StateDictMismatchError when the file cannot be loaded as any preset.
    """
    path = Path(path)
    raw = read_checkpoint(path)
    report: dict = {"file": str(path), "size_mb": round(path.stat().st_size / 2**20, 1)}
    if _is_vggt(raw):
        state_dict = unwrap_vggt_checkpoint(raw)
        name, config = config_for_state_dict(state_dict, preset)
        heads = [
            h
            for h, on in (
                ("camera", config.enable_camera),
                ("depth", config.enable_depth),
                ("point", config.enable_point),
                ("track", config.enable_track),
            )
            if on
        ]
        report.update(family="vggt", form="official or training", preset=name, heads=", ".join(heads))
    else:
        state_dict, hash_prefix, form = dinov3_state_dict_from_file(path)
        name = preset or detect_dinov3_preset(state_dict, hash_prefix)
        if name not in DINOV3_PRESETS:
            raise ValueError(f"unknown DINOv3 preset {name!r}; valid: {sorted(DINOV3_PRESETS)}")
        with torch.device("meta"):
            model = DinoVisionTransformer(DINOV3_PRESETS[name])
        missing, unexpected, shapes = compare_state_dict(model, state_dict)
        if form == "huggingface":
            missing = [k for k in missing if not k.startswith("local_cls_norm.")]
        if missing or unexpected or shapes:
            raise StateDictMismatchError(f"{path.name} vs {name}", missing, unexpected, shapes)
        report.update(
            family="dinov3",
            form=form,
            preset=name,
            hash=f"{hash_prefix} verified" if hash_prefix else "no hash in file name",
            normalisation=f"mean {DINOV3_PRESETS[name].mean} std {DINOV3_PRESETS[name].std}",
        )
    n_params = sum(v.numel() for k, v in state_dict.items() if not k.endswith(("bias_mask", "periods")))
    report.update(tensors=len(state_dict), parameters=f"{n_params:,}", keys="match the preset exactly")
    return report
