"""Loading VGGT checkpoints from a file or from the Hugging Face Hub.

Accepted: the official ``model.pt`` / ``model.safetensors`` of ``facebook/VGGT-1B`` (and the gated
``facebook/VGGT-1B-Commercial``), whose keys are exactly the module keys, and training checkpoints
wrapping such a state_dict (``{"model": ...}``, ``{"state_dict": ...}``, ``module.`` prefixes).
Files without the track (or point) head load into a model built without it.

Hub downloads go through ``huggingface_hub``; a cached file is used without any network access,
and when offline (``HF_HUB_OFFLINE=1`` or no route to the Hub) the error is immediate and says how
to proceed, instead of huggingface_hub's ~25 s of retries.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TypedDict
from urllib.parse import urlparse

import torch

from edgescene.models.vggt.config import VGGT_PRESETS, VGGTConfig
from edgescene.models.vggt.model import VGGT
from edgescene.models.vggt.token_merge import FastAttention, set_fast_attention
from edgescene.models.weights.common import (
    CheckpointError,
    StateDictMismatchError,
    build_and_load,
    compare_state_dict,
    read_checkpoint,
    strip_prefixes,
)

DEFAULT_HUB_REPO = "facebook/VGGT-1B"
HUB_FILENAMES = ("model.safetensors", "model.pt")


class HubUnavailableError(RuntimeError):
    """The checkpoint must come from the Hugging Face Hub and cannot (offline, gated, missing).

    ``reason`` says why in words every surface can use (no command-line advice): the message adds the
    command line's fix; an app phrases its own from ``reason``."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


def unwrap_vggt_checkpoint(obj: Mapping) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    return {k: v for k, v in strip_prefixes(obj, ("module.", "_orig_mod.")).items() if isinstance(v, torch.Tensor)}


class _HeadFlags(TypedDict):
    """Which heads a checkpoint holds (the ``enable_*`` fields of :class:`VGGTConfig`)."""

    enable_camera: bool
    enable_depth: bool
    enable_point: bool
    enable_track: bool


def config_for_state_dict(state_dict: Mapping[str, torch.Tensor], preset: str | None = None) -> tuple[str, VGGTConfig]:
    """Pick the preset whose key set and shapes match (heads absent from the file are disabled)."""

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix + ".") for k in state_dict)

    flags = _HeadFlags(
        enable_camera=has("camera_head"),
        enable_depth=has("depth_head"),
        enable_point=has("point_head"),
        enable_track=has("track_head"),
    )
    candidates = [preset] if preset else list(VGGT_PRESETS)
    first_error: StateDictMismatchError | None = None
    for name in candidates:
        if name not in VGGT_PRESETS:
            raise ValueError(f"unknown VGGT preset {name!r}; valid: {sorted(VGGT_PRESETS)}")
        config = replace(VGGT_PRESETS[name], **flags)
        with torch.device("meta"):
            model = VGGT(config)
        missing, unexpected, shapes = compare_state_dict(model, state_dict)
        if not (missing or unexpected or shapes):
            return name, config
        first_error = first_error or StateDictMismatchError(
            f"VGGT checkpoint vs preset {name}", missing, unexpected, shapes
        )
    if first_error is None:
        raise CheckpointError("no VGGT preset to compare with")
    raise first_error


def _hub_host() -> str:
    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    try:
        socket.create_connection((_hub_host(), 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def download_from_hub(
    repo_id: str = DEFAULT_HUB_REPO, filename: str | None = None, revision: str | None = None
) -> Path:
    """Path of a VGGT checkpoint from the Hub cache, downloading it when online."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError
    except ImportError as exc:
        raise HubUnavailableError("loading from the Hub needs huggingface_hub: pip install 'edgescene[torch]'") from exc
    names = (filename,) if filename else HUB_FILENAMES
    for name in names:  # the cache first: no network at all
        try:
            return Path(hf_hub_download(repo_id, name, revision=revision, local_files_only=True))
        except Exception:  # noqa: BLE001 - any cache miss
            continue
    hint = (
        f"Fetch it once where there is network (`edgescene download --repo-id {repo_id} --target-dir weights/`, "
        f"or `hf download {repo_id} {names[0]}`) and pass the file: `--model weights/{names[0]}`."
    )
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        reason = f"{repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
        raise HubUnavailableError(f"{reason}. {hint}", reason)
    if not _hub_reachable():
        reason = f"{repo_id} is not cached and {_hub_host()} cannot be reached (offline?)"
        raise HubUnavailableError(f"{reason}. {hint}", reason)
    last_error: Exception | None = None
    for name in names:
        try:
            return Path(hf_hub_download(repo_id, name, revision=revision))
        except GatedRepoError as exc:
            raise HubUnavailableError(
                f"{repo_id} is gated: accept its licence on https://huggingface.co/{repo_id} and log in "
                "(`huggingface-cli login` or HF_TOKEN), then retry."
            ) from exc
        except RepositoryNotFoundError as exc:
            raise HubUnavailableError(f"no Hub repository {repo_id!r} (or it is private): check the id") from exc
        except EntryNotFoundError as exc:
            last_error = exc
    raise HubUnavailableError(f"{repo_id} has none of {list(names)}; name the file with `filename=`") from last_error


def load_vggt(
    source: str | Path = DEFAULT_HUB_REPO,
    preset: str | None = None,
    filename: str | None = None,
    revision: str | None = None,
    fast_attention: bool | FastAttention = False,
) -> VGGT:
    """Load VGGT from a checkpoint path or a Hub repo id (``facebook/VGGT-1B``), strictly. Eval mode.

    ``fast_attention``: token merging in the global attention (True: the defaults, or a
    :class:`~edgescene.models.vggt.token_merge.FastAttention`); exact, upstream's numbers, by default."""
    path = Path(source)
    if not path.exists():
        if path.suffix in (".pt", ".pth", ".safetensors") or str(source).startswith((".", "/")):
            raise FileNotFoundError(f"VGGT checkpoint not found: {source}")
        path = download_from_hub(str(source), filename, revision)
    state_dict = unwrap_vggt_checkpoint(read_checkpoint(path))
    name, config = config_for_state_dict(state_dict, preset)
    model = build_and_load(lambda: VGGT(config), state_dict, what=f"{path.name} (preset {name})")
    set_fast_attention(model, fast_attention)
    return model.eval()
