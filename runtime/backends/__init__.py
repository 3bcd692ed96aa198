"""Session backends, one module each, imported only when chosen.

==============  ===============================  ======================================================
backend         module                           runs
==============  ===============================  ======================================================
onnxruntime     :mod:`.onnxruntime`              ONNX / Triton artifacts on the CPU, CUDA or TensorRT EP
tensorrt        :mod:`.tensorrt`                 TensorRT artifacts (``model.engine``), tensorrt + cuda-python
triton          :mod:`.triton`                   ``triton://host:port/model``: a Triton Inference Server
                                                 (tritonclient, HTTP or gRPC); only the model call is remote
torch           plugin ``edgescene.plugins``     PyTorch checkpoints, Hub ids and presets (the reference;
                ``.torch_session``               imports torch, so it lives outside the runtime core)
==============  ===============================  ======================================================

More backends come from the ``edgescene.backends`` entry-point group (``name = "module:Class"``).
This package imports numpy and :mod:`edgescene.core.artifact` only. It also holds what every
backend shares: the feed check against the artifact's specs (:func:`check_feeds`) and the output
shapes those specs imply (:func:`output_shapes`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping

import numpy as np

from edgescene.core.artifact import Artifact, TensorSpec

# backend name -> "module:class"; the module is imported on first use.
BACKENDS: dict[str, str] = {
    "onnxruntime": "edgescene.runtime.backends.onnxruntime:OnnxRuntimeSession",
    "tensorrt": "edgescene.runtime.backends.tensorrt:TensorRTSession",
    "triton": "edgescene.runtime.backends.triton:TritonSession",
    "torch": "edgescene.plugins.torch_session:TorchSession",  # a plugin: imports torch, outside the core
}

DEVICES = ("auto", "cpu", "cuda", "tensorrt")


def _registered() -> dict[str, str]:
    """Built-in backends, then those installed packages declare (entry-point group ``edgescene.backends``)."""
    from importlib.metadata import entry_points

    found = dict(BACKENDS)
    for point in entry_points(group="edgescene.backends"):
        found.setdefault(point.name, point.value)
    return found


def backend_class(name: str) -> type:
    """The session class of backend ``name`` (imports its module, and only then)."""
    registered = BACKENDS if name in BACKENDS else _registered()
    if name not in registered:
        raise ValueError(f"unknown backend {name!r}; valid: {', '.join(registered)}")
    module, _, cls = registered[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def backend_options(cls: type[object]) -> list[str]:
    """The keyword-only options a session class accepts (its constructor's keyword-only parameters)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def check_device(device: str, accepted: tuple[str, ...], backend: str, why: str = "") -> None:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device not in accepted:
        raise ValueError(f"the {backend} backend runs on {'/'.join(accepted)}, not device={device!r}{why}")


class BaseSession:
    """What every backend shares: specs from the artifact, ``close()``, use as a context manager."""

    artifact: Artifact
    backend: str
    device: str

    def input_spec(self) -> list[TensorSpec]:
        return self.artifact.inputs

    def output_spec(self) -> list[TensorSpec]:
        return self.artifact.outputs

    def close(self) -> None:
        """Release what the backend holds; the session cannot run afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        model = self.artifact.model
        return (
            f"{type(self).__name__}({model.get('preset')}, {self.artifact.format} {self.artifact.precision}, "
            f"backend={self.backend}, device={self.device})"
        )


def check_feeds(artifact: Artifact, feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Validate ``feeds`` against ``artifact.inputs``: exact names, dtype kind, rank, fixed dims, and the
    dynamic (frame / batch) axis within ``artifact.frames`` min..max.

    Returns the feeds as C-contiguous arrays of the spec dtype (a float64 array becomes float32; an
    integer array for a float input is refused, since images are floats in [0, 1]) and the size of
    every named axis (``{"frames": 3}``).
    """
    expected = {t.name: t for t in artifact.inputs}
    if set(feeds) != set(expected):
        unknown, missing = sorted(set(feeds) - set(expected)), sorted(set(expected) - set(feeds))
        detail = "; ".join(
            part for part in (f"unknown {unknown}" if unknown else "", f"missing {missing}" if missing else "") if part
        )
        raise ValueError(f"inputs must be exactly {sorted(expected)}, got {sorted(feeds)} ({detail})")
    lo, hi = artifact.frames.get("min", 1), artifact.frames.get("max")
    prepared: dict[str, np.ndarray] = {}
    axes: dict[str, int] = {}
    for spec in artifact.inputs:
        value = np.asarray(feeds[spec.name])
        want = np.dtype(spec.dtype)
        if value.dtype != want and value.dtype.kind != want.kind:
            raise ValueError(
                f"input {spec.name!r} must be {want} ({spec.description or 'see input_spec()'}), got {value.dtype}"
            )
        if value.ndim != len(spec.shape) or any(
            isinstance(d, int) and d != s for d, s in zip(spec.shape, value.shape, strict=True)
        ):
            raise ValueError(
                f"input {spec.name!r} must have shape {spec.shape}, got {list(value.shape)} "
                f"(input sizes served: {artifact.describe_sizes()})"
            )
        for d, s in zip(spec.shape, value.shape, strict=True):
            if not isinstance(d, str):
                continue
            if axes.setdefault(d, s) != s:
                raise ValueError(f"axis {d!r} is {axes[d]} in one input and {s} in {spec.name!r}; it must agree")
            if d in IMAGE_AXES:
                continue
            if s < lo or (hi is not None and s > hi):
                raise ValueError(
                    f"input {spec.name!r}: the {d!r} axis is {s}, outside this artifact's range "
                    f"{lo}..{hi} (its frames min..max; an export takes --frames-range MIN:OPT:MAX)"
                )
        prepared[spec.name] = np.ascontiguousarray(value, dtype=want)
    if "height" in axes or "width" in axes:
        _check_size(artifact, axes.get("height"), axes.get("width"))
    return prepared, axes


IMAGE_AXES = ("height", "width")  # named image axes: checked against the served sizes, not the frame range


def _check_size(artifact: Artifact, height: int | None, width: int | None) -> None:
    multiple = artifact.any_size_multiple
    served = artifact.served_sizes()
    if multiple:
        for axis, value in (("height", height), ("width", width)):
            if value is not None and (value < multiple or value % multiple):
                raise ValueError(f"images {axis} {value} must be a positive multiple of the patch size {multiple}")
    elif served is not None and (height, width) not in served:
        raise ValueError(f"images are {height}x{width}; this artifact serves {artifact.describe_sizes()}")


def output_shapes(artifact: Artifact, axes: Mapping[str, int]) -> dict[str, tuple[int, ...] | None]:
    """Concrete output shapes for the named axis sizes ``axes``; None where an axis is not known."""
    shapes: dict[str, tuple[int, ...] | None] = {}
    for spec in artifact.outputs:
        dims = [axes.get(d) if isinstance(d, str) else int(d) for d in spec.shape]
        known = [d for d in dims if d is not None]
        shapes[spec.name] = tuple(known) if len(known) == len(dims) else None
    return shapes


__all__ = [
    "BACKENDS",
    "DEVICES",
    "BaseSession",
    "backend_class",
    "backend_options",
    "check_device",
    "check_feeds",
    "output_shapes",
]
