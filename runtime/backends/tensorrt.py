"""Native TensorRT backend: an artifact's ``model.engine`` served by the one TensorRT runner.

The engine runs through :class:`edgescene.trt.runner.TensorRTRunner` (tensorrt + cuda-python, no
torch), the same runner the exporter's parity gate accepted it through. This session adds what
every backend does: the artifact's IO checked against the engine's, feeds checked against the
artifact (names, dtypes, frame range), outputs in the artifact's order and dtypes. An engine built
for another GPU architecture or TensorRT version is refused before it is deserialized.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgescene.core.artifact import Artifact, read_artifact
from edgescene.runtime.backends import BaseSession, check_device, check_feeds
from edgescene.trt.runner import REBUILD, TensorRTRunner


class TensorRTSession(BaseSession):
    """A TensorRT artifact folder (``model.engine``). Options: ``device_id`` (default 0)."""

    backend = "tensorrt"

    def __init__(
        self, folder: str | Path, artifact: Artifact | None = None, device: str = "auto", *, device_id: int = 0
    ) -> None:
        check_device(
            device,
            ("auto", "cuda", "tensorrt"),
            "tensorrt",
            ": a TensorRT engine runs on an NVIDIA GPU only; for the CPU export an ONNX format",
        )
        folder = Path(folder)
        self.artifact = artifact if artifact is not None else read_artifact(folder)
        self.device = "cuda"
        engine_file = self.artifact.files.get("engine")
        if not engine_file:
            raise ValueError(f"{folder}: artifact.json names no engine file (files: {self.artifact.files})")
        self._runner: TensorRTRunner | None = TensorRTRunner(folder / engine_file, self.artifact.device, device_id)
        self.here = self._runner.here
        expected = ([t.name for t in self.artifact.inputs], [t.name for t in self.artifact.outputs])
        got = (self._runner.inputs, self._runner.outputs)
        if tuple(sorted(g) for g in got) != tuple(sorted(e) for e in expected):
            self.close()
            raise RuntimeError(
                f"the engine's IO {got[0]} -> {got[1]} differs from artifact.json's {expected[0]} -> {expected[1]}: "
                f"{REBUILD}"
            )
        self._dtypes = {t.name: np.dtype(t.dtype) for t in self.artifact.outputs}

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._runner is None:
            raise RuntimeError("this session is closed")
        prepared, _ = check_feeds(self.artifact, feeds)
        out = self._runner(prepared)
        return {t.name: out[t.name].astype(self._dtypes[t.name], copy=False) for t in self.artifact.outputs}

    def close(self) -> None:
        """Free the engine's device and pinned buffers and its stream."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None


__all__ = ["TensorRTSession"]
