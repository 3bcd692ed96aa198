"""int8 artifacts give the same results on x86 CPUs with and without VNNI (and arm64): the gate is
run again on an emulated CPU without VNNI (:mod:`cpu_emulation`: QEMU, CPU model Haswell), where the
previous settings (8-bit weights) failed it, and artifact.json says how the graph was quantized."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cpu_emulation import NO_AVX2_CPU, NO_VNNI_CPU, SKIP_REASON, emulator, run_emulated

from edgescene.core.artifact import read_artifact
from edgescene.export.calibration import calibration_feeds
from edgescene.export.graphs import dinov3_graph
from edgescene.export.int8_portability import (
    cpu_instruction_set,
    quantization_record,
    saturating_weights,
    u8s8_kernels_saturate,
    u8s8_probe,
)
from edgescene.export.onnx_export import export_onnx
from edgescene.export.parity import gate_frame_counts, gate_images, run_gate
from edgescene.export.pipeline import ExportConfig, export_model
from edgescene.export.precision import DYNAMIC_INT8, STATIC_INT8, quantize_int8, quantize_int8_static
from edgescene.models.loading import load_model

needs_qemu = pytest.mark.skipif(emulator() is None, reason=SKIP_REASON)
H, W, FRAMES = 32, 48, (1, 2, 3)
# The settings before 7-bit weights: saturated on CPUs without VNNI (dinov3_tiny's static gate: cosine 0.976).
OLD_STATIC, OLD_DYNAMIC = replace(STATIC_INT8, reduce_range=False), replace(DYNAMIC_INT8, reduce_range=False)


@pytest.fixture(scope="module")
def dinov3(tmp_path_factory):
    """dinov3_tiny's fp32 graph, the gate's inputs and PyTorch's outputs for them, calibration frames."""
    work = tmp_path_factory.mktemp("dinov3_int8")
    loaded = load_model("dinov3_tiny")
    graph = dinov3_graph(loaded.module, loaded.preset, H, W)
    fp32 = work / "fp32" / "model.onnx"
    fp32.parent.mkdir()
    export_onnx(graph, fp32, example_frames=FRAMES[1], opset=17, fused_attention=True)
    cases = [graph.feeds(gate_images(H, W, n)) for n in gate_frame_counts(FRAMES)]
    references = [graph.reference(feeds) for feeds in cases]
    calibration, _ = calibration_feeds(graph, None, batch_frames=FRAMES[1])
    return {"graph": graph, "fp32": fp32, "cases": cases, "references": references, "calibration": calibration}


def quantized(dinov3, out, static=None, dynamic=DYNAMIC_INT8):
    """dinov3_tiny as onnx-int8 (``static`` None) or onnx-int8-static, at ``out``."""
    out.parent.mkdir(parents=True)
    quiet = lambda line: None
    if static is None:
        quantize_int8(dinov3["fp32"], out, dinov3["graph"], log=quiet, scheme=dynamic)
    else:
        quantize_int8_static(
            dinov3["fp32"], out, dinov3["graph"], dinov3["calibration"], log=quiet, static=static, dynamic=dynamic
        )
    return out


def gate(dinov3, outputs):
    replay = iter(outputs)
    return run_gate(lambda feeds: next(replay), dinov3["cases"], dinov3["references"], "dinov3", "int8", H, W)


def native(model, cases, exact=False):
    """Outputs of ``model`` on this CPU for each case; ``exact``: onnxruntime's u8u8 rewrite
    (``session.x64quantprecision``), the integer products a VNNI, AMX or arm64 CPU computes."""
    options = ort.SessionOptions()
    if exact:
        options.add_session_config_entry("session.x64quantprecision", "1")
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, feeds), strict=True)) for feeds in cases]


def cosine_mean(report) -> float:
    return min(case.checks["cosine_mean"] for case in report.cases)


def test_cpu_instruction_set_says_whether_the_int8_kernels_saturate():
    isa = cpu_instruction_set()
    assert isa.split()[0] in ("x86_64", "aarch64", "arm64") or "unknown" in isa, isa
    model, feeds, exact = u8s8_probe()
    assert exact[0, 0] == 32 * 2 * 255 * 127  # 32 pairs of products that each overflow int16
    # x86 AVX2 / AVX-512 without VNNI saturate; VNNI, AMX, SSE-only and arm64 kernels do not
    assert u8s8_kernels_saturate() == isa.endswith("no VNNI"), isa


