"""Lean runtime: numpy + onnxruntime / TensorRT, never torch and never ``edgescene.models``.

Today: the geometry used by every stage (:mod:`.geometry`), artifact metadata (:mod:`.artifact`)
and sessions built from an exported artifact folder (:mod:`.session`). Video input, streaming
reconstruction and outputs arrive with the runtime issue.
"""
