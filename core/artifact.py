"""Exported artifacts describe themselves: ``artifact.json`` beside the model files.

Written by ``edgescene export`` (and embedded, for ONNX files, in ``metadata_props["edgescene"]``);
read by the runtime, which never guesses shapes, normalisation or precision. Schema version 1::

    {
      "schema": "edgescene.artifact", "version": 1,
      "format": "onnx" | "onnx-fp16" | "onnx-int8" | "tensorrt" | "triton",
      "precision": "fp32" | "fp16" | "int8",
      "backend": "onnxruntime" | "tensorrt" | "triton",
      "model": {"family": "vggt" | "dinov3", "preset": ..., "source": file name, "hub:<id>" or "random-init",
                "source_sha256": ... or null, "track_head": bool},
      "files": {"model": "model.onnx", "external_data": ["model.onnx.data"], ...},
      "inputs": [TensorSpec], "outputs": [TensorSpec],     # names, shapes (ints or axis names), dtypes
      "input_size": {"height": H, "width": W},            # the default size (the gate's)
      "input_sizes": [{"height": H, "width": W}, ...],   # optional: every size served (default [input_size])
      "any_size_multiple": null | 14,                     # the PyTorch backend: any H, W multiple of this
      "frames": {"min": 1, "opt": 2, "max": 8},           # the dynamic frame (VGGT) or batch (DINOv3) axis
      "normalization": {"input_range": [0, 1], "mean": [...], "std": [...], "in_graph": true},
      "opset": 17, "exporter": "...", "versions": {"edgescene": ..., "torch": ..., ...},
      "parity": {"passed": bool, "precision": ..., "cases": [...], "thresholds": {...}},
      "accepted": bool, "created_utc": ..., "elapsed_s": ...,
      "device": {...},                                    # TensorRT: GPU name, compute capability, versions
      "quantization": {...}                               # int8 formats: schemes (weight/activation types,
                                                          # reduce_range, per_channel, QDQ/QOperator, ops),
                                                          # quantized_ops, same_on_every_cpu, gated_on, reason
    }
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgescene.core.atomic import atomic_write_text

SCHEMA = "edgescene.artifact"
VERSION = 1
ARTIFACT_JSON = "artifact.json"
BACKENDS = ("onnxruntime", "tensorrt", "triton")
# The Triton model-config parameter that carries the artifact's JSON, so a client of the server
# (``triton://host:port/model``) knows the model without the export folder.
TRITON_ARTIFACT_PARAMETER = "edgescene_artifact"


class ArtifactError(ValueError):
    """An artifact folder that cannot be used: missing or foreign metadata, missing files, rejected."""


@dataclass
class TensorSpec:
    """name, shape (ints, or strings for dynamic axes), dtype (numpy name), what it holds."""

    name: str
    shape: list[Any]
    dtype: str
    description: str = ""


@dataclass
class Artifact:
    format: str
    precision: str
    backend: str
    model: dict[str, Any]
    files: dict[str, Any]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    input_size: dict[str, int]
    frames: dict[str, int]
    normalization: dict[str, Any]
    opset: int | None = None
    exporter: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    accepted: bool = False
    created_utc: str = ""
    elapsed_s: float = 0.0
    device: dict[str, Any] = field(default_factory=dict)
    calibration: str | None = None  # static int8: what the activation ranges were observed on
    input_sizes: list[dict[str, int]] = field(default_factory=list)  # every size served; [] = [input_size]
    notes: list[str] = field(default_factory=list)  # what the export fell back on or could not check
    any_size_multiple: int | None = None  # set where any H, W multiple of this is served (PyTorch)
    quantization: dict[str, Any] = field(default_factory=dict)  # int8: schemes, ops quantized, portability

    def served_sizes(self) -> list[tuple[int, int]] | None:
        """The (H, W) input sizes this artifact serves; None when any multiple of
        :attr:`any_size_multiple` is served."""
        if self.any_size_multiple:
            return None
        sizes = [(int(s["height"]), int(s["width"])) for s in self.input_sizes]
        default = (int(self.input_size["height"]), int(self.input_size["width"]))
        return sizes if default in sizes else [default, *sizes]

    def describe_sizes(self) -> str:
        served = self.served_sizes()
        if served is None:
            return f"any H x W that are multiples of {self.any_size_multiple}"
        return ", ".join(f"{h}x{w}" for h, w in served)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "version": VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "artifact") -> Artifact:
        if data.get("schema") != SCHEMA:
            raise ArtifactError(f"{where}: not an edgescene artifact (schema {data.get('schema')!r})")
        if data.get("version") != VERSION:
            raise ArtifactError(
                f"{where}: artifact version {data.get('version')} is not supported (this edgescene reads {VERSION})"
            )
        known = {f.name for f in fields(cls)}
        body = {k: v for k, v in data.items() if k in known}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - set(body))  # fields with defaults may be absent (older artifacts)
        if missing:
            raise ArtifactError(f"{where}: metadata lacks {missing}")
        body["inputs"] = [TensorSpec(**t) for t in body["inputs"]]
        body["outputs"] = [TensorSpec(**t) for t in body["outputs"]]
        if body["backend"] not in BACKENDS:
            raise ArtifactError(f"{where}: unknown backend {body['backend']!r}; valid: {BACKENDS}")
        return cls(**body)


def portable_source(source: str | Path) -> str:
    """How an artifact names the checkpoint it came from, the same on every machine.

    ``"random-init"`` and ``"hub:<id>"`` stay as they are; a checkpoint file is named by its file name
    only (``source_sha256`` beside it identifies the file): the folder it lay in on the exporting
    machine means nothing where the artifact is used, and would leak that machine's layout.
    """
    text = str(source)
    if text == "random-init" or text.startswith("hub:"):
        return text
    return Path(text).name or text


def size_key(height: int, width: int) -> str:
    return f"{int(height)}x{int(width)}"


def parse_size(text: str) -> tuple[int, int]:
    """``"294x518"`` -> (294, 518) (H x W); ValueError naming the form otherwise."""
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or min(int(p) for p in parts) < 1:
        raise ValueError(f"a size is HEIGHTxWIDTH in pixels, e.g. 294x518; got {text!r}")
    return int(parts[0]), int(parts[1])


def with_named_image_axes(spec: TensorSpec, height: int, width: int) -> TensorSpec:
    """``spec`` with its first (height, width) pair of dims after the leading axis renamed
    ``"height"``, ``"width"``: the IO of a model that serves more than one input size."""
    shape = list(spec.shape)
    for i in range(1, len(shape) - 1):
        if shape[i] == height and shape[i + 1] == width:
            shape[i], shape[i + 1] = "height", "width"
            break
    return TensorSpec(spec.name, shape, spec.dtype, spec.description)


def write_artifact_json(artifact: Artifact, folder: str | Path) -> Path:
    """Write ``folder/artifact.json`` atomically."""
    return atomic_write_text(Path(folder) / ARTIFACT_JSON, json.dumps(artifact.to_json(), indent=1))


def read_artifact(folder: str | Path, require_accepted: bool = True) -> Artifact:
    """Read and check an artifact folder: metadata present and valid, files present, gate passed."""
    folder = Path(folder)
    path = folder / ARTIFACT_JSON if folder.is_dir() else folder
    if not path.is_file():
        raise ArtifactError(f"{folder}: no {ARTIFACT_JSON}; pass a folder written by `edgescene export`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc
    artifact = Artifact.from_json(data, str(path))
    if require_accepted and not artifact.accepted:
        raise ArtifactError(f"{path.parent}: this artifact failed its parity gate and was not accepted; re-export it")
    for key in ("model", "engine"):
        name = artifact.files.get(key)
        if name and not (path.parent / name).exists():
            raise ArtifactError(f"{path.parent}: {name} is missing (the folder is incomplete)")
    for key, sub in (artifact.files.get("sizes") or {}).items():
        if not (path.parent / sub / ARTIFACT_JSON).is_file():
            raise ArtifactError(f"{path.parent}: the {key} sub-artifact {sub}/ is missing (the folder is incomplete)")
    for name in artifact.files.get("external_data", []):
        if not (path.parent / name).exists():
            raise ArtifactError(f"{path.parent}: external weights {name} are missing (copy them with the model)")
    return artifact
