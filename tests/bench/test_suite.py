"""edgescene.bench.suite / report and `edgescene bench`: quick runs of vggt_tiny at 56x84 on CPU."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from edgescene.bench.report import write_report
from edgescene.bench.suite import BenchConfig, gate_summary, run_bench, sigma_clipped, timing_stats
from edgescene.export.int8_portability import cpu_instruction_set

pytestmark = pytest.mark.slow  # the quick suite exports every CPU format (~30 s)

H, W = 56, 84


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick"
    config = BenchConfig(
        model="vggt_tiny",
        formats=["onnx", "onnx-int8", "onnx-int8-static", "tensorrt", "no-such-format"],
        frames=[1, 2],
        height=H,
        width=W,
        out=str(out),
        quick=True,
        device="cpu",
        stream_frames=24,
    )
    report = run_bench(config, log=lambda s: None)
    write_report(report, out)
    return out, report


def test_sigma_clipped_mean_drops_outliers():
    values = [10.0] * 20 + [1000.0]
    mean, std = sigma_clipped(values)
    assert mean == pytest.approx(10.0) and std == pytest.approx(0.0)
    t = timing_stats([0.010] * 9 + [0.020], warmup=2)
    assert t.runs == 10 and t.warmup == 2
    assert t.median_ms == pytest.approx(10.0)
    assert t.median_ms <= t.p95_ms <= 20.0
    assert len(t.samples_ms) == 10


def test_config_protocol_and_validation(tmp_path):
    assert BenchConfig("vggt_tiny", ["onnx"], [1], H, W, str(tmp_path), quick=True).protocol == {
        "warmup": 1,
        "runs": 3,
        "min_runs": 3,
        "budget_s": 0.0,
    }
    assert BenchConfig("vggt_tiny", ["onnx"], [1], H, W, str(tmp_path), runs=7).protocol == {
        "warmup": 2,
        "runs": 7,
        "min_runs": 7,
        "budget_s": None,
    }  # an explicit --runs means exactly that many
    default = BenchConfig("vggt_tiny", ["onnx"], [1], H, W, str(tmp_path))
    assert default.protocol["min_runs"] == 5 and default.protocol["budget_s"] > 0 and default.streaming_frames == 300
    with pytest.raises(ValueError):
        BenchConfig("vggt_tiny", ["onnx"], [1], H, W, str(tmp_path), stream_frames=-1)
    with pytest.raises(ValueError):
        BenchConfig("vggt_tiny", ["onnx"], [0], H, W, str(tmp_path))
    with pytest.raises(ValueError):
        BenchConfig("vggt_tiny", ["onnx"], [1], H, W, str(tmp_path), runs=0)


def test_bench_json_has_timed_rows_for_reference_and_formats(quick):
    out, report = quick
    data = json.loads((out / "bench.json").read_text())
    assert data["schema"] == "edgescene.bench"
    rows = {r["format"]: r for r in data["rows"]}
    assert rows["pytorch"]["status"] == "reference"
    for name in ("onnx", "onnx-int8", "onnx-int8-static"):
        assert rows[name]["status"] == "accepted", rows[name]  # every CPU format passes its gate here
        assert rows[name]["size_mb"] > 0
        assert rows[name]["parity_p99_abs"] is not None
        assert (out / "artifacts" / name).is_dir()
    for name in ("pytorch", "onnx", "onnx-int8", "onnx-int8-static"):
        results = {r["frames"]: r for r in rows[name]["results"]}
        assert sorted(results) == [1, 2]
        for n, r in results.items():
            assert r["status"] == "ok"
            t = r["timing"]
            assert t["runs"] == 3 and t["warmup"] == 1 and len(t["samples_ms"]) == 3
            assert 0 < t["median_ms"] <= t["p95_ms"]
            assert t["mean_ms"] > 0
            assert r["per_frame_ms"] == pytest.approx(t["median_ms"] / n)
            assert r["throughput_fps"] > 0
            assert r["peak_rss_mb"] is None or r["peak_rss_mb"] > 0
            assert r["activation_mb"] is None or r["activation_mb"] >= 0
            assert r["speedup_vs_pytorch"] > 0
    assert all(r["speedup_vs_pytorch"] == pytest.approx(1.0) for r in rows["pytorch"]["results"])
    assert data["machine"]["cores"] >= 1 and "torch" in data["machine"]["versions"]


def test_unavailable_and_unknown_formats_are_rows_not_crashes(quick):
    _, report = quick
    trt = report.row("tensorrt")
    assert trt is not None
    if importlib.util.find_spec("tensorrt") is None or not torch.cuda.is_available():
        assert trt.status.startswith("skipped:") and ("TensorRT" in trt.status or "GPU" in trt.status), trt.status
    else:
        assert trt.status == "accepted", trt.status
    bogus = report.row("no-such-format")
    assert bogus is not None and bogus.status.startswith("failed:") and "unknown export format" in bogus.status
    assert bogus.results == []
    names = [r.format for r in report.rows]
    assert names[0] == "pytorch" and names[1:4] == ["onnx", "onnx-int8", "onnx-int8-static"]


def test_int8_rows_name_the_cpu_and_report_their_gate_and_speed_here(quick):
    out, report = quick
    data = json.loads((out / "bench.json").read_text())
    cpu = data["machine"]["int8"]
    assert cpu["instruction_set"] == cpu_instruction_set()
    assert cpu["u8s8_kernels"] == (
        "saturating (x86 without VNNI)" if cpu["instruction_set"].endswith("no VNNI") else "exact"
    )
    rows = {r["format"]: r for r in data["rows"]}
    for name in ("onnx-int8", "onnx-int8-static"):
        quantization, gate = rows[name]["quantization"], rows[name]["gate"]
        assert quantization["same_on_every_cpu"] and quantization["gated_on"] == cpu["instruction_set"]
        assert all(s["reduce_range"] and s["weight_type"] == "int8" for s in quantization["schemes"])
        assert gate["passed"] and {"depth_median_rel", "rotation_deg", "fov_rel"} <= set(gate["checks"])
        assert 0 <= gate["worst"]["used"] < 1 and gate["worst"]["limit"] == gate["limits"][gate["worst"]["metric"]]
    assert rows["onnx"]["gate"] is None and rows["onnx"]["quantization"] is None  # fp32: no decoded checks
    text = (out / "report.md").read_text()
    assert f"- int8: {cpu['instruction_set']}; onnxruntime's uint8 x int8 kernels here: {cpu['u8s8_kernels']}" in text
    section = text.split("## int8 on this CPU", 1)[1].split("\n## ", 1)[0]
    assert "| `onnx-int8` | accepted | dynamic QOperator u8/s8 7-bit |" in section
    assert "static QDQ u8/s8 7-bit per-channel; dynamic QOperator u8/s8 7-bit" in section
    assert section.count("x fp32)") == 2 and cpu["instruction_set"] in section


def test_gate_summary_picks_the_check_closest_to_its_limit():
    parity = {
        "passed": True,
        "limits": {"cosine_mean": 0.99, "cosine_min": 0.95, "depth_median_rel": 0.03},
        "cases": [
            {"checks": {"cosine_mean": 0.998, "cosine_min": 0.97, "depth_median_rel": 0.01}},
            {"checks": {"cosine_mean": 0.995, "cosine_min": 0.98, "depth_median_rel": 0.02}},
        ],
    }
    summary = gate_summary(parity)
    assert summary["checks"] == {"cosine_mean": 0.995, "cosine_min": 0.97, "depth_median_rel": 0.02}
    # spent: cosine_mean (1 - 0.995) / 0.01 = 0.5, cosine_min 0.03 / 0.05 = 0.6, depth 0.02 / 0.03 = 0.67
    assert summary["worst"] == {"metric": "depth_median_rel", "value": 0.02, "limit": 0.03, "used": 0.6667}
    assert gate_summary({"passed": True, "cases": [{"checks": {}}]}) is None  # fp32: no decoded checks


def test_report_markdown_and_plots(quick):
    out, _ = quick
    text = (out / "report.md").read_text()
    assert "## Machine" in text and "CPU:" in text and "cores" in text
    assert "host<->device copies" in text and "preprocessing" in text
    assert "| format | 1 frame | 2 frames |" in text
    assert "Speedup vs PyTorch" in text and "`onnx-int8`" in text
    assert "## Targets" in text and "onnx >= 1.4x PyTorch eager" in text
    assert "## Scale: batch mode" in text and "## Scale: streaming" in text
    pngs = {p.name for p in out.glob("*.png")}
    assert {"latency_vs_frames.png", "memory_vs_frames.png", "streaming.png"} <= pngs
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_scale_section_batch_growth_and_streaming_checkpoints(quick):
    out, report = quick
    data = json.loads((out / "bench.json").read_text())
    batch = {b["format"]: b for b in data["scale"]["batch"]}
    assert {"pytorch", "onnx", "onnx-int8"} <= set(batch)
    for b in batch.values():
        assert b["frames"] == [1, 2] and len(b["latency_ms"]) == 2
        assert b["latency_growth"]["label"] and b["latency_growth"]["exponent"] is not None
    stream = data["scale"]["streaming"]
    assert stream["error"] is None, stream["error"]
    assert stream["format"] == "onnx" and stream["frames"] == 24
    assert sorted(stream["checkpoints"], key=int) == ["10", "24"]
    # every 6 frames once 8 are in; pipelined (the runtime's default), the map lags one window behind
    assert stream["pipelined"] and len(stream["samples"]) == 24 and stream["samples"][-1]["windows"] >= 2
    assert stream["fps"] > 0 and stream["model_only_fps"] > 0
    for c in stream["checkpoints"].values():
        assert c["per_frame_s"] > 0 and c["rss_mb"] > 0
    assert stream["latency_label"].startswith(("constant", "grows", "shrinks"))


def test_each_row_runs_in_its_own_process_and_onnx_rows_never_import_torch(quick, tmp_path):
    from edgescene.bench.worker import main as worker

    out, report = quick
    spec = {
        "model": str(out / "artifacts" / "onnx"),
        "device": "cpu",
        "options": {},
        "frames": [2, 1],
        "height": H,
        "width": W,
        "protocol": {"warmup": 0, "runs": 2, "min_runs": 2, "budget_s": None},
        "seed": 0,
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "edgescene.bench.worker", str(tmp_path / "spec.json"), str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["torch_imported"] is False  # the runtime's promise, checked in the process that measured
    assert [r["frames"] for r in data["results"]] == [1, 2]  # ascending whatever the order asked
    assert worker(["only-one-argument"]) == 2


def test_cli_bench_with_accuracy(tmp_path):
    from edgescene.cli import main
    from edgescene.train.data.synthetic import SynthConfig, generate_dataset

    dataset = tmp_path / "heldout"
    generate_dataset(
        SynthConfig(out_dir=str(dataset), scenes=1, frames=4, width=96, height=64, seed=7, trajectories=("orbit",))
    )
    out = tmp_path / "cli"
    assert (
        main(
            [
                "bench",
                "--model",
                "vggt_tiny",
                "--random-weights",
                "--formats",
                "onnx",
                "--frames",
                "2",
                "--height",
                str(H),
                "--width",
                str(W),
                "--out",
                str(out),
                "--runs",
                "2",
                "--warmup",
                "1",
                "--device",
                "cpu",
                "--dataset",
                str(dataset),
                "--stream-frames",
                "0",
            ]
        )
        == 0
    )
    data = json.loads((out / "bench.json").read_text())
    assert data["protocol"] == {"warmup": 1, "runs": 2, "min_runs": 2, "budget_s": None}
    assert data["scale"]["streaming"] is None
    for row in data["rows"]:
        assert row["accuracy"] is not None and "error" not in row["accuracy"], row["accuracy"]
        assert np.isfinite(row["accuracy"]["abs_rel"])
    assert (out / "accuracy_vs_speed.png").is_file()
    assert "## Accuracy" in (out / "report.md").read_text()


def test_artifact_folder_is_timed_as_exported(quick, tmp_path):
    src, _ = quick
    out = tmp_path / "artifact"
    config = BenchConfig(
        model=str(src / "artifacts" / "onnx"),
        formats=["onnx-int8"],
        frames=[1, 12],
        height=392,
        width=518,
        out=str(out),
        runs=1,
        warmup=0,
        device="cpu",
        stream_frames=0,
    )
    report = run_bench(config, log=lambda s: None)
    assert [r.format for r in report.rows] == ["pytorch", "onnx"]  # --formats ignored, nothing exported
    assert (report.config.height, report.config.width) == (H, W)  # the artifact's input size
    onnx = report.row("onnx")
    assert onnx.status == "accepted" and onnx.size_mb > 0
    assert onnx.result(1).status == "ok" and onnx.result(1).speedup_vs_pytorch > 0
    assert onnx.result(12).status.startswith("failed:")  # exported for 1..8 frames: a row status, not a crash
    assert not (out / "artifacts").exists()