@pytest.mark.parametrize(
    ("machine", "flags", "system", "name"),
    [
        ("x86_64", {"avx2", "avx512bw", "avx512_vnni", "amx_int8"}, "Linux", "x86_64 AMX-INT8, AVX-512 VNNI"),
        ("x86_64", {"avx2", "avx512bw", "avx512_vnni"}, "Linux", "x86_64 AVX-512 VNNI"),  # Ice Lake, Zen 4
        ("x86_64", {"avx2", "avx_vnni"}, "Linux", "x86_64 AVX-VNNI"),  # Alder Lake
        ("x86_64", {"avx2", "avx512f", "avx512bw"}, "Linux", "x86_64 AVX-512, no VNNI"),  # Skylake-SP
        ("x86_64", {"sse4_1", "avx", "avx2", "fma"}, "Linux", "x86_64 AVX2, no VNNI"),  # Zen 3, Haswell
        ("x86_64", {"sse4_1", "avx"}, "Linux", "x86_64 SSE, no AVX2"),
        ("x86_64", set(), "Linux", "x86_64 (CPU flags unknown)"),
        ("aarch64", {"asimd", "asimddp", "i8mm", "sve"}, "Linux", "aarch64 NEON dotprod i8mm SVE"),  # Graviton 3
        ("aarch64", {"asimd", "asimddp"}, "Linux", "aarch64 NEON dotprod"),  # Graviton 2
        ("aarch64", {"asimd"}, "Linux", "aarch64 NEON, no dotprod"),  # Cortex-A72
        ("arm64", set(), "Darwin", "arm64 NEON dotprod (Apple silicon)"),
        ("riscv64", set(), "Linux", "riscv64"),
    ],
)
def test_the_instruction_set_is_named_from_the_cpu_flags(machine, flags, system, name):
    assert cpu_instruction_set(machine, flags, system) == name


@pytest.fixture(scope="module")
def without_vnni(dinov3, tmp_path_factory):
    """One emulated run on a CPU without VNNI: the u8s8 probe, then dinov3_tiny quantized three ways
    on the gate's inputs. (model name -> path, name -> outputs per gate case)"""
    work = tmp_path_factory.mktemp("without_vnni")
    probe, feeds, _ = u8s8_probe()
    onnx.save(probe, work / "probe.onnx")
    models = {
        "onnx-int8": quantized(dinov3, work / "dynamic" / "model.onnx"),
        "onnx-int8-static": quantized(dinov3, work / "static" / "model.onnx", STATIC_INT8),
        "old onnx-int8-static": quantized(dinov3, work / "old" / "model.onnx", OLD_STATIC, OLD_DYNAMIC),
    }
    jobs = [(work / "probe.onnx", [feeds])] + [(m, dinov3["cases"]) for m in models.values()]
    outputs = run_emulated(jobs, work / "run", cpu=NO_VNNI_CPU)
    return models, {"probe": outputs[0], **dict(zip(models, outputs[1:], strict=True))}


@needs_qemu
@pytest.mark.slow
def test_the_emulated_cpu_model_decides_which_int8_kernels_run(without_vnni, tmp_path):
    model, feeds, exact = u8s8_probe()
    onnx.save(model, tmp_path / "probe.onnx")
    (no_avx2,) = run_emulated([(tmp_path / "probe.onnx", [feeds])], tmp_path / "run", cpu=NO_AVX2_CPU)
    assert (without_vnni[1]["probe"][0]["y"] == 32 * 32767).all()  # AVX2 vpmaddubsw: each pair clipped to int16
    assert np.array_equal(no_avx2[0]["y"], exact)  # SSE: widened to 16 bits first, exact


