"""The bundled default model's preset and method label, read from its artifact: tests that run the
default model name it from here, so a retrained bundle changes one file, not every test."""

from __future__ import annotations

import json

from edgescene.assets import default_model_dir

BUNDLED_PRESET: str = json.loads((default_model_dir() / "artifact.json").read_text())["model"]["preset"]
BUNDLED_LABEL = f"{BUNDLED_PRESET} (onnx fp32) on onnxruntime/cpu"  # how the runtime names it in progress lines
