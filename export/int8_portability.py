"""Int8 artifacts that compute the same on every CPU: the saturation check, the CPU's int8 instruction
set, and what ``artifact.json`` records about a quantized graph (``quantization``).

int8 the same on every CPU: onnxruntime multiplies uint8 activations by int8 weights. x86 CPUs with
VNNI (AVX-512 VNNI, AVX-VNNI) or AMX accumulate those products exactly; x86 CPUs without (AVX2,
AVX-512 before VNNI) use ``vpmaddubsw``, which adds each pair of products into int16 *with
saturation*: 255 x 127 x 2 = 64770 does not fit, and the output is silently wrong. An artifact
gated on a VNNI server then fails, or loses accuracy unseen, on an AVX2 one. Weights are therefore
quantized with ``reduce_range`` (7 bits, [-64, 64]: 255 x 64 x 2 = 32640 fits int16), which keeps
onnxruntime's fast u8s8 kernels on every CPU and makes their results identical on VNNI and
non-VNNI x86; arm64 kernels (``udot``/``sdot``, ``ummla``/``smmla``, or widening NEON multiplies)
never saturate. The schemes are ``precision.DYNAMIC_INT8`` and ``precision.STATIC_INT8``, recorded in
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
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgescene.export.precision import STATIC_INT8_OPS, Int8Scheme

INT8_REASON = (
    "int8 weights within [-64, 64] (reduce_range, 7 bits): uint8 x int8 pair sums fit int16, so onnxruntime's "
    "kernels on x86 CPUs without VNNI (AVX2, AVX-512 before VNNI) cannot saturate and compute what VNNI, AMX "
    "and arm64 CPUs compute; 8-bit weights failed the gate on those CPUs (measured: dinov3_tiny static token "
    "cosine 0.976 < 0.99, vggt_small static depth error 4.0 % > 3 %), and uint8 weights (portable too) ran 20 % slower"
)

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


def saturating_weights(model: onnx.ModelProto, limit: int = PORTABLE_WEIGHT_LIMIT, base_dir: str = "") -> list[str]:
    """int8 weights of integer products with a value outside [-limit, limit], as "name [min, max]".
    ``base_dir``: the model's folder, where weights stored as external data are read from (VGGT-1B).

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
        values = onnx.numpy_helper.to_array(tensor, base_dir=base_dir)
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
    risky = saturating_weights(model, base_dir=str(Path(model_path).parent))
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