def test_seven_bit_weights_cannot_saturate_and_eight_bit_ones_can(dinov3, tmp_path):
    for name, static in (("dynamic", None), ("static", STATIC_INT8)):
        assert saturating_weights(onnx.load(quantized(dinov3, tmp_path / name / "model.onnx", static))) == []
    old = onnx.load(quantized(dinov3, tmp_path / "old" / "model.onnx", OLD_STATIC, OLD_DYNAMIC))
    assert any(w.endswith("127]") for w in saturating_weights(old))  # 8-bit symmetric weights reach 127


def test_weights_stored_as_external_data_are_checked_too(tmp_path):
    """Big graphs (VGGT-1B) keep their int8 weights in a data file beside model.onnx: the record reads
    them from the model's folder, wherever the export runs from."""
    model, _, _ = u8s8_probe()  # one int8 weight of 127s: outside [-64, 64]
    folder = tmp_path / "artifact"
    folder.mkdir()
    onnx.save(
        model, str(folder / "model.onnx"), save_as_external_data=True, location="model.onnx.data", size_threshold=0
    )
    assert (folder / "model.onnx.data").is_file()
    record = quantization_record(folder / "model.onnx", [DYNAMIC_INT8])
    assert record["same_on_every_cpu"] is False and record["saturating_weights"] == ["b [127, 127]"]


@needs_qemu
@pytest.mark.slow
def test_int8_formats_pass_the_gate_on_a_cpu_without_vnni_where_8_bit_weights_failed(dinov3, without_vnni):
    models, emulated = without_vnni
    reports = {name: gate(dinov3, emulated[name]) for name in models}
    assert reports["onnx-int8"].passed, reports["onnx-int8"].format()
    assert reports["onnx-int8-static"].passed, reports["onnx-int8-static"].format()
    assert cosine_mean(reports["onnx-int8-static"]) > 0.994  # measured 0.9946
    # the same gate fails the old settings here (measured 0.9755 .. 0.9768): this test can fail
    old = reports["old onnx-int8-static"]
    assert not old.passed and cosine_mean(old) < 0.98, old.format()
    # ... because of saturation: the exact integer products (what VNNI computes) pass
    exact_old = gate(dinov3, native(models["old onnx-int8-static"], dinov3["cases"], exact=True))
    assert exact_old.passed and cosine_mean(exact_old) > 0.994
    # 7-bit weights: the emulated AVX2 kernels and the exact products agree to float rounding
    exact_new = native(models["onnx-int8-static"], dinov3["cases"], exact=True)
    for exact, outputs in zip(exact_new, emulated["onnx-int8-static"], strict=True):
        for name, value in exact.items():
            np.testing.assert_allclose(outputs[name], value, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx-int8", "onnx-int8-static"])
def test_int8_artifacts_say_how_they_were_quantized(tmp_path, fmt):
    result = export_model(
        ExportConfig(model="dinov3_tiny", format=fmt, out=str(tmp_path / fmt), height=H, width=W, frames_range=FRAMES),
        log=lambda line: None,
    )
    assert result.accepted, result.report.format()
    record = read_artifact(result.folder).quantization
    assert record == json.loads((result.folder / "artifact.json").read_text())["quantization"]
    schemes = {s["method"]: s for s in record["schemes"]}
    assert schemes["dynamic"] == {
        "method": "dynamic",
        "weight_type": "int8",
        "activation_type": "uint8",
        "reduce_range": True,
        "per_channel": False,
        "quant_format": "QOperator",
        "op_types": ["MatMul", "Gemm"],
    }
    if fmt == "onnx-int8-static":
        assert schemes["static"]["quant_format"] == "QDQ" and schemes["static"]["per_channel"]
        assert schemes["static"]["reduce_range"] and schemes["static"]["activation_type"] == "uint8"
        assert record["quantized_ops"]["static"]["MatMul"] > 0  # DINOv3 has no DPT head: all of it is static
    else:
        assert record["quantized_ops"] == {"dynamic": {"MatMul": 8}}  # 2 blocks x (qkv, proj, fc1, fc2)
    assert record["same_on_every_cpu"] and record["int8_weight_range"] == [-64, 64]
    assert record["gated_on"] == cpu_instruction_set() and "VNNI" in record["reason"]
    assert not (result.folder / "static.onnx").exists()  # the intermediate graph is not part of the artifact
