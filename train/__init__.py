"""Training: the DINOv3 and VGGT trainers and the data they read.

- :mod:`.dinov3` self-supervised DINOv3 (DINO + iBOT + KoLeo, teacher EMA) and :mod:`.vggt` VGGT
  (camera, depth and point losses), each one process or many under torchrun / DDP;
- :mod:`.data` preprocessing of users' imagery (``edgescene preprocess``), the synthetic
  multi-view generator (``edgescene synth``) and the Middlebury pair;
- :mod:`.launch` a run in a stoppable background process; :mod:`.checkpoints` what a run starts
  from (inspect, download, presets) for the layers above.

Builds on :mod:`edgescene.models` and :mod:`edgescene.core`; never imports the runtime or the exporter.
"""
