"""Export of checkpoints to ONNX (fp32 / fp16 / int8), TensorRT engines and Triton repositories,
each accepted only through a parity gate against PyTorch.

Entry point: :func:`edgescene.export.pipeline.export_model` (the ``edgescene export`` command).
The format table is :data:`edgescene.export.formats.FORMATS`.
"""
