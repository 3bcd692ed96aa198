"""Precision as graph transforms of the fp32 ONNX file (never builder flags: TensorRT 11 removed
weak typing, so an fp16 engine is built from an fp16 graph).

- **fp16** (onnxruntime's float16 converter): weights and math in fp16, inputs/outputs fp32. Kept
  in fp32, where fp16 is known to break ViTs (EXPORT_AND_RUNTIME_PEERS.md section 0): every
  LayerNormalization and Softmax, the RoPE rotation (the Mul/Add/Neg/Concat/Slice nodes inside
  attention), the first attention block (DEIMv2's fix for DINOv3 on TensorRT), and the VGGT heads
  (upstream runs them in fp32 with autocast disabled; their ``exp`` overflows fp16).
- **int8** (onnxruntime dynamic quantization): MatMul/Gemm weights in int8, activations quantized
  on the fly per tensor; for CPUs with VNNI. The VGGT heads are left in fp32 for the same reason.
- **int8, static** (``onnx-int8-static``): where VGGT spends its CPU time at small sizes, the DPT
  heads' convolutions, in int8 QDQ form with activation ranges calibrated on real frames
  (:mod:`edgescene.export.calibration`); each head's last projection and activation stay fp32. The
  transformer's MatMuls are then quantized dynamically: static ranges there cost the cameras ~7 %
  focal error (measured on vggt_small), per-call ranges do not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from edgescene.export.graphs import ExportGraph
from edgescene.export.onnx_export import initializer_bytes, save_onnx

KEEP_FP32_OPS = [
    "LayerNormalization",
    "Softmax",
    "Sin",
    "Cos",
    "Exp",
    "Erf",
    "Range",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "MultiHeadAttention",
]  # onnxruntime's CPU kernel of the fused attention is fp32 only
ROPE_OPS = {"Mul", "Add", "Neg", "Concat", "Slice", "Split"}


def fp32_nodes(model: onnx.ModelProto, graph: ExportGraph) -> list[str]:
    """Names of the nodes kept fp32: RoPE inside attention, the first block(s), the heads."""
    prefixes = graph.first_block_prefixes + graph.fp32_prefixes
    keep = []
    for node in model.graph.node:
        if node.name.startswith(prefixes) or ("/attn/" in node.name and node.op_type in ROPE_OPS):
            keep.append(node.name)
    return keep


def convert_fp16(src: Path, dst: Path, graph: ExportGraph) -> list[str]:
    """fp32 ONNX -> mixed fp16 ONNX at ``dst``; returns external data files written."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(KEEP_FP32_OPS)),
        node_block_list=fp32_nodes(model, graph),
        disable_shape_infer=initializer_bytes(model) > 1.8e9,
    )
    return save_onnx(converted, dst)


def _pre_process(src: Path, big: bool, notes: list[str] | None, log) -> Path:
    """onnxruntime's recommended pre-processing (shape inference, graph cleanup) before quantizing.

    It is optional: when it fails, the plain graph is quantized, and that is logged and added to
    ``notes`` (which the exporter records in artifact.json), never passed over in silence.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = src.with_name("prepared.onnx")
    try:
        quant_pre_process(
            str(src), str(prepared), skip_symbolic_shape=True, save_as_external_data=big, all_tensors_to_one_file=True
        )
    except Exception as exc:  # noqa: BLE001 - any failure of the optional step is recorded below
        note = f"quantization pre-processing failed ({type(exc).__name__}: {exc}); the plain graph was quantized"
        log(f"export: WARNING {note}")
        if notes is not None:
            notes.append(note)
        return src
    return prepared


def quantize_int8(src: Path, dst: Path, graph: ExportGraph, notes: list[str] | None = None, log=print) -> list[str]:
    """fp32 ONNX -> dynamically quantized int8 ONNX at ``dst``; returns external data files written."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src), load_external_data=False)
    big = initializer_bytes(model) > 1.8e9
    exclude = [n.name for n in model.graph.node if n.name.startswith(graph.fp32_prefixes)]
    prepared = _pre_process(src, big, notes, log)
    quantize_dynamic(
        str(prepared),
        str(dst),
        op_types_to_quantize=["MatMul", "Gemm"],
        weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude,
        use_external_data_format=big,
    )
    if big:  # quantize_dynamic names its data file after the model; report what is there
        return sorted(p.name for p in dst.parent.iterdir() if p.name.startswith(dst.name) and p != dst)
    return []


# Ops whose inputs and outputs stay int8 in the static (QDQ) graph: the matrix products plus the ops
# between them (residual adds, upsampling, concatenation), so values are not dequantized and
# requantized around every convolution of the DPT heads.
STATIC_INT8_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Resize", "Concat", "Relu"]


DPT_HEADS = ("/model/depth_head/", "/model/point_head/")


def static_int8_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes quantized statically: the DPT heads' trunks (projections, resizes, refinement convs and
    the adds and upsamplings between them), i.e. each head up to its last projection
    (``output_conv2``). That conv and the activations after it stay fp32: ``exp`` would turn one int8
    step into a multiplicative depth error. The exporter writes nodes in topological order, so
    "from output_conv2 on" is a suffix of each head's nodes."""
    nodes = []
    tail = {prefix: False for prefix in DPT_HEADS}
    for node in model.graph.node:
        for prefix in DPT_HEADS:
            if node.name.startswith(prefix):
                tail[prefix] = tail[prefix] or node.name.startswith(prefix + "output_conv2/")
                if not tail[prefix]:
                    nodes.append(node.name)
    return nodes


def quantize_int8_static(
    src: Path,
    dst: Path,
    graph: ExportGraph,
    calibration: list[dict[str, np.ndarray]],
    log=print,
    notes: list[str] | None = None,
) -> list[str]:
    """fp32 ONNX -> statically quantized int8 QDQ ONNX at ``dst`` (activation ranges from ``calibration``).

    Weights int8 per output channel (symmetric), activations uint8 per tensor with MinMax ranges
    observed on the calibration feeds (real frames: see :func:`edgescene.export.calibration.calibration_feeds`).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if not calibration:
        raise ValueError("static int8 quantization needs at least one calibration batch")
    model = onnx.load(str(src), load_external_data=False)
    big = initializer_bytes(model) > 1.8e9
    prepared = _pre_process(src, big, notes, log)
    trunk = static_int8_nodes(onnx.load(str(prepared), load_external_data=False))

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calibration)

        def get_next(self):
            return next(self._it, None)

    log(f"export: calibrating activation ranges on {len(calibration)} batch(es)")
    static = dst.with_name("static.onnx")
    quantize_static(
        str(prepared),
        str(static),
        Feeds(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=STATIC_INT8_OPS,
        nodes_to_quantize=trunk or None,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        use_external_data_format=big,
    )
    # the transformer's matrix products: dynamic (per-call activation ranges) keeps the cameras accurate.
    # onnxruntime warns "already quantized?" on seeing the QDQ nodes: expected here, so silenced.
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(static),
            str(dst),
            op_types_to_quantize=["MatMul", "Gemm"],
            weight_type=QuantType.QInt8,
            nodes_to_exclude=[
                n.name
                for n in onnx.load(str(static), load_external_data=False).graph.node
                if n.name.startswith(graph.fp32_prefixes)
            ],
            use_external_data_format=big,
        )
    finally:
        root.setLevel(level)
    if big:
        return sorted(p.name for p in dst.parent.iterdir() if p.name.startswith(dst.name) and p != dst)
    return []
