"""The benchmark suite: every export format of one model beside its PyTorch reference, same run.

    edgescene bench --model vggt_tiny --formats onnx,onnx-fp16,onnx-int8 --frames 1,2,4 \\
        --height 56 --width 84 --out bench_out [--quick] [--runs N] [--dataset HELDOUT_DIR]

For each requested format of :data:`edgescene.export.formats.FORMATS` the model is exported with
:func:`edgescene.export.pipeline.export_model` into ``OUT/artifacts/<format>`` (status from the
parity gate: ``accepted`` / ``rejected``; ``failed: <error>`` when the export raises; ``skipped:
<reason>`` when the format's tools or hardware are missing here). A ``pytorch`` row runs the eager
model through :func:`edgescene.runtime.session.open_session`'s torch backend.

Protocol (per format and frame count): ``warmup`` untimed calls, then ``runs`` timed calls; each
call is synchronous (the session returns numpy arrays), so host<->device copies are included and
preprocessing is not (inputs are ready-made float32 arrays). Each row runs in its own worker
process (:mod:`edgescene.bench.worker`), so its peak memory is its own. Reported: median, p95,
sigma-clipped mean and std per call, per frame, throughput (frames/s), the peak resident memory
(VmHWM, reset before each frame count where the kernel allows it) and the activation memory
(peak minus the RSS with the model loaded). Speedups are against the PyTorch row of the same run.
A failing format or frame count becomes a row status, never a crash.

After the rows: the scale section (:mod:`edgescene.bench.scale`: growth of time and memory with
the frame count, and a long streaming run through the runtime reconstructor).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgescene.core.atomic import atomic_write_text

PYTORCH = "pytorch"
FAST = "+fast"  # suffix of a row run with fast attention (token merging in VGGT's global attention)
STREAM_WINDOW, STREAM_OVERLAP = 8, 2  # the streaming section's window: the runtime's defaults
STREAM_RENDER_SCALE = 0.5  # the synthetic video at half the model input (rendering is excluded but takes wall time)
STREAM_WARMUP_CALLS = 2  # blank windows before frame 1: frame 10 is then in the steady state
# The streaming section reserves the point map's bound (2 M points) up front (--reserve-map), as a
# long-running stream should: memory is then flat from frame 1 instead of growing with the map.
QUICK = {"warmup": 1, "runs": 3, "min_runs": 3, "budget_s": 0.0}
DEFAULT = {"warmup": 2, "runs": 20, "min_runs": 5, "budget_s": 3.0}


# ------------------------------------------------------------------------------------ records
@dataclass
class Timing:
    """Per-call latency statistics in milliseconds over ``runs`` timed calls."""

    runs: int
    warmup: int
    median_ms: float
    p95_ms: float
    mean_ms: float  # sigma-clipped mean
    std_ms: float  # std of the clipped samples
    min_ms: float
    samples_ms: list[float] = field(default_factory=list)


@dataclass
class FrameResult:
    """One format at one frame count."""

    frames: int
    status: str  # "ok" or "failed: <error>"
    timing: Timing | None = None
    per_frame_ms: float | None = None  # median per call / frames
    throughput_fps: float | None = None  # frames / median call
    peak_rss_mb: float | None = None  # VmHWM around the runs
    rss_before_mb: float | None = None  # RSS once the session was open, before its first call
    activation_mb: float | None = None  # peak_rss_mb - rss_before_mb: what running at this size adds
    speedup_vs_pytorch: float | None = None  # pytorch median / this median, same frames


@dataclass
class FormatRow:
    """One format (or the PyTorch reference) with its export and all its measurements."""

    format: str
    status: str  # accepted | rejected | failed: ... | skipped: ... | reference (pytorch)
    precision: str | None = None
    backend: str | None = None
    device: str | None = None
    artifact: str | None = None
    size_mb: float | None = None
    parity_p99_abs: float | None = None  # worst p99 |candidate - pytorch| over outputs and gate cases
    parity_p99_normalised: float | None = None
    export_s: float | None = None
    results: list[FrameResult] = field(default_factory=list)
    accuracy: dict[str, Any] | None = None  # abs_rel, auc_30, ... means, or {"error": ...}
    attention: str = "exact"  # "fast": token merging in VGGT's global attention (format name ends in +fast)
    block_profile: dict[str, float] | None = None  # PyTorch rows: seconds in frame / global blocks, largest frames
    gate: dict[str, Any] | None = None  # fp16 / int8 rows: the gate's decoded checks, worst case, on this CPU
    quantization: dict[str, Any] | None = None  # int8 rows: artifact.json's "quantization" (schemes, portability)

    @property
    def ok(self) -> bool:
        return self.status in ("accepted", "reference")

    def result(self, frames: int) -> FrameResult | None:
        return next((r for r in self.results if r.frames == frames), None)


@dataclass
class BenchConfig:
    model: str
    formats: list[str]
    frames: list[int]
    height: int
    width: int
    out: str
    runs: int | None = None
    warmup: int | None = None
    quick: bool = False
    dataset: str | None = None
    device: str = "auto"
    weights: str | None = None
    max_sequences: int | None = None
    seed: int = 0
    stream_frames: int | None = None  # streaming section length; None: 300 (quick: 30); 0: no streaming section
    stream_format: str | None = None  # which row streams; None: the first accepted onnxruntime row, else pytorch
    attention: tuple[str, ...] = ("exact",)  # the attention axis: ("exact", "fast") adds a fast twin of every row

    def __post_init__(self) -> None:
        self.attention = tuple(self.attention)
        if not self.attention or "exact" not in self.attention or set(self.attention) - {"exact", "fast"}:
            raise ValueError(
                f"attention must be exact, or exact and fast (each fast row is compared with its exact twin), "
                f"got {self.attention}"
            )
        if self.stream_frames is not None and self.stream_frames < 0:
            raise ValueError(f"stream_frames must be >= 0 (0 disables the streaming section), got {self.stream_frames}")
        if not self.frames or any(f < 1 for f in self.frames):
            raise ValueError(f"frames must be positive integers, got {self.frames}")
        if self.runs is not None and self.runs < 1:
            raise ValueError(f"runs must be >= 1, got {self.runs}")
        if self.warmup is not None and self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")

    @property
    def streaming_frames(self) -> int:
        if self.stream_frames is not None:
            return self.stream_frames
        return 30 if self.quick else 300

    @property
    def protocol(self) -> dict[str, Any]:
        """Warm-up calls, then between ``min_runs`` and ``runs`` timed calls (stopping once ``budget_s``
        seconds are spent). An explicit ``runs`` means exactly that many."""
        base = QUICK if self.quick else DEFAULT
        if self.runs is not None:
            return {
                "warmup": base["warmup"] if self.warmup is None else self.warmup,
                "runs": self.runs,
                "min_runs": self.runs,
                "budget_s": None,
            }
        return {**base, "warmup": base["warmup"] if self.warmup is None else self.warmup}


@dataclass
class BenchReport:
    config: BenchConfig
    machine: dict[str, Any]
    rows: list[FormatRow]
    notes: list[str] = field(default_factory=list)
    created_utc: str = ""
    elapsed_s: float = 0.0
    batch_scale: list[Any] = field(default_factory=list)  # edgescene.bench.scale.BatchScale per timed row
    stream: Any = None  # edgescene.bench.scale.StreamScale

    def row(self, name: str) -> FormatRow | None:
        return next((r for r in self.rows if r.format == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "edgescene.bench",
            "version": 1,
            "config": asdict(self.config),
            "protocol": self.config.protocol,
            "machine": self.machine,
            "notes": self.notes,
            "created_utc": self.created_utc,
            "elapsed_s": self.elapsed_s,
            "rows": [asdict(r) for r in self.rows],
            "scale": {
                "batch": [asdict(b) for b in self.batch_scale],
                "streaming": asdict(self.stream) if self.stream is not None else None,
            },
        }


# ---------------------------------------------------------------------------------- measuring
def sigma_clipped(values: Sequence[float], sigma: float = 3.0, iterations: int = 5) -> tuple[float, float]:
    """(mean, std) of ``values`` after iteratively dropping samples beyond ``sigma`` std of the mean."""
    data = np.asarray(values, np.float64)
    for _ in range(iterations):
        mean, std = data.mean(), data.std()
        keep = np.abs(data - mean) <= sigma * std if std > 0 else np.ones_like(data, bool)
        if keep.all():
            break
        data = data[keep]
    return float(data.mean()), float(data.std())


def timing_stats(samples_s: Sequence[float], warmup: int) -> Timing:
    ms = np.asarray(samples_s, np.float64) * 1e3
    mean, std = sigma_clipped(ms)
    return Timing(
        runs=len(ms),
        warmup=warmup,
        median_ms=float(np.median(ms)),
        p95_ms=float(np.percentile(ms, 95)),
        mean_ms=mean,
        std_ms=std,
        min_ms=float(ms.min()),
        samples_ms=[round(float(v), 4) for v in ms],
    )


def rss_mb() -> tuple[float | None, float | None]:
    """(VmRSS, VmHWM) of this process in MiB from /proc/self/status; (None, None) off Linux."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None, None
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS"), fields.get("VmHWM")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs). False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(
    session,
    frames: int,
    height: int,
    width: int,
    warmup: int,
    runs: int,
    seed: int = 0,
    min_runs: int | None = None,
    budget_s: float | None = None,
    baseline_mb: float | None = None,
) -> FrameResult:
    """Warm-up, then timed synchronous calls of ``session`` on ``frames`` random frames.

    Up to ``runs`` calls; with ``budget_s``, timing stops once ``min_runs`` calls are done and
    ``budget_s`` seconds have been spent (slow configurations get fewer, still several, samples).
    Peak memory (VmHWM) is reset before the warm-up, so it covers this frame count's first call
    (where allocators grow) too; ``baseline_mb`` is the RSS before the session's first call.
    """
    spec = session.input_spec()[0]
    images = np.random.default_rng(seed).random((frames, 3, height, width), dtype=np.float32)
    feeds = {spec.name: images}
    reset_peak_rss()
    for _ in range(warmup):
        session(feeds)
    samples = []
    spent = 0.0
    min_runs = runs if min_runs is None else min(min_runs, runs)
    while len(samples) < runs and not (budget_s is not None and len(samples) >= min_runs and spent >= budget_s):
        start = time.perf_counter()
        session(feeds)  # returns numpy: device->host copies are inside the timing
        samples.append(time.perf_counter() - start)
        spent += samples[-1]
    _, peak = rss_mb()
    timing = timing_stats(samples, warmup)
    activation = None if peak is None or baseline_mb is None else round(max(peak - baseline_mb, 0.0), 2)
    return FrameResult(
        frames=frames,
        status="ok",
        timing=timing,
        per_frame_ms=timing.median_ms / frames,
        throughput_fps=frames / (timing.median_ms / 1e3),
        peak_rss_mb=peak,
        rss_before_mb=baseline_mb,
        activation_mb=activation,
    )


