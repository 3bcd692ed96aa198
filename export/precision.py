"""Precision as graph transforms of the fp32 ONNX file (never builder flags: TensorRT 11 removed
weak typing, so an fp16 engine is built from an fp16 graph).

- **fp16** (onnxruntime's float16 converter): weights and math in fp16, inputs/outputs fp32. Kept
  in fp32, where fp16 is known to break ViTs (EXPORT_AND_RUNTIME_PEERS.md section 0): every
  LayerNormalization and Softmax, the RoPE rotation (the Mul/Add/Neg/Concat/Slice nodes inside
  attention), the first attention block (DEIMv2's fix for DINOv3 on TensorRT), and the VGGT heads
  (upstream runs them in fp32 with autocast disabled; their ``exp`` overflows fp16).
- **int8** (onnxruntime dynamic quantization): MatMul/Gemm weights in int8, activations quantized
  on the fly per tensor; for CPUs with VNNI. The VGGT heads are left in fp32 for the same reason.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from edgescene.export.graphs import ExportGraph
from edgescene.export.onnx_export import initializer_bytes, save_onnx

KEEP_FP32_OPS = ["LayerNormalization", "Softmax", "Sin", "Cos", "Exp", "Erf", "Range", "ReduceMean", "Pow", "Sqrt",
                 "MultiHeadAttention"]  # onnxruntime's CPU kernel of the fused attention is fp32 only
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
        model, keep_io_types=True, op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(KEEP_FP32_OPS)),
        node_block_list=fp32_nodes(model, graph), disable_shape_infer=initializer_bytes(model) > 1.8e9,
    )
    return save_onnx(converted, dst)


def quantize_int8(src: Path, dst: Path, graph: ExportGraph) -> list[str]:
    """fp32 ONNX -> dynamically quantized int8 ONNX at ``dst``; returns external data files written."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(src), load_external_data=False)
    big = initializer_bytes(model) > 1.8e9
    exclude = [n.name for n in model.graph.node if n.name.startswith(graph.fp32_prefixes)]
    prepared = src.with_name("prepared.onnx")
    try:  # shape inference + graph cleanup first, as onnxruntime recommends for quantization
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True, save_as_external_data=big,
                          all_tensors_to_one_file=True)
    except Exception:  # noqa: BLE001 - optional step; quantize the plain graph instead
        prepared = src
    quantize_dynamic(str(prepared), str(dst), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8,
                     nodes_to_exclude=exclude, use_external_data_format=big)
    if big:  # quantize_dynamic names its data file after the model; report what is there
        return sorted(p.name for p in dst.parent.iterdir() if p.name.startswith(dst.name) and p != dst)
    return []
