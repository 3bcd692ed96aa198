"""Export of checkpoints to ONNX / TensorRT artifacts, each accepted only through a parity gate.

Built in the export issue; this package is empty until then and the CLI exposes no export command yet.
"""