def _error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# ------------------------------------------------------------------------------------ machine
def int8_cpu() -> dict[str, str]:
    """The int8 side of this CPU: its instruction set, read from the CPU flags, and what onnxruntime's
    uint8 x int8 kernels do here (measured: exact, or saturating on x86 without VNNI)."""
    from edgescene.export.int8_portability import cpu_instruction_set, u8s8_kernels_saturate

    return {
        "instruction_set": cpu_instruction_set(),
        "u8s8_kernels": "saturating (x86 without VNNI)" if u8s8_kernels_saturate() else "exact",
    }


def gate_summary(parity: dict[str, Any]) -> dict[str, Any] | None:
    """The decoded checks of an artifact's gate (``artifact.json`` ``parity``), worst case over its frame
    counts, and the one closest to its limit (``worst``: metric, value, limit, fraction of the limit)."""
    from edgescene.export.parity import LOWER_BOUNDS  # the cosines: the smallest value is the worst

    cases = [c for c in parity.get("cases", []) if c.get("checks")]
    if not cases:
        return None
    limits = parity.get("limits", {})
    checks: dict[str, float] = {}
    for case in cases:
        for metric, value in case["checks"].items():
            pick = min if metric in LOWER_BOUNDS else max
            checks[metric] = pick(checks.get(metric, value), value)

    def used(metric: str) -> float:  # share of the allowed error spent (lower bounds: of 1 - limit)
        limit, value = limits.get(metric), checks[metric]
        if not limit:
            return 0.0
        return (1 - value) / max(1 - limit, 1e-12) if metric in LOWER_BOUNDS else value / limit

    worst = max(checks, key=used)
    return {
        "passed": bool(parity.get("passed")),
        "checks": checks,
        "limits": {k: limits[k] for k in checks if k in limits},
        "worst": {"metric": worst, "value": checks[worst], "limit": limits.get(worst), "used": round(used(worst), 4)},
    }


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str] = {}
    from edgescene import __version__

    versions["edgescene"] = __version__
    for name in ("numpy", "torch", "onnx", "onnxruntime", "tensorrt"):
        with contextlib.suppress(ImportError, AttributeError):  # absent, or without a version: not listed
            versions[name] = __import__(name).__version__
    info["versions"] = versions
    with contextlib.suppress(ImportError):  # without onnxruntime there are no int8 rows to explain
        info["int8"] = int8_cpu()
    info["gpu"] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    try:
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        pass
    return info


