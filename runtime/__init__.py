"""Lean runtime: numpy + onnxruntime / TensorRT, never torch and never ``edgescene.models``.

Today it holds the geometry used by every stage (:mod:`edgescene.runtime.geometry`); sessions,
video input, streaming reconstruction and outputs arrive with the runtime issue.
"""
