"""Inference sessions over exported artifacts: one small interface, the backend chosen by metadata.

``open_session(folder)`` reads ``artifact.json`` and returns a :class:`Session`; callers pass numpy
arrays by input name and get numpy arrays by output name. The onnxruntime backend lives here; the
native TensorRT backend arrives with the streaming runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from edgescene.runtime.artifact import Artifact, ArtifactError, TensorSpec, read_artifact


class Session(Protocol):
    artifact: Artifact

    def input_spec(self) -> list[TensorSpec]: ...

    def output_spec(self) -> list[TensorSpec]: ...

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OnnxRuntimeSession:
    """onnxruntime backend. ``providers`` default: CUDA then CPU when onnxruntime-gpu is installed."""

    def __init__(self, folder: str | Path, artifact: Artifact, providers: list[str] | None = None,
                 intra_op_threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError("the onnxruntime backend needs onnxruntime: pip install 'edgescene[runtime]'") from exc
        self.artifact = artifact
        model = Path(folder) / artifact.files["model"]
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise ArtifactError(f"execution providers {unknown} are not available here; available: {available}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        self._session = ort.InferenceSession(str(model), options, providers=providers)
        self.providers = self._session.get_providers()

    def input_spec(self) -> list[TensorSpec]:
        return self.artifact.inputs

    def output_spec(self) -> list[TensorSpec]:
        return self.artifact.outputs

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        expected = {t.name: t for t in self.artifact.inputs}
        if set(feeds) != set(expected):
            raise ValueError(f"inputs must be exactly {sorted(expected)}, got {sorted(feeds)}")
        prepared = {}
        for name, value in feeds.items():
            spec = expected[name]
            value = np.ascontiguousarray(value, dtype=spec.dtype)
            if value.ndim != len(spec.shape) or any(
                isinstance(d, int) and d != s for d, s in zip(spec.shape, value.shape)
            ):
                raise ValueError(f"input {name!r} must have shape {spec.shape}, got {list(value.shape)}")
            prepared[name] = value
        names = [t.name for t in self.artifact.outputs]
        return dict(zip(names, self._session.run(names, prepared)))


def open_session(folder: str | Path, providers: list[str] | None = None) -> Session:
    """Session for an accepted artifact folder, on the backend its metadata names."""
    artifact = read_artifact(folder)
    if artifact.backend in ("onnxruntime", "triton"):
        # A Triton repository holds an ONNX model; run it locally with onnxruntime.
        return OnnxRuntimeSession(folder, artifact, providers)
    raise ArtifactError(
        f"{folder}: backend {artifact.backend!r} is not available in this runtime yet; export an ONNX format"
    )
