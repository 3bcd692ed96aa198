"""edgescene: photos and video to 3D scenes with DINOv3 and VGGT.

The installed package exposes one namespace; each job lives in its own subpackage:

- ``edgescene.models``  PyTorch DINOv3 and VGGT that load the official checkpoints (torch only)
- ``edgescene.train``   trainers and dataset preprocessing
- ``edgescene.export``  ONNX / TensorRT export behind a parity gate
- ``edgescene.runtime`` lean numpy + onnxruntime / TensorRT runtime (never imports torch)
- ``edgescene.bench``   benchmark reports
- ``edgescene.apps``    FastAPI service and Gradio app

Importing this package imports nothing heavy.
"""

__version__ = "0.1.0"
