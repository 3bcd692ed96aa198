"""The models a service or app offers: the bundled default VGGT artifact, the artifact folders in a
models directory, and VGGT models the operator names (``serve --vggt NAME=SOURCE``): a Hub id such
as facebook/VGGT-1B or a checkpoint file, run by the PyTorch backend (CUDA when present), or a
model on a Triton Inference Server (``triton://host:port/model``), where only the model call is
remote. Clients name a model; they never pass a path or an address.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgescene.assets import DEFAULT_MODEL, default_model_dir
from edgescene.core.artifact import ArtifactError, read_artifact
from edgescene.core.preprocess import TARGET_SIZE, choose_model_size
from edgescene.runtime.backends.triton import is_triton_url, parse_triton_url
from edgescene.runtime.outputs import redact_paths
from edgescene.runtime.session import is_hub_id


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path | str  # what runs it: a folder, a checkpoint file, a Hub id or a triton:// address
    info: dict  # family, preset, format, precision, input size, frames, accepted, or the error


def _describe(path: Path) -> dict:
    try:
        artifact = read_artifact(path, require_accepted=False)
    except (ArtifactError, OSError, ValueError) as exc:
        return {"usable": False, "error": redact_paths(str(exc))}  # never the server's folders
    return {
        "usable": bool(artifact.accepted),
        "family": artifact.model.get("family"),
        "preset": artifact.model.get("preset"),
        "format": artifact.format,
        "precision": artifact.precision,
        "backend": artifact.backend,
        "input_size": artifact.input_size,
        "frames": artifact.frames,
        "accepted": bool(artifact.accepted),
        "created_utc": artifact.created_utc,
    }


def _describe_pytorch(source: str) -> dict:
    """A VGGT model named by the operator, described without loading it or connecting to it."""
    if is_triton_url(source):
        address = parse_triton_url(source)  # checked when the service starts
        return {"usable": True, "family": "vggt", "format": "triton", "backend": "triton", "source": str(address)}
    if is_hub_id(source):
        return {"usable": True, "family": "vggt", "format": "pytorch", "backend": "torch", "source": f"hub:{source}"}
    path = Path(source)
    if not path.is_file():
        return {"usable": False, "error": f"{path.name}: no such checkpoint file"}
    return {"usable": True, "family": "vggt", "format": "pytorch", "backend": "torch", "source": path.name}


def list_models(models_dir: Path | None, pytorch_models: dict[str, str] | None = None) -> list[ModelEntry]:
    """The bundled model first, then every sub-folder of ``models_dir`` holding an ``artifact.json``,
    then ``pytorch_models`` (name -> Hub id, checkpoint file or triton:// address)."""
    entries = [ModelEntry(DEFAULT_MODEL, default_model_dir(), {**_describe(default_model_dir()), "bundled": True})]
    if models_dir is not None and Path(models_dir).is_dir():
        for folder in sorted(Path(models_dir).iterdir()):
            if folder.name != DEFAULT_MODEL and (folder / "artifact.json").is_file():
                entries.append(ModelEntry(folder.name, folder, {**_describe(folder), "bundled": False}))
    for name, source in (pytorch_models or {}).items():
        ref: Path | str = source if is_triton_url(source) else Path(source)  # Path() would fold "//"
        entries.append(ModelEntry(name, ref, {**_describe_pytorch(source), "bundled": False}))
    return entries


def find_model(
    models_dir: Path | None, name: str | None, family: str = "vggt", pytorch_models: dict[str, str] | None = None
) -> ModelEntry:
    """The usable ``family`` model called ``name`` (None: the bundled default); ValueError naming the choices."""
    listed = list_models(models_dir, pytorch_models)
    entries = [e for e in listed if e.info.get("usable") and e.info.get("family") == family]
    name = name or DEFAULT_MODEL
    for entry in entries:
        if entry.name == name:
            return entry
    choices = f"available {family} models: {', '.join(e.name for e in entries)}"
    for entry in listed:
        if entry.name != name:
            continue
        if not entry.info.get("usable"):
            why = entry.info.get("error") or "its artifact did not pass its parity gate (accepted: false)"
            raise ValueError(f"model {name!r} is listed but not usable ({why}); {choices}")
        raise ValueError(f"model {name!r} is a {entry.info.get('family')} model, not a {family} one; {choices}")
    raise ValueError(f"unknown model {name!r}; {choices}")


DEFAULT_WINDOW = 8  # keyframes a model call, where the model serves that many


def default_window(frames: dict | None) -> int:
    """The window a job or the web app uses when none is asked for: :data:`DEFAULT_WINDOW`, or the most
    the model serves per call where that is fewer (``frames``: an artifact's ``{"min", "max"}``)."""
    if not frames:
        return DEFAULT_WINDOW
    return max(2, min(DEFAULT_WINDOW, int(frames["max"])))


def frame_size_check(entry: ModelEntry, mode: str = "crop") -> Callable[[int, int], None]:
    """``check(height, width)``: ValueError (naming the size and the fix) for a frame ``entry``'s model
    cannot take, decided as a run decides it (upstream's size rule at the model's scale, onto the sizes
    it serves) from the artifact's metadata alone, without loading the model: what a service checks
    at submission. Models named by Hub id, checkpoint or Triton address take any size (upstream's
    rule at 518)."""
    served, long_side, patch = None, TARGET_SIZE, None
    if isinstance(entry.path, Path) and entry.path.is_dir():
        artifact = read_artifact(entry.path, require_accepted=False)
        served = artifact.served_sizes()
        long_side = max(int(artifact.input_size["height"]), int(artifact.input_size["width"]))
        patch = artifact.any_size_multiple

    def check(height: int, width: int) -> None:
        choose_model_size(height, width, mode, served, long_side, patch)  # type: ignore[arg-type]

    return check


__all__ = ["ModelEntry", "find_model", "frame_size_check", "list_models"]
