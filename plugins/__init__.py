"""Backends that need PyTorch, outside the runtime core.

- :mod:`.torch_session` ``TorchSession``: a checkpoint, a Hub id or a preset run eagerly (the
  reference every export is compared with; CUDA with bf16 autocast on a GPU server).

The runtime finds them by name only (:data:`edgescene.runtime.backends.BACKENDS` maps ``"torch"``
to ``"edgescene.plugins.torch_session:TorchSession"``), and imports one only when a session asks
for it, so a runtime-only install never imports torch. Other packages add backends through the
``edgescene.backends`` entry-point group. Plugins may import the runtime, the exporter's graph
wrappers and the models; nothing below them imports a plugin (import-linter checks it).
"""
