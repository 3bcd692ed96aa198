"""One way to turn what a user names into a model: a preset (random weights, or ``weights``), a
checkpoint file (family and preset detected from its keys) or a VGGT Hub id. Used by the exporter
and by the runtime's PyTorch backend. A preset's random weights are seeded (``RANDOM_INIT_SEED``),
so a random-init export or benchmark is the same model every run, whatever ran before it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from edgescene.models.dinov3 import DinoVisionTransformer
from edgescene.models.registry import MODELS, create_model, get_spec
from edgescene.models.vggt.model import VGGT
from edgescene.models.weights.common import sha256_of

RANDOM_INIT_SEED = 0


@dataclass
class LoadedModel:
    module: VGGT | DinoVisionTransformer  # VGGT for family "vggt", DinoVisionTransformer for "dinov3"
    family: str
    preset: str
    source: str  # checkpoint path, "hub:<id>" or "random-init"
    sha256: str | None  # of the checkpoint file, when there is one


def load_model(model: str | Path, weights: str | Path | None = None) -> LoadedModel:
    """The model named by ``model`` (preset, checkpoint file or Hub id), in eval mode."""
    from edgescene.models.weights.dinov3 import load_dinov3
    from edgescene.models.weights.inspect import inspect_checkpoint
    from edgescene.models.weights.vggt import load_vggt

    name, path = str(model), Path(model)
    if name in MODELS:
        sha = sha256_of(Path(weights)) if weights is not None and Path(weights).is_file() else None
        if weights is None:  # random init, seeded: the same preset gives the same weights every run
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_INIT_SEED)
                module = create_model(name)
        else:
            module = create_model(name, weights=weights)
        return LoadedModel(module.eval(), MODELS[name].family, name, str(weights) if weights else "random-init", sha)
    if weights is not None:
        raise ValueError(
            "weights= goes with a preset name (--weights on the CLI); with a checkpoint file as the model leave it out"
        )
    if path.is_file():
        report = inspect_checkpoint(path)
        loader = load_vggt if report["family"] == "vggt" else load_dinov3
        return LoadedModel(
            loader(path, preset=report["preset"]), report["family"], report["preset"], str(path), sha256_of(path)
        )
    if "/" in name and not path.exists():  # a Hub id
        return LoadedModel(load_vggt(name), "vggt", "vggt_1b", f"hub:{name}", None)
    get_spec(name)  # raises: unknown name, with close matches and the valid ones
    raise ValueError(f"{name!r} is neither a preset, a checkpoint file nor a Hub id")
