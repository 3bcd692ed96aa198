"""The one TensorRT runner: a serialized engine on numpy feeds, with tensorrt and cuda-python (no torch).

:class:`~edgescene.trt.runner.TensorRTRunner` is what the runtime's TensorRT backend serves engines
with, what the exporter's parity gate accepts them through and what the bench times, so an accepted
engine has run through the code users run. Imports numpy at import time; tensorrt and cuda-python
when a runner is made.
"""
