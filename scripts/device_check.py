"""The GPU device check: what a single-GPU NVIDIA machine with no network can tell this project.

Run it as ``make device-check`` (or ``python scripts/device_check.py OUT_DIR``). It needs only what
the lent machine's image has (Python with torch built for CUDA, numpy, onnx, onnxruntime, opencv,
pillow, pytest): no TensorRT, no onnxruntime-gpu, no PyAV, trimesh, fastapi or gradio. It makes the
project importable without installing dependencies (the repository root on ``sys.path``: its ``edgescene/``
folder is the whole package, the layers linked in), then:

1. ``env``: versions, ``torch.cuda.device_count()``, the GPU's name and compute capability, which
   SDPA kernels are enabled, whether TensorRT / cuda-python / onnxruntime-gpu are importable;
2. ``pytest``: the ``gpu``-marked tests (TensorRT tests skip with their reason where it is absent);
3. ``vggt_1b``: VGGT-1B with random weights on the GPU, SDPA attention, at 392x518 (H x W), timed
   and measured for peak memory, side by side with the upstream README's H100 table (aggregator only):
   - the aggregator with weights in bf16 (the upstream table's setting: 1 frame needs 1.88 GB, less
     than the aggregator's fp32 weights alone) at 1 ... 100 frames;
   - the aggregator and the full model (camera, depth and point heads) with fp32 weights under bf16
     autocast, as ``open_session(..., device="cuda")`` runs them, at 1, 10, 50, 100 frames;
   - the full model's peak memory at 32, 64 and 128 frames;
   - the chunked DPT heads (8 frames at a time) against unchunked ones on 16 frames;
4. ``stream``: 64 synthetic frames at window 8 through ``edgescene.runtime.reconstruct.run`` (what a
   user runs: keyframe selection, preprocessing, the torch CUDA model, pose decoding, alignment and
   fusion), sequential and pipelined, end-to-end time against the model calls alone;
5. ``threads``: two threads calling one torch CUDA session against the serial results.

Each section records its own error and the rest still run; the exit status is 1 if any failed.
Writes ``OUT_DIR/device_check.json`` and ``OUT_DIR/device_check.md``. On a machine without a CUDA GPU
it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib.util
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# upstream README (facebookresearch/vggt), aggregator only, H100, flash attention 3, ~392x518
UPSTREAM = {
    1: (0.04, 1.88),
    2: (0.05, 2.07),
    4: (0.07, 2.45),
    8: (0.11, 3.23),
    10: (0.14, 3.63),
    20: (0.31, 5.58),
    50: (1.04, 11.41),
    100: (3.12, 21.15),
    200: (8.75, 40.63),
}
HEIGHT, WIDTH = 392, 518
GB = 1e9
DEVICE = "cuda"  # "cpu" only for --cpu-dry-run (the script's own test on a machine without a GPU)


def _sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _peak_reset() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak() -> int:
    import torch

    return torch.cuda.max_memory_allocated() if DEVICE == "cuda" else 0


def _allocated() -> int:
    import torch

    return torch.cuda.memory_allocated() if DEVICE == "cuda" else 0


def _empty_cache() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def env_section() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device_count": torch.cuda.device_count(),
        "modules": {
            m: importlib.util.find_spec(m) is not None
            for m in ("tensorrt", "cuda", "onnxruntime", "onnx", "cv2", "PIL", "av", "trimesh")
        },
    }
    if info["device_count"]:
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            compute_capability=f"{props.major}.{props.minor}",
            memory_gb=round(props.total_memory / GB, 1),
            bf16=torch.cuda.is_bf16_supported(),
            sdpa={
                "flash": torch.backends.cuda.flash_sdp_enabled(),
                "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                "math": torch.backends.cuda.math_sdp_enabled(),
            },
        )
    with contextlib.suppress(ImportError):
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    return info


def pytest_section(site: Path, out: Path, timeout_s: int) -> dict:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py") if "mark.gpu" in p.read_text())
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "gpu",
        "-p",
        "no:cacheprovider",
        "-rA",
        "-q",
        f"--junitxml={out / 'pytest_gpu.xml'}",
        *files,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    (out / "pytest_gpu.log").write_text(proc.stdout + proc.stderr)
    tail = [line for line in proc.stdout.splitlines() if line.strip()][-25:]
    return {
        "files": files,
        "returncode": proc.returncode,
        "seconds": round(time.perf_counter() - start, 1),
        "summary": tail,
    }


def _timed(fn, reps: int) -> tuple[list[float], float]:
    """Seconds of each of ``reps`` calls after one warm-up, and the peak allocated bytes over them."""
    fn()
    _sync()
    _peak_reset()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return times, _peak()


def _reps(frames: int) -> int:
    return 10 if frames <= 20 else 3 if frames <= 50 else 2


def vggt_section(
    result: dict, model_name: str, agg_frames: list[int], full_frames: list[int], memory_frames: list[int]
) -> None:
    """Fills ``result`` as it goes, so a failure part-way keeps what was measured."""
    import torch

    from edgescene.models import build_vggt

    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device(DEVICE):
        model = build_vggt(model_name).eval()
    _sync()
    result["build_s"] = round(time.perf_counter() - start, 1)
    params = sum(p.numel() for p in model.parameters())
    agg_params = sum(p.numel() for p in model.aggregator.parameters())
    result.update(model=model_name, params=params, aggregator_params=agg_params, height=HEIGHT, width=WIDTH)

    def images(frames: int) -> torch.Tensor:
        generator = torch.Generator(DEVICE).manual_seed(frames)
        return torch.rand(1, frames, 3, HEIGHT, WIDTH, device=DEVICE, generator=generator)

    def row(kind: str, frames: int, fn, resident: int, reps: int | None = None) -> dict:
        times, peak = _timed(fn, reps or _reps(frames))
        entry = {
            "kind": kind,
            "frames": frames,
            "reps": len(times),
            "median_s": round(statistics.median(times), 4),
            "min_s": round(min(times), 4),
            "peak_gb": round(peak / GB, 3),
            "peak_above_weights_gb": round((peak - resident) / GB, 3),
        }
        if frames in UPSTREAM and kind.startswith("aggregator"):
            entry["upstream_s"], entry["upstream_gb"] = UPSTREAM[frames]
            entry["time_ratio_vs_upstream"] = round(entry["median_s"] / UPSTREAM[frames][0], 2)
        print(
            f"  {kind:<28} {frames:>4} frames  {entry['median_s']:8.4f} s  peak {entry['peak_gb']:7.2f} GB", flush=True
        )
        result.setdefault("rows", []).append(entry)
        _empty_cache()
        return entry

    autocast = torch.autocast(DEVICE, dtype=torch.bfloat16)
    with torch.inference_mode():
        # 1. the upstream table's setting: aggregator weights in bf16
        aggregator16 = model.aggregator.to(torch.bfloat16)
        resident = _allocated()
        for frames in agg_frames:
            x = images(frames).to(torch.bfloat16)
            row("aggregator, bf16 weights", frames, lambda x=x: aggregator16(x), resident)
            del x
        model.aggregator.float()
        _empty_cache()
        # 2. what the torch backend runs: fp32 weights, bf16 autocast
        resident = _allocated()
        result["fp32_weights_gb"] = round(resident / GB, 3)
        for frames in full_frames:
            x = images(frames)
            with autocast:
                row("aggregator, bf16 autocast", frames, lambda x=x, m=model: m.aggregator(x), resident)
                row("full model, bf16 autocast", frames, lambda x=x, m=model: m(x), resident)
            del x
        for frames in memory_frames:
            x = images(frames)
            with autocast:
                row("full model, bf16 autocast", frames, lambda x=x, m=model: m(x), resident, reps=1)
            del x
        # 3. fast attention (token merging in the global attention), the same frames and settings
        from edgescene.models.vggt.token_merge import set_fast_attention

        set_fast_attention(model, True)
        for frames in full_frames:
            x = images(frames)
            with autocast:
                row("full model, bf16 autocast, fast attn", frames, lambda x=x, m=model: m(x), resident)
            del x
        set_fast_attention(model, None)
        exact = {r["frames"]: r["median_s"] for r in result["rows"] if r["kind"] == "full model, bf16 autocast"}
        fast = {
            r["frames"]: r["median_s"] for r in result["rows"] if r["kind"] == "full model, bf16 autocast, fast attn"
        }
        result["fast_attention_speedup"] = {n: round(exact[n] / fast[n], 2) for n in fast if n in exact}
        # 4. chunked DPT heads equal the unchunked ones
        x = images(16)
        with autocast:
            chunked = model(x)
            for head in (model.depth_head, model.point_head):
                head.frames_chunk_size = None
            whole = model(x)
            for head in (model.depth_head, model.point_head):
                head.frames_chunk_size = 8
        result["dpt_chunk_16_frames_max_abs_diff"] = {
            k: float((chunked[k] - whole[k]).abs().max()) for k in ("depth", "depth_conf", "world_points")
        }
        del chunked, whole, x
    del model
    _empty_cache()


def stream_section(result: dict, model_name: str, frames: int, window: int) -> None:
    """What a user runs: :func:`edgescene.runtime.reconstruct.run` with the torch CUDA backend
    (keyframe selection, preprocessing, the model, alignment, fusion; no decoding, no sink writing),
    sequential and pipelined, against the same model calls alone (back to back, nothing else running).
    The frames are (H, W, 3) uint8 arrays at the model input size, so preprocessing does not resize."""
    import numpy as np

    from edgescene.runtime.reconstruct import ReconstructConfig, Reconstructor, run
    from edgescene.runtime.session import open_session
    from edgescene.runtime.stream import sustained_model_busy

    session = open_session(model_name, device=DEVICE, height=HEIGHT, width=WIDTH)
    rec = Reconstructor(session, ReconstructConfig(window=window, overlap=2, keyframe_threshold=0.0))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8).astype(np.int16)
    shots = [
        np.clip(np.roll(base, 4 * i, axis=1) + rng.integers(-5, 6, base.shape, dtype=np.int16), 0, 255).astype(np.uint8)
        for i in range(frames)
    ]
    images = [shot.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0) for shot in shots]  # the model input
    rec.warm_up(1)  # cuDNN autotuning, allocator
    modes = {}
    sizes: list[int] = []
    for pipelined in (False, True):
        profiler = cProfile.Profile() if not pipelined else None
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        done = run(rec, shots, pipeline=pipelined)
        stream, model_hw, notes = done.stream, done.frames.model_hw, done.frames.notes
        if profiler:
            profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
            # file names relative to the checkout: the report names no folder of the machine it ran on
            lines = text.getvalue().replace(f"{ROOT}{os.sep}", "").splitlines()[:80]
            result["profile_top_cumulative"] = lines
        total = time.perf_counter() - start
        if model_hw != (HEIGHT, WIDTH) or notes:
            raise RuntimeError(f"the model ran at {model_hw}, not {HEIGHT}x{WIDTH}: {notes}")
        if len(stream.extrinsics) != frames:
            raise RuntimeError(f"{len(stream.extrinsics)} of {frames} frames were keyframes")
        rows = stream.window_timings()
        sizes = [t["frames"] for t in rows]
        stages = stream.timings
        steady = sustained_model_busy(rows)
        backend = stream.map.backend if stream.map is not None else None
        modes["pipelined" if pipelined else "sequential"] = {
            "total_s": round(total, 3),
            "model_busy_s": round(stages["model_s"], 3),
            "align_s": round(stages["align_s"], 3),
            "fusion_s": round(stages["fusion_s"], 3),
            "input_s": round(sum(stages[k] for k in ("decode_s", "keyframes_s", "preprocess_s")), 3),
            "frames_per_s": round(frames / total, 2),
            # the model's busy fraction from the second window to the third-to-last: a long video's rate
            "steady_state_model_busy": round(steady, 3) if steady is not None else None,
        }
    batches = [np.stack(images[:n]) for n in sizes]
    start = time.perf_counter()
    for batch in batches:
        session({"images": batch})
    alone = time.perf_counter() - start
    for mode in modes.values():
        mode["fraction_of_model_only_throughput"] = round(alone / mode["total_s"], 3)
    result.update(
        model=model_name,
        frames=frames,
        window=window,
        windows=len(sizes),
        model_alone_s=round(alone, 3),
        model_only_frames_per_s=round(frames / alone, 2),
        modes=modes,
        fusion_backend=backend,  # "numpy" where the image has no numba (the runtime extras bring it)
        precision=session.artifact.precision,
        what="edgescene.runtime.reconstruct.run(Reconstructor(session, window, overlap 2, every frame a keyframe), "
        "uint8 frames at the model input size, no sink): keyframe selection, preprocessing (no resize), "
        "the model, alignment and fusion",
    )
    session.close()


def threads_section(result: dict, model_name: str, frames: int) -> None:
    """Two threads on one torch CUDA session give the serial results."""
    import numpy as np

    from edgescene.runtime.session import open_session

    session = open_session(model_name, device=DEVICE, height=HEIGHT, width=WIDTH)
    rng = np.random.default_rng(1)
    feeds = [{"images": rng.random((frames, 3, HEIGHT, WIDTH), dtype=np.float32)} for _ in range(2)]
    serial = [session(f) for f in feeds]
    parallel: list[dict | None] = [None, None]
    errors: list[str] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                parallel[i] = session(feeds[i])
        except Exception as exc:  # noqa: BLE001 - recorded in the report, not swallowed
            errors.append(f"thread {i}: {exc!r}")

    workers = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    diffs = {}
    for i in range(2):
        if parallel[i] is not None:
            diffs[f"client{i}"] = {k: float(np.abs(parallel[i][k] - serial[i][k]).max()) for k in ("pose_enc", "depth")}
    result.update(model=model_name, frames=frames, errors=errors, max_abs_diff_vs_serial=diffs)
    session.close()


def markdown(report: dict) -> str:
    env = report["env"]
    lines = [
        f"# Device check, {report['date']}",
        "",
        f"{env.get('gpu', 'no GPU')} (compute {env.get('compute_capability', '-')}, {env.get('memory_gb', '-')} GB), "
        f"torch {env['torch']} (CUDA {env['torch_cuda']}), Python {env['python']}; "
        f"TensorRT {'present' if env['modules']['tensorrt'] else 'absent'}, "
        f"onnxruntime {env.get('onnxruntime', 'absent')} {env.get('onnxruntime_providers', '')}.",
        "",
    ]
    for name, section in report["sections"].items():
        if "error" in section:
            lines += [f"**{name} failed:** `{section['error']}`", ""]
    pt = report["sections"].get("pytest", {})
    if "summary" in pt:
        lines += [
            "## gpu-marked tests",
            "",
            f"`pytest -m gpu` exit {pt['returncode']} in {pt['seconds']} s: "
            f"{pt['summary'][-1] if pt['summary'] else ''}",
            "",
        ]
    vg = report["sections"].get("vggt_1b", {})
    if vg.get("rows"):
        lines += [
            f"## {vg['model']} at {HEIGHT}x{WIDTH} (H x W), random weights, SDPA",
            "",
            f"{vg['params']:,} parameters ({vg['aggregator_params']:,} in the aggregator); fp32 weights "
            f"{vg.get('fp32_weights_gb', '-')} GB. Median of the timed calls after one warm-up; "
            "peak = torch.cuda.max_memory_allocated, weights included. Upstream: the VGGT README's H100 "
            "table (aggregator only, flash attention 3).",
            "",
            "| what | frames | median s | peak GB | peak above weights GB | upstream s | upstream GB "
            "| time / upstream |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in vg["rows"]:
            lines.append(
                f"| {r['kind']} | {r['frames']} | {r['median_s']:.3f} | {r['peak_gb']:.2f} | "
                f"{r['peak_above_weights_gb']:.2f} | {r.get('upstream_s', '')} | {r.get('upstream_gb', '')} | "
                f"{r.get('time_ratio_vs_upstream', '')} |"
            )
        if "dpt_chunk_16_frames_max_abs_diff" in vg:
            lines += [
                "",
                f"Chunked (8) vs unchunked DPT heads, 16 frames, max |d|: {vg['dpt_chunk_16_frames_max_abs_diff']}",
            ]
        lines.append("")
    if vg.get("fast_attention_speedup"):
        lines += [
            f"Fast attention (token merging), full model, exact / fast time by frames: {vg['fast_attention_speedup']}",
            "",
        ]
    st = report["sections"].get("stream", {})
    if "modes" in st:
        lines += [
            "## Streaming (edgescene.runtime.reconstruct.run), torch CUDA backend",
            "",
            f"{st['frames']} frames at window {st['window']} ({st['windows']} model calls, {st['precision']}); "
            f"the same model calls alone: {st['model_alone_s']} s ({st['model_only_frames_per_s']} frames/s). "
            "Input s: keyframe selection and preprocessing (uint8 frames at the model input size, no resize).",
            "",
            f"Fusion backend: {st.get('fusion_backend')}. Steady state: the model's busy fraction from the "
            "second window to the third-to-last.",
            "",
            "| mode | total s | frames/s | x model-only throughput | steady state | model busy s | align s "
            "| fusion s | input s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, m in st["modes"].items():
            lines.append(
                f"| {name} | {m['total_s']} | {m['frames_per_s']} | {m['fraction_of_model_only_throughput']} | "
                f"{m.get('steady_state_model_busy')} | {m['model_busy_s']} | {m['align_s']} | {m['fusion_s']} "
                f"| {m.get('input_s', '')} |"
            )
        lines.append("")
    th = report["sections"].get("threads", {})
    if "max_abs_diff_vs_serial" in th:
        lines += [
            "## Two threads on one torch CUDA session",
            "",
            f"{th['frames']} frames each; errors {th['errors'] or 'none'}; max |d| vs serial "
            f"{th['max_abs_diff_vs_serial']}",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for device_check.json / .md and the pytest log")
    parser.add_argument("--model", default="vggt_1b", help="VGGT preset to time (vggt_1b; vggt_tiny for a dry run)")
    parser.add_argument("--agg-frames", default="1,2,4,8,10,20,50,100")
    parser.add_argument("--full-frames", default="1,10,50,100")
    parser.add_argument("--memory-frames", default="32,64,128")
    parser.add_argument("--stream-frames", type=int, default=64)
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: pytest,vggt_1b,stream,threads")
    parser.add_argument("--pytest-timeout", type=int, default=240)
    parser.add_argument(
        "--cpu-dry-run",
        action="store_true",
        help="run every section on the CPU (use with --model vggt_tiny): tests this script only",
    )
    args = parser.parse_args(argv)
    global DEVICE, HEIGHT, WIDTH
    if args.cpu_dry_run:
        DEVICE, HEIGHT, WIDTH = "cpu", 56, 84
    try:
        import torch
    except ImportError:
        print("device-check: no CUDA GPU can be used here (torch is not installed for this python); nothing to check")
        return 0
    if not torch.cuda.is_available() and not args.cpu_dry_run:
        print(
            f"device-check: no CUDA GPU visible to torch {torch.__version__} "
            f"(CUDA build {torch.version.cuda or 'none'}); nothing to check"
        )
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    site = ROOT
    sys.path.insert(0, str(site))
    skip = set(filter(None, args.skip.split(",")))
    ints = lambda text: [int(v) for v in text.split(",") if v]
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "env": env_section(), "sections": {}}
    print(f"device-check: {report['env'].get('gpu')} torch {torch.__version__} CUDA {torch.version.cuda}", flush=True)
    sections = {
        "pytest": lambda r: r.update(pytest_section(site, args.out, args.pytest_timeout)),
        "vggt_1b": lambda r: vggt_section(
            r, args.model, ints(args.agg_frames), ints(args.full_frames), ints(args.memory_frames)
        ),
        "stream": lambda r: stream_section(r, args.model, args.stream_frames, 8),
        "threads": lambda r: threads_section(r, args.model, 4),
    }
    failed = False
    for name, run in sections.items():
        if name in skip:
            continue
        result: dict = {}
        report["sections"][name] = result
        start = time.perf_counter()
        print(f"device-check: {name} ...", flush=True)
        try:
            run(result)
        except Exception as exc:  # noqa: BLE001 - recorded in the report; the other sections still run
            failed = True
            result["error"] = f"{type(exc).__name__}: {exc}"
            result["traceback"] = traceback.format_exc()
            print(result["traceback"], flush=True)
        result["section_s"] = round(time.perf_counter() - start, 1)
        (args.out / "device_check.json").write_text(json.dumps(report, indent=2))
        (args.out / "device_check.md").write_text(markdown(report))
    print(markdown(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
