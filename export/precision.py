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

int8 the same on every CPU: onnxruntime multiplies uint8 activations by int8 weights. x86 CPUs with
VNNI (AVX-512 VNNI, AVX-VNNI) or AMX accumulate those products exactly; x86 CPUs without (AVX2,
AVX-512 before VNNI) use ``vpmaddubsw``, which adds each pair of products into int16 *with
saturation*: 255 x 127 x 2 = 64770 does not fit, and the output is silently wrong. An artifact
gated on a VNNI server then fails, or loses accuracy unseen, on an AVX2 one. Weights are therefore
quantized with ``reduce_range`` (7 bits, [-64, 64]: 255 x 64 x 2 = 32640 fits int16), which keeps
onnxruntime's fast u8s8 kernels on every CPU and makes their results identical on VNNI and
non-VNNI x86; arm64 kernels (``udot``/``sdot``, ``ummla``/``smmla``, or widening NEON multiplies)
never saturate. The schemes are :data:`DYNAMIC_INT8` and :data:`STATIC_INT8`, recorded in
``artifact.json`` (``quantization``), chosen by measurement (onnxruntime 1.32; gate metrics on the AVX2
kernels and on the exact integer products that VNNI, AMX and arm64 compute; CPU time, one thread):

====================================  =================  =============  =============
gate, worst case                      8-bit weights      7-bit weights  uint8 weights
                                      AVX2 / exact       AVX2 = exact   AVX2 = exact
====================================  =================  =============  =============
dinov3_tiny static: cosine mean       **0.976** / 0.995  0.995          0.995
vggt_small static: depth median rel   **4.0 %** / 0.8 %  1.0 %          0.9 %
vggt_small dynamic: depth median rel  0.13 % / 0.03 %    0.05 %         0.03 %
vggt_small static, AVX2: ms (x fp32)  423 (1.32x)        435 (1.29x)    523 (1.07x)
====================================  =================  =============  =============

(**bold**: fails the gate). uint8 weights are as portable but lose the fast symmetric convolution and
VNNI kernels; per-channel weights in the dynamic MatMuls measured no better (vggt_small rotation
0.014 vs 0.010 deg) and stay per tensor; int8 activations (S8S8 QDQ) ran slower on x86 (dinov3_tiny
2.7 vs 1.1 ms) and onnxruntime's ``session.x64quantprecision`` failed to load them.
"""

from __future__ import annotations

from collections import Counter
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

INT8_REASON = (
    "int8 weights within [-64, 64] (reduce_range, 7 bits): uint8 x int8 pair sums fit int16, so onnxruntime's "
    "kernels on x86 CPUs without VNNI (AVX2, AVX-512 before VNNI) cannot saturate and compute what VNNI, AMX "
    "and arm64 CPUs compute; 8-bit weights failed the gate on those CPUs (measured: dinov3_tiny static token "
    "cosine 0.976 < 0.99, vggt_small static depth error 4.0 % > 3 %), and uint8 weights (portable too) ran 20 % slower"
)


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


# The largest |int8 weight| for which onnxruntime's u8s8 kernels on x86 without VNNI cannot saturate:
# vpmaddubsw adds two uint8 x int8 products into int16, and 255 * 64 * 2 = 32640 <= 32767.
PORTABLE_WEIGHT_LIMIT = 64
# Integer operators and the input that holds their weights (onnxruntime's s8 "overflow ops").
_WEIGHT_INPUT = {
    "MatMulInteger": 1,
    "DynamicQuantizeMatMul": 1,
    "MatMulIntegerToFloat": 1,
    "ConvInteger": 1,
    "QLinearMatMul": 3,
    "QLinearConv": 3,
    "QGemm": 3,
}
_QDQ_COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # ops onnxruntime fuses with their DequantizeLinear


def saturating_weights(model: onnx.ModelProto, limit: int = PORTABLE_WEIGHT_LIMIT) -> list[str]:
    """int8 weights of integer products with a value outside [-limit, limit], as "name [min, max]".

    Such a weight can saturate the uint8 x int8 kernels of x86 CPUs without VNNI, so the graph's
    outputs there differ from those of a VNNI, AMX or arm64 CPU. Empty: the same results everywhere.
    """
    initializers = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    weights = set()
    for node in model.graph.node:
        index = _WEIGHT_INPUT.get(node.op_type)
        if index is not None and len(node.input) > index:
            weights.add(node.input[index])
        elif node.op_type == "DequantizeLinear" and any(
            c.op_type in _QDQ_COMPUTE for c in consumers.get(node.output[0], [])
        ):
            weights.add(node.input[0])
    found = []
    for name in sorted(weights):
        tensor = initializers.get(name)
        if tensor is None or tensor.data_type != onnx.TensorProto.INT8:
            continue  # uint8 weights (u8u8 kernels) do not saturate; activations are not initializers
        values = onnx.numpy_helper.to_array(tensor)
        if values.size and (int(values.min()) < -limit or int(values.max()) > limit):
            found.append(f"{name} [{int(values.min())}, {int(values.max())}]")
    return found


def quantized_ops(
    model: onnx.ModelProto, static_ops: tuple[str, ...] = tuple(STATIC_INT8_OPS)
) -> dict[str, dict[str, int]]:
    """How many nodes each scheme quantized, by float op type: ``{"dynamic": {"MatMul": n},
    "static": {"Conv": n, ...}}`` (static: the ``static_ops`` that read a DequantizeLinear output)."""
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    dynamic: Counter[str] = Counter()
    static: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"):
            dynamic["MatMul"] += 1
        elif node.op_type == "ConvInteger":
            dynamic["Conv"] += 1
        elif node.op_type in static_ops and dequantized & set(node.input):
            static[node.op_type] += 1
    return {k: dict(sorted(v.items())) for k, v in (("dynamic", dynamic), ("static", static)) if v}


def cpu_flags() -> set[str]:
    """This CPU's feature flags from ``/proc/cpuinfo`` (x86 "flags", arm64 "Features"); empty elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("flags", "features"):
                return set(value.split())
    except OSError:
        pass
    return set()


