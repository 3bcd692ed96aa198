"""PyTorch -> ONNX with the TorchScript exporter (``dynamo=False``, pinned: every working ViT port
used it), opset >= 17 (one ``LayerNormalization`` node, which TensorRT maps to a normalisation
layer instead of overflow-prone Pow/ReduceMean in fp16), named IO and a dynamic frame axis.

Models whose weights pass ~1.8 GB are saved with their weights in one external data file
(``model.onnx.data``) beside the graph, since a protobuf cannot exceed 2 GB.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper  # noqa: F401  (keeps onnx's helpers importable for callers)

from edgescene.export.graphs import ExportGraph, exportable_attention

EXTERNAL_DATA_THRESHOLD = int(1.8e9)
METADATA_KEY = "edgescene"


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes of all initializers, external or not (no need to load external data)."""
    total = 0
    for tensor in model.graph.initializer:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        total += int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
    return total


def save_onnx(model: onnx.ModelProto, path: Path, external: bool | None = None) -> list[str]:
    """Save ``model`` to ``path``; returns the external data file names written (may be empty)."""
    if external is None:
        external = initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD
    if external:
        data_name = path.name + ".data"
        (path.parent / data_name).unlink(missing_ok=True)
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_name,
            size_threshold=1024,
            convert_attribute=True,
        )
        return [data_name]
    onnx.save_model(model, str(path))
    return []


def export_onnx(
    graph: ExportGraph, path: Path, example_frames: int, opset: int = 17, fused_attention: bool = False
) -> list[str]:
    """Export ``graph`` to ``path``. Returns the external data files written beside it.

    ``fused_attention``: write each attention layer as one onnxruntime ``MultiHeadAttention`` node
    (:mod:`edgescene.export.fused_attention`); the graph then runs on onnxruntime only.
    """
    from edgescene.export.fused_attention import fused_attention_export

    if opset < 17:
        raise ValueError(f"opset must be >= 17 (LayerNormalization), got {opset}")
    images = torch.rand(example_frames, 3, graph.height, graph.width, generator=torch.Generator().manual_seed(0))
    example = graph.feeds(images.numpy())
    args = tuple(torch.from_numpy(example[name]) for name in graph.input_names)
    with torch.no_grad(), exportable_attention():
        graph.module(*args)  # warm-up: resolution constants (position embeddings) are cached now
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            raw = Path(tmp) / "raw.onnx"
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
                warnings.filterwarnings("ignore", category=DeprecationWarning)
                warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
                with fused_attention_export(fused_attention):
                    torch.onnx.export(
                        graph.module,
                        args,
                        str(raw),
                        dynamo=False,
                        opset_version=opset,
                        input_names=graph.input_names,
                        output_names=graph.output_names,
                        dynamic_axes=graph.dynamic_axes(),
                        do_constant_folding=True,
                    )
            model = onnx.load(str(raw))  # pulls in any external data torch wrote beside it
            return save_onnx(model, path)


def set_metadata(path: Path, metadata: dict) -> None:
    """Embed ``metadata`` as JSON in the model's ``metadata_props`` (external data left untouched)."""
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    props[METADATA_KEY] = json.dumps(metadata)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save_model(model, str(path))


def read_metadata(path: Path) -> dict | None:
    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return None
