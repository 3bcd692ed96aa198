"""Lean runtime: numpy + onnxruntime / TensorRT; never torch, the models, the exporter or the trainers.

- :mod:`.session` ``open_session``: one interface over the backends (:mod:`.backends`: onnxruntime,
  native TensorRT; PyTorch as a plugin, :mod:`edgescene.plugins`), and :mod:`.multisize` for
  artifacts that serve several input sizes;
- :mod:`.frames` images and video in; :mod:`.preprocess` upstream VGGT's preprocessing (from
  :mod:`edgescene.core.preprocess`); :mod:`.keyframes` selection;
- :mod:`.stream` / :mod:`.reconstruct` streaming reconstruction in bounded memory, :mod:`.fusion`
  the point map, :mod:`.outputs` PLY / GLB / JSON / NPZ, :mod:`.scene` re-rendering cached results.

Geometry and the artifact format are in :mod:`edgescene.core`. An import-linter contract keeps
torch and the upper layers out of this package, lazy imports included.
"""