def cpu_instruction_set(machine: str | None = None, flags: set[str] | None = None, system: str | None = None) -> str:
    """The int8 instruction set of this CPU (or of ``machine`` with ``flags``), read from its flags:
    "x86_64 AVX-512 VNNI", "x86_64 AVX2, no VNNI", "aarch64 NEON dotprod", ... Names ending in
    "no VNNI" are the x86 CPUs whose uint8 x int8 kernels saturate."""
    import platform

    machine = (machine or platform.machine()).lower()
    system = system or platform.system()
    flags = cpu_flags() if flags is None else flags
    if machine in ("x86_64", "amd64", "i386", "i686"):
        if not flags:
            return f"{machine} (CPU flags unknown)"
        if "amx_int8" in flags:
            return "x86_64 AMX-INT8, AVX-512 VNNI"
        if "avx512_vnni" in flags:
            return "x86_64 AVX-512 VNNI"
        if "avx_vnni" in flags:
            return "x86_64 AVX-VNNI"
        if "avx512bw" in flags:
            return "x86_64 AVX-512, no VNNI"
        if "avx2" in flags:
            return "x86_64 AVX2, no VNNI"
        return "x86_64 SSE, no AVX2"
    if machine in ("aarch64", "arm64"):
        if system == "Darwin":
            return "arm64 NEON dotprod (Apple silicon)"
        if not flags:
            return f"{machine} (CPU flags unknown)"
        extras = [name for flag, name in (("asimddp", "dotprod"), ("i8mm", "i8mm"), ("sve", "SVE")) if flag in flags]
        return " ".join(["aarch64 NEON", *extras]) if extras else "aarch64 NEON, no dotprod"
    return machine or "unknown CPU"


def u8s8_probe() -> tuple[onnx.ModelProto, dict[str, np.ndarray], np.ndarray]:
    """(model, feeds, exact output) of one MatMulInteger whose uint8 x int8 pairs overflow int16:
    255 * 127 + 255 * 127 = 64770 per pair. A CPU's kernels give ``exact`` or saturate (32767 per
    pair): run it where the kernels are in question (see :func:`u8s8_kernels_saturate`)."""
    from onnx import TensorProto, helper

    k = 64
    a = np.full((8, k), 255, np.uint8)
    b = np.full((k, 16), 127, np.int8)
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    graph = helper.make_graph(
        [node],
        "u8s8_probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, list(a.shape))],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [8, 16])],
        [onnx.numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, {"a": a}, a.astype(np.int32) @ b.astype(np.int32)


def u8s8_kernels_saturate() -> bool:
    """True where onnxruntime's uint8 x int8 kernels saturate on this CPU (x86 without VNNI)."""
    import onnxruntime as ort

    model, feeds, exact = u8s8_probe()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return not np.array_equal(session.run(None, feeds)[0], exact)


def quantization_record(model_path: Path, schemes: list[Int8Scheme]) -> dict[str, Any]:
    """What ``artifact.json`` says about an int8 graph: its schemes, the ops they quantized, whether
    its results are the same on every CPU, and the CPU its gate ran on."""
    model = onnx.load(str(model_path), load_external_data=False)
    risky = saturating_weights(model)
    return {
        "schemes": [s.to_json() for s in schemes],
        "quantized_ops": quantized_ops(model, tuple(op for s in schemes if s.method == "static" for op in s.op_types)),
        "int8_weight_range": [-PORTABLE_WEIGHT_LIMIT, PORTABLE_WEIGHT_LIMIT] if not risky else None,
        "same_on_every_cpu": not risky,
        "saturating_weights": risky[:10],
        "gated_on": cpu_instruction_set(),
        "u8s8_kernels_here": "saturating (x86 without VNNI)" if u8s8_kernels_saturate() else "exact",
        "reason": INT8_REASON,
    }