# -------------------------------------------------------------------------------------- suite
def _export_row(config: BenchConfig, name: str, log: Callable[[str], None], fast: bool = False) -> FormatRow:
    """Export ``name`` into OUT/artifacts/<name> (``fast``: with fast attention, into <name>+fast);
    the row's status says how it went."""
    from edgescene.export.formats import get_format
    from edgescene.export.pipeline import ExportConfig, export_model, preflight

    row = FormatRow(format=name, status="failed")
    try:
        fmt = get_format(name)
    except ValueError as exc:
        row.status = f"failed: {exc}"
        return row
    row.format, row.backend, row.precision = fmt.name + (FAST if fast else ""), fmt.backend, fmt.default_precision
    row.attention = "fast" if fast else "exact"
    try:
        preflight(fmt)
    except (ImportError, RuntimeError) as exc:
        row.status = f"skipped: {_error(exc)}"
        return row
    low, high = min(config.frames), max(config.frames)
    top = max(high, STREAM_WINDOW) if config.streaming_frames else high  # the streaming section runs windows
    target = Path(config.out) / "artifacts" / row.format
    try:
        result = export_model(
            ExportConfig(
                model=config.model,
                format=fmt.name,
                out=str(target),
                weights=config.weights,
                frames_range=(low, high, top),
                height=config.height,
                width=config.width,
                overwrite=True,
                fast_attention=fast,
            ),
            log=log,
        )
    except Exception as exc:  # noqa: BLE001 - a failed export is a row, not a crash
        log(traceback.format_exc())
        row.status = f"failed: {_error(exc)}"
        return row
    row.status = "accepted" if result.accepted else "rejected"
    row.artifact = str(result.folder)
    row.precision = result.artifact.precision
    row.size_mb = round(sum(result.sizes_mb.values()), 3)
    row.export_s = result.elapsed_s
    errors = [o for c in result.report.cases for o in c.outputs]
    if errors:
        row.parity_p99_abs = float(max(o.p99_abs for o in errors))
        row.parity_p99_normalised = float(max(o.p99_normalised for o in errors))
    row.gate = gate_summary(result.artifact.parity)
    row.quantization = result.artifact.quantization or None
    return row


