"""The core every layer may use: what a reconstruction means, independent of any framework.

- :mod:`.geometry`   camera conventions, pose encoding <-> cameras, unprojection, Sim(3) fits (numpy)
- :mod:`.artifact`   the self-description of exported models (``artifact.json``) and their sizes
- :mod:`.manifest`   the dataset manifest format (``manifest.json``)
- :mod:`.preprocess` what a model sees: upstream VGGT's image preprocessing and its pixel mapping
  (numpy; Pillow and OpenCV imported by the functions that touch pixels)

Nothing here imports torch, onnxruntime, TensorRT or another edgescene layer (an import-linter
contract in pyproject.toml checks it).
"""
