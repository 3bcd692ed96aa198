"""Inference sessions: one small interface, the backend chosen by what is opened.

``open_session(model, device="auto", **options)`` returns a :class:`Session`; callers pass numpy
arrays by input name and get numpy arrays by output name::

    session = open_session("exports/vggt_onnx")            # artifact folder: backend from artifact.json
    out = session({"images": images})                       # images (S, 3, H, W) float32 in [0, 1]
    out["depth"].shape                                      # (S, H, W)

==============================================  =====================================================
``model``                                       backend (:mod:`edgescene.runtime.backends`)
==============================================  =====================================================
artifact folder, backend onnxruntime/triton     onnxruntime (CPU, CUDA or TensorRT execution provider)
artifact folder, backend tensorrt               native TensorRT (tensorrt + cuda-python)
``.pt`` / ``.pth`` / ``.safetensors`` file      torch (imports torch and edgescene.models, only then)
preset name (``vggt_tiny``, ``dinov3_vitl16``)  torch, random weights unless ``weights=``
Hub id (``facebook/VGGT-1B``)                   torch: the Hugging Face cache, or a download when online
``triton://host:port/model[?protocol=grpc]``    triton: a Triton Inference Server runs the model call
==============================================  =====================================================

``device``: "auto" (the best available), "cpu", "cuda" or "tensorrt" (onnxruntime's TensorRT EP
for ONNX artifacts; the engine itself for TensorRT artifacts). ``options`` go to the backend and are
checked against what it accepts. This module imports neither torch nor :mod:`edgescene.models`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from edgescene.core.artifact import ARTIFACT_JSON, Artifact, ArtifactError, TensorSpec, read_artifact
from edgescene.runtime.backends import BACKENDS, DEVICES, backend_class, backend_options
from edgescene.runtime.backends.onnxruntime import OnnxRuntimeSession
from edgescene.runtime.backends.triton import is_triton_url

Device = Literal["auto", "cpu", "cuda", "tensorrt"]

# artifact.json "backend" -> session backend
ARTIFACT_BACKENDS: dict[str, str] = {"onnxruntime": "onnxruntime", "triton": "onnxruntime", "tensorrt": "tensorrt"}
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")
PRESET_PREFIXES = ("vggt_", "dinov3_")  # the registry's families; the torch backend checks the exact name
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, e.g. facebook/VGGT-1B
ACCEPTED = (
    f"an artifact folder written by `edgescene export` (with {ARTIFACT_JSON}), a PyTorch checkpoint "
    f"({', '.join(CHECKPOINT_SUFFIXES)}), a VGGT Hub id (facebook/VGGT-1B), a Triton model "
    "(triton://host:port/model) or a model preset name "
    f"({'*, '.join(PRESET_PREFIXES)}*)"
)


def is_hub_id(name: str) -> bool:
    """``owner/name`` that is not an existing path (a Hugging Face Hub repository id)."""
    return bool(HUB_ID.match(name)) and not Path(name).exists()


class Session(Protocol):
    """Numpy in, numpy out, by tensor name; ``artifact`` describes the IO and the model."""

    artifact: Artifact
    backend: str  # onnxruntime | tensorrt | torch | triton
    device: str  # cpu | cuda | tensorrt | remote (triton)

    def input_spec(self) -> list[TensorSpec]: ...

    def output_spec(self) -> list[TensorSpec]: ...

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def _resolve(model: str | Path) -> tuple[str, Path | str, Artifact | None]:
    """(backend name, source, artifact) for what ``open_session`` was given."""
    if is_triton_url(model):
        return "triton", str(model), None  # the session reads the model's description from the server
    path = Path(model)
    if path.is_file() and path.name == ARTIFACT_JSON:
        path = path.parent
    if path.is_dir():
        artifact = read_artifact(path)  # ArtifactError: no artifact.json, invalid, rejected, incomplete
        if artifact.backend not in ARTIFACT_BACKENDS:
            raise ArtifactError(
                f"{path}: backend {artifact.backend!r} has no runtime here; known: {', '.join(ARTIFACT_BACKENDS)}"
            )
        return ARTIFACT_BACKENDS[artifact.backend], path, artifact
    if path.suffix in CHECKPOINT_SUFFIXES:
        if not path.is_file():
            raise ArtifactError(f"checkpoint {path} does not exist")
        return "torch", path, None
    name = str(model)
    if name.startswith(PRESET_PREFIXES) and not path.exists() and "/" not in name:
        return "torch", name, None
    if is_hub_id(name):
        return "torch", name, None
    what = "a file of another kind" if path.exists() else "neither an existing path nor a preset name"
    raise ArtifactError(f"cannot open {str(model)!r} ({what}); open_session takes {ACCEPTED}")


def open_session(model: str | Path, device: Device = "auto", *, fast_attention: bool = False, **options) -> Session:
    """A session for ``model`` (artifact folder, checkpoint file or preset name) on ``device``.

    ``fast_attention``: VGGT's global attention with token merging (training-free, not exact). The
    PyTorch backend turns it on; an exported model must have been exported with it (it is part of
    the graph, ``artifact.model["fast_attention"]``), else ArtifactError says to re-export.

    Raises ArtifactError for anything else (and for missing, foreign or rejected artifacts),
    ValueError for a device or option the backend does not take, ImportError / RuntimeError with an
    install hint when the backend's libraries or hardware are missing here.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    backend, source, artifact = _resolve(model)
    if backend == "torch":
        if fast_attention:
            options["fast_attention"] = True
    elif fast_attention and artifact is not None:
        _require_fast_attention(artifact, model)
    if artifact is not None and artifact.files.get("sizes"):
        from edgescene.runtime.multisize import MultiSizeSession

        return MultiSizeSession(source, artifact, lambda folder: open_session(folder, device, **options))
    try:
        cls = backend_class(backend)
    except ImportError as exc:
        if backend == "torch":
            raise ImportError(
                f"opening {str(model)!r} needs PyTorch (the torch backend): "
                f"pip install 'edgescene[torch]'; or open an exported artifact folder ({exc})"
            ) from exc
        raise
    accepted = backend_options(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"the {backend} backend does not take option(s) {unknown}; it takes {accepted}")
    session = cls(source, artifact, device, **options)
    if fast_attention and backend == "triton":  # its description came from the server
        try:
            _require_fast_attention(session.artifact, model)
        except ArtifactError:
            session.close()
            raise
    return session


def _require_fast_attention(artifact: Artifact, model: str | Path) -> None:
    if not artifact.model.get("fast_attention"):
        raise ArtifactError(
            f"{model} was exported with exact attention; fast attention is part of an exported graph: "
            "re-export with `edgescene export ... --fast-attention`, or leave --fast-attention out"
        )


__all__ = ["ARTIFACT_BACKENDS", "BACKENDS", "Device", "OnnxRuntimeSession", "Session", "open_session"]
