"""Precision as graph transforms of the fp32 ONNX file (never builder flags: TensorRT 11 removed
weak typing, so an fp16 engine is built from an fp16 graph).

- **fp16** (onnxruntime's float16 converter): weights and math in fp16, inputs/outputs fp32. Kept
  in fp32, where fp16 is known to break ViTs (EXPORT_AND_RUNTIME_PEERS.md section 0): every
  LayerNormalization and Softmax, the RoPE rotation (the Mul/Add/Neg/Concat/Slice nodes inside
  attention), the first attention block (DEIMv2's fix for DINOv3 on TensorRT), and the VGGT heads
  (upstream runs them in fp32 with autocast disabled; their ``exp`` overflows fp16).
- **int8** (onnxruntime dynamic quantization): MatMul/Gemm weights in int8 (7 bits, see below),
  activations quantized on the fly per tensor. The VGGT heads are left in fp32 for the same reason.
- **int8, static** (``onnx-int8-static``): where VGGT spends its CPU time at small sizes, the DPT
  heads' convolutions, in int8 QDQ form with activation ranges calibrated on real frames
  (:mod:`edgescene.export.calibration`); each head's last projection and activation stay fp32. The
  transformer's MatMuls are then quantized dynamically: static ranges there cost the cameras ~7 %
  focal error (measured on vggt_small), per-call ranges do not.

int8 the same on every CPU: weights are quantized with ``reduce_range`` (7 bits), so onnxruntime's
uint8 x int8 kernels cannot saturate on x86 CPUs without VNNI; why, the measurements behind the choice
and what ``artifact.json`` records: :mod:`edgescene.export.int8_portability`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

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


@dataclass(frozen=True)
class Int8Scheme:
    """How one part of a graph is quantized: what onnxruntime's quantizer is told, and what
    ``artifact.json`` records (``quantization.schemes``)."""

    method: Literal["dynamic", "static"]  # dynamic: activation ranges per call; static: calibrated
    weight_type: Literal["int8", "uint8"]
    activation_type: Literal["uint8", "int8"]  # dynamic quantization is uint8 only
    reduce_range: bool  # 7-bit weights: no int16 saturation in the u8s8 kernels of x86 CPUs without VNNI
    per_channel: bool  # one weight scale per output channel instead of per tensor
    quant_format: Literal["QOperator", "QDQ"]  # integer operators, or Quantize/DequantizeLinear pairs
    op_types: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.method == "dynamic" and (self.activation_type != "uint8" or self.quant_format != "QOperator"):
            raise ValueError(
                f"dynamic int8 quantizes activations to uint8 as integer operators (QOperator); got "
                f"{self.activation_type} activations as {self.quant_format}"
            )
        for name, value in (("weight_type", self.weight_type), ("activation_type", self.activation_type)):
            if value not in ("int8", "uint8"):
                raise ValueError(f"{name} must be int8 or uint8, got {value!r}")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "op_types": list(self.op_types)}

    def quant_type(self, which: Literal["weight", "activation"]):
        from onnxruntime.quantization import QuantType

        value = self.weight_type if which == "weight" else self.activation_type
        return QuantType.QInt8 if value == "int8" else QuantType.QUInt8


DYNAMIC_INT8 = Int8Scheme(
    method="dynamic",
    weight_type="int8",
    activation_type="uint8",
    reduce_range=True,
    per_channel=False,
    quant_format="QOperator",
    op_types=("MatMul", "Gemm"),
)
"""``onnx-int8`` and the transformer of ``onnx-int8-static``: MatMul/Gemm, activation ranges per call."""


def quantize_int8(
    src: Path,
    dst: Path,
    graph: ExportGraph,
    notes: list[str] | None = None,
    log=print,
    scheme: Int8Scheme = DYNAMIC_INT8,
) -> list[str]:
    """fp32 ONNX -> dynamically quantized int8 ONNX at ``dst``; returns external data files written."""
    from onnxruntime.quantization import quantize_dynamic

    model = onnx.load(str(src), load_external_data=False)
    big = initializer_bytes(model) > 1.8e9
    exclude = [n.name for n in model.graph.node if n.name.startswith(graph.fp32_prefixes)]
    prepared = _pre_process(src, big, notes, log)
    quantize_dynamic(
        str(prepared),
        str(dst),
        op_types_to_quantize=list(scheme.op_types),
        per_channel=scheme.per_channel,
        reduce_range=scheme.reduce_range,
        weight_type=scheme.quant_type("weight"),
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


STATIC_INT8 = Int8Scheme(
    method="static",
    weight_type="int8",
    activation_type="uint8",
    reduce_range=True,
    per_channel=True,
    quant_format="QDQ",
    op_types=tuple(STATIC_INT8_OPS),
)
"""``onnx-int8-static``: the DPT heads' trunks (all of DINOv3), QDQ with calibrated activation ranges."""

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
    static: Int8Scheme = STATIC_INT8,
    dynamic: Int8Scheme = DYNAMIC_INT8,
) -> list[str]:
    """fp32 ONNX -> statically quantized int8 QDQ ONNX at ``dst`` (activation ranges from ``calibration``).

    ``static`` (weights symmetric, activations per tensor with MinMax ranges observed on the
    calibration feeds: real frames, see :func:`edgescene.export.calibration.calibration_feeds`), then
    the remaining MatMuls with ``dynamic``.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_dynamic, quantize_static

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
    between = prepared.with_name("static.onnx")  # beside the fp32 graph: not part of the artifact
    quantize_static(
        str(prepared),
        str(between),
        Feeds(),
        quant_format=QuantFormat.QDQ if static.quant_format == "QDQ" else QuantFormat.QOperator,
        op_types_to_quantize=list(static.op_types),
        nodes_to_quantize=trunk or None,
        per_channel=static.per_channel,
        reduce_range=static.reduce_range,
        activation_type=static.quant_type("activation"),
        weight_type=static.quant_type("weight"),
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
            str(between),
            str(dst),
            op_types_to_quantize=list(dynamic.op_types),
            per_channel=dynamic.per_channel,
            reduce_range=dynamic.reduce_range,
            weight_type=dynamic.quant_type("weight"),
            nodes_to_exclude=[
                n.name
                for n in onnx.load(str(between), load_external_data=False).graph.node
                if n.name.startswith(graph.fp32_prefixes)
            ],
            use_external_data_format=big,
        )
    finally:
        root.setLevel(level)
    if big:
        return sorted(p.name for p in dst.parent.iterdir() if p.name.startswith(dst.name) and p != dst)
    return []
