"""Measured reports: export formats beside PyTorch, accuracy, and scale.

- :mod:`.suite` ``run_bench``: every format of the export table beside the PyTorch reference on
  latency, throughput, peak memory and (with a dataset) accuracy, batch and streaming scale
  (``edgescene bench``); :mod:`.report` writes the JSON, Markdown and plots;
- :mod:`.accuracy` ``evaluate`` / ``evaluate_baselines``: depth, pose and ATE on data with ground
  truth (``edgescene eval``); :mod:`.metrics` the numbers themselves;
- :mod:`.streaming_memory`, :mod:`.scale`, :mod:`.model_forward`: the pieces the suite runs.

Bench measures through the public functions of runtime, export and train; it never imports the
model code (an import-linter contract).
"""