def _run_row(
    row: FormatRow, config: BenchConfig, model: str, options: dict[str, Any] | None, log: Callable[[str], None]
) -> None:
    """Measure every frame count of ``model`` in a fresh process (:mod:`edgescene.bench.worker`);
    failures, crashes included, stay in the row."""
    import subprocess
    import sys
    import tempfile

    spec = {
        "model": str(model),
        "device": config.device,
        "options": options or {},
        "frames": config.frames,
        "height": config.height,
        "width": config.width,
        "protocol": config.protocol,
        "seed": config.seed,
        "block_profile": row.backend == "torch",
    }
    with tempfile.TemporaryDirectory(prefix="edgescene-bench-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.run(
            [sys.executable, "-m", "edgescene.bench.worker", str(spec_path), str(out_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for line in proc.stderr.splitlines():
            if line.startswith("bench:"):
                log(line)
        if proc.returncode != 0 or not out_path.is_file():
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            reason = lines[-1][:300] if lines else f"worker exited with {proc.returncode}"
            row.results = [FrameResult(frames=n, status=f"failed: {reason}") for n in config.frames]
            return
        data = json.loads(out_path.read_text())
    row.backend, row.device = data["backend"], data["device"]
    row.block_profile = data.get("block_profile")
    for r in data["results"]:
        timing = r.pop("timing", None)
        row.results.append(FrameResult(**r, timing=Timing(**timing) if timing else None))


def _artifact_row(config: BenchConfig) -> tuple[FormatRow | None, str | None]:
    """(row, preset) when ``config.model`` is an artifact folder (input size taken from it), else (None, None).

    Frame counts outside the artifact's range stay requested and end as failed results of its row.
    """
    from edgescene.core.artifact import ARTIFACT_JSON, read_artifact

    folder = Path(config.model)
    if not (folder / ARTIFACT_JSON).is_file():
        return None, None
    art = read_artifact(folder)  # ArtifactError for rejected / incomplete folders: nothing to time
    config.height, config.width = int(art.input_size["height"]), int(art.input_size["width"])
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
    errors = [o for c in (art.parity or {}).get("cases", []) for o in c.get("outputs", [])]
    row = FormatRow(
        format=art.format,
        status="accepted",
        precision=art.precision,
        backend=art.backend,
        artifact=str(folder),
        size_mb=round(size, 3),
        parity_p99_abs=max((o["p99_abs"] for o in errors), default=None),
        parity_p99_normalised=max((o["p99_normalised"] for o in errors), default=None),
        gate=gate_summary(art.parity or {}),
        quantization=art.quantization or None,
    )
    return row, art.model["preset"]


def _accuracy(model: str, config: BenchConfig, options: dict[str, Any] | None) -> dict[str, Any]:
    from edgescene.bench.accuracy import evaluate

    options = dict(options or {})
    fast = bool(options.pop("fast_attention", False))
    try:
        report = evaluate(
            model,
            config.dataset,
            frames=max(config.frames),
            device=config.device,
            max_sequences=config.max_sequences,
            session_options=options,
            fast_attention=fast,
        )
    except Exception as exc:  # noqa: BLE001
        return {"error": _error(exc)}
    means = next(iter(report.means().values()))
    return {k: v for k, v in means.items()}


def run_bench(config: BenchConfig, log: Callable[[str], None] = print) -> BenchReport:
    """Export, time and (optionally) score every requested format beside the PyTorch reference."""
    from datetime import datetime, timezone

    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    quiet = lambda s: None
    report = BenchReport(
        config=config,
        machine=machine_info(),
        rows=[],
        notes=[
            "latency: synchronous session calls on ready float32 arrays; host<->device copies included, "
            "preprocessing (decode, resize, normalise) excluded",
            f"protocol: {config.protocol['warmup']} warm-up calls, then {config.protocol['min_runs']} to "
            f"{config.protocol['runs']} timed calls (stopping after {config.protocol['budget_s']} s where set); "
            "median, p95, 3-sigma-clipped mean",
            "peak_rss_mb: the process's VmHWM after the timed runs (reset before them where the kernel allows)",
            "rejected / failed / skipped formats are not timed",
        ],
    )
    artifact, preset = _artifact_row(config)
    reference_model = config.model
    if artifact is not None:  # an exported folder: time it as is, beside the preset it was exported from
        reference_model = preset
        report.notes.append(
            f"--model is an artifact folder: it is timed as exported (--formats ignored); the "
            f"pytorch row is preset {reference_model} at the artifact's input size"
        )
    # PyTorch reference first: the same eager model every export starts from.
    torch_options = {"height": config.height, "width": config.width, "max_frames": max(config.frames)}
    if config.weights:
        torch_options["weights"] = config.weights
    reference = FormatRow(format=PYTORCH, status="reference", precision="fp32", backend="torch")
    log(f"bench: {PYTORCH} (eager reference)")
    _run_row(reference, config, reference_model, torch_options, log)
    if config.dataset:
        reference.accuracy = _accuracy(reference_model, config, torch_options)
    report.rows.append(reference)
    fast_options = {**torch_options, "fast_attention": True}
    if "fast" in config.attention:
        fast_reference = FormatRow(
            format=PYTORCH + FAST, status="reference", precision="fp32", backend="torch", attention="fast"
        )
        log(f"bench: {PYTORCH + FAST} (eager, token merging in the global attention)")
        _run_row(fast_reference, config, reference_model, fast_options, log)
        if config.dataset:
            fast_reference.accuracy = _accuracy(reference_model, config, fast_options)
        report.rows.append(fast_reference)

    if artifact is not None:
        _run_row(artifact, config, config.model, None, log)
        if config.dataset:
            artifact.accuracy = _accuracy(config.model, config, None)
        report.rows.append(artifact)
    for name in [] if artifact is not None else dict.fromkeys(config.formats):
        if name == PYTORCH:
            continue
        log(f"bench: exporting {name}")
        row = _export_row(config, name, quiet)
        log(f"bench: {name}: {row.status}")
        if row.ok and row.backend == "triton":
            row.status = (
                "accepted (not timed: served by Triton Inference Server; its model.onnx is the onnx row's graph)"
            )
        elif row.ok:
            _run_row(row, config, row.artifact, None, log)
            if config.dataset:
                row.accuracy = _accuracy(row.artifact, config, None)
        report.rows.append(row)
        if "fast" in config.attention and row.ok and row.backend != "triton":
            log(f"bench: exporting {name}{FAST}")
            fast_row = _export_row(config, name, quiet, fast=True)
            log(f"bench: {fast_row.format}: {fast_row.status}")
            if fast_row.ok:
                _run_row(fast_row, config, fast_row.artifact, None, log)
                if config.dataset:
                    fast_row.accuracy = _accuracy(fast_row.artifact, config, {"fast_attention": True})
            report.rows.append(fast_row)

    for row in report.rows:  # speedups against the reference measured above
        for result in row.results:
            ref = reference.result(result.frames)
            if result.timing and ref is not None and ref.timing:
                result.speedup_vs_pytorch = ref.timing.median_ms / result.timing.median_ms
    from edgescene.bench.scale import batch_scale

    report.batch_scale = [b for b in (batch_scale(r) for r in report.rows) if b is not None]
    if config.streaming_frames:
        report.stream = _streaming(report, config, torch_options, reference_model, log)
    report.created_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report.elapsed_s = round(time.perf_counter() - start, 2)
    atomic_write_text(out / "bench.json", json.dumps(report.to_json(), indent=1))
    return report


def _stream_row(report: BenchReport, config: BenchConfig) -> FormatRow | None:
    if config.stream_format:
        row = report.row(config.stream_format)
        if row is None:
            raise ValueError(
                f"--stream-format {config.stream_format!r} is not a row of this run "
                f"(rows: {', '.join(r.format for r in report.rows)})"
            )
        return row
    return next((r for r in report.rows if r.ok and r.backend == "onnxruntime" and r.artifact), None)


def _streaming(
    report: BenchReport,
    config: BenchConfig,
    torch_options: dict[str, Any],
    reference_model: str,
    log: Callable[[str], None],
):
    """The streaming section: a long synthetic video through the runtime reconstructor, one row's model."""
    from edgescene.bench import streaming_memory
    from edgescene.bench.scale import StreamScale, stream_label

    frames = config.streaming_frames
    try:
        row = _stream_row(report, config)
        if row is not None and row.format != PYTORCH:
            if not (row.ok and row.artifact):
                raise ValueError(f"row {row.format} has no accepted artifact ({row.status})")
            model, options, name = row.artifact, {}, row.format
        else:  # no exported row: stream with the eager model
            model, options, name = reference_model, dict(torch_options), PYTORCH
            options["max_frames"] = max(options.get("max_frames", STREAM_WINDOW), STREAM_WINDOW)
        log(f"bench: streaming {frames} synthetic frames through {name}")
        data = streaming_memory.run(
            model,
            frames,
            width=config.width,
            height=config.height,
            window=STREAM_WINDOW,
            overlap=STREAM_OVERLAP,
            seed=config.seed + 3,
            max_points=2_000_000,
            checkpoints=(10, 100),
            session_options=options,
            log=log,
            device=config.device,
            render_scale=STREAM_RENDER_SCALE,
            warmup_calls=STREAM_WARMUP_CALLS,
            reserve_map=True,
        )
    except Exception as exc:  # noqa: BLE001 - a failed section is reported, not a crash
        log(traceback.format_exc())
        return StreamScale(
            model=config.model,
            format=config.stream_format or "?",
            frames=frames,
            size=[config.height, config.width],
            window=STREAM_WINDOW,
            overlap=STREAM_OVERLAP,
            backend="",
            checkpoints={},
            latency_change=float("nan"),
            rss_change=float("nan"),
            latency_label="–",
            memory_label="–",
            render_s_excluded=0.0,
            error=_error(exc),
        )
    return StreamScale(
        model=str(model),
        format=name,
        frames=frames,
        size=data["size"],
        window=data["window"],
        overlap=data["overlap"],
        backend=data["backend"],
        checkpoints=data["checkpoints"],
        latency_change=data["latency_change"],
        rss_change=data["rss_change"],
        latency_label=stream_label(data["latency_change"]),
        memory_label=stream_label(data["rss_change"]),
        render_s_excluded=data["render_s_excluded"],
        samples=data["samples"],
        render_size=data["render_size"],
        warmup_calls=data["warmup_calls"],
        reserve_map=data["reserve_map"],
        pipelined=data["pipelined"],
        fps=data["fps"],
        model_only_fps=data["model_only_fps"],
    )


__all__ = [
    "BenchConfig",
    "BenchReport",
    "FormatRow",
    "FrameResult",
    "Timing",
    "gate_summary",
    "int8_cpu",
    "machine_info",
    "measure",
    "run_bench",
    "sigma_clipped",
    "timing_stats",
]
