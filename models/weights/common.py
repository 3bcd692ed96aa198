"""Safe checkpoint reading, file-name hash verification and strict loading with readable errors.

Users upload checkpoints, so nothing here unpickles arbitrary objects: ``.safetensors`` files are
read with safetensors, everything else with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

HASH_IN_NAME = re.compile(r"-([0-9a-f]{8})\.(?:pth|pt|safetensors)$")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used as given (wrong format, wrong model, corrupted)."""


class StateDictMismatchError(CheckpointError):
    """Keys or shapes of a state_dict differ from the model's; the lists name every difference."""

    def __init__(self, what: str, missing: list[str], unexpected: list[str], shape_mismatches: list[str]) -> None:
        self.missing, self.unexpected, self.shape_mismatches = missing, unexpected, shape_mismatches

        def show(items: list[str]) -> str:
            head = ", ".join(items[:20])
            return head + (f", ... ({len(items) - 20} more)" if len(items) > 20 else "")

        parts = [f"{what} does not match the model key for key:"]
        if missing:
            parts.append(f"  missing keys ({len(missing)}): {show(missing)}")
        if unexpected:
            parts.append(f"  unexpected keys ({len(unexpected)}): {show(unexpected)}")
        if shape_mismatches:
            parts.append(f"  shape mismatches ({len(shape_mismatches)}): {show(shape_mismatches)}")
        parts.append("  check that the file is for this preset (see `edgescene models` and `edgescene inspect FILE`).")
        super().__init__("\n".join(parts))


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_name_hash(path: str | Path) -> str | None:
    """If the file name ends in ``-XXXXXXXX.pth`` (torch.hub convention: first 8 hex digits of the
    file's SHA-256, as DINOv3's released files), check it. Returns the verified prefix, or None when
    the name carries no hash. Raises CheckpointError on a mismatch.
    """
    path = Path(path)
    match = HASH_IN_NAME.search(path.name)
    if match is None:
        return None
    expected = match.group(1)
    actual = sha256_of(path)[: len(expected)]
    if actual != expected:
        raise CheckpointError(
            f"{path.name}: SHA-256 starts with {actual}, but the file name says {expected}. The file is "
            "corrupted or incomplete (re-download it), or it was renamed to a released name it is not "
            "(rename it without the -XXXXXXXX suffix to skip this check)."
        )
    return expected


def read_checkpoint(path: str | Path) -> Mapping:
    """Read a checkpoint file into a (possibly nested) mapping of tensors, safely."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        try:  # memory-mapped: a 5 GB checkpoint is not copied into RAM twice
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as exc:
        text = str(exc)
        if "Unsupported global" in text or "Unsupported class" in text:  # a pickle of objects, not only tensors
            raise CheckpointError(
                f"{path}: the file contains Python objects beyond tensors, and loading it would run "
                "arbitrary code, so it is refused. Re-save only the state_dict "
                "(torch.save(model.state_dict(), path)) or convert it to .safetensors."
            ) from exc
        if "Weights only load failed" in text:  # the unpickler met bytes that are no pickle at all
            raise CheckpointError(
                f"{path}: not a PyTorch checkpoint (its bytes are neither a torch.save archive nor a pickle of "
                "tensors: a damaged download, or another format); download it again, or pass a .pth / "
                ".safetensors state_dict"
            ) from exc
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({text.splitlines()[0]})") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: expected a state_dict (a mapping of names to tensors), got {type(obj).__name__}"
        )
    return obj


def strip_prefixes(state_dict: Mapping[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Remove any of ``prefixes`` (repeatedly, in any order) from the start of every key."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def compare_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, shape mismatches) of ``state_dict`` against ``model.state_dict()``."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    return missing, unexpected, shapes


_ModuleT = TypeVar("_ModuleT", bound=nn.Module)


def build_and_load(
    factory: Callable[[], _ModuleT], state_dict: Mapping[str, torch.Tensor], what: str = "checkpoint"
) -> _ModuleT:
    """Build ``factory()`` on the meta device and assign the checkpoint's tensors to it, strictly.

    No random initialisation and no second copy of the weights (a memory-mapped file stays mapped):
    the way to load billion-parameter models on small machines. Values are cast to the dtypes the
    model declares (float32 for every preset).
    """
    with torch.device("meta"):
        model = factory()
    missing, unexpected, shapes = compare_state_dict(model, state_dict)
    if missing or unexpected or shapes:
        raise StateDictMismatchError(what, missing, unexpected, shapes)
    expected = model.state_dict()
    cast = {k: v.to(expected[k].dtype) for k, v in state_dict.items()}
    model.load_state_dict(cast, strict=True, assign=True)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise RuntimeError(f"{what}: tensors not covered by the checkpoint remained unallocated: {leftover[:10]}")
    return model
