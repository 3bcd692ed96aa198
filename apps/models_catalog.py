"""The models a service or app offers: the bundled default VGGT artifact plus the artifact folders
in a models directory. Clients name a model; they never pass a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgescene.assets import DEFAULT_MODEL, default_model_dir
from edgescene.runtime.artifact import ArtifactError, read_artifact


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    info: dict  # family, preset, format, precision, input size, frames, accepted, or the error


def _describe(path: Path) -> dict:
    try:
        artifact = read_artifact(path, require_accepted=False)
    except (ArtifactError, OSError, ValueError) as exc:
        return {"usable": False, "error": str(exc)}
    return {"usable": bool(artifact.accepted), "family": artifact.model.get("family"),
            "preset": artifact.model.get("preset"), "format": artifact.format, "precision": artifact.precision,
            "backend": artifact.backend, "input_size": artifact.input_size, "frames": artifact.frames,
            "accepted": bool(artifact.accepted), "created_utc": artifact.created_utc}


def list_models(models_dir: Path | None) -> list[ModelEntry]:
    """The bundled model first, then every sub-folder of ``models_dir`` holding an ``artifact.json``."""
    entries = [ModelEntry(DEFAULT_MODEL, default_model_dir(), {**_describe(default_model_dir()), "bundled": True})]
    if models_dir is not None and Path(models_dir).is_dir():
        for folder in sorted(Path(models_dir).iterdir()):
            if folder.name != DEFAULT_MODEL and (folder / "artifact.json").is_file():
                entries.append(ModelEntry(folder.name, folder, {**_describe(folder), "bundled": False}))
    return entries


def find_model(models_dir: Path | None, name: str | None, family: str = "vggt") -> ModelEntry:
    """The usable ``family`` model called ``name`` (None: the bundled default); ValueError naming the choices."""
    entries = [e for e in list_models(models_dir) if e.info.get("usable") and e.info.get("family") == family]
    name = name or DEFAULT_MODEL
    for entry in entries:
        if entry.name == name:
            return entry
    raise ValueError(f"unknown model {name!r}; available {family} models: {', '.join(e.name for e in entries)}")


__all__ = ["ModelEntry", "find_model", "list_models"]
