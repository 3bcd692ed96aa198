"""Render a :class:`edgescene.bench.suite.BenchReport` to ``report.md`` and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgescene.bench.suite import BenchReport, FormatRow


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 10 ** -digits or abs(value) >= 1e6):
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in body]


def _short(text: str, limit: int = 120) -> str:
    text = text.replace("|", "/")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def machine_header(report: BenchReport) -> list[str]:
    m, c = report.machine, report.config
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    return [
        f"# Benchmark: {c.model} at {c.height}x{c.width}",
        "",
        "## Machine",
        "",
        f"- CPU: {m.get('cpu')} ({m.get('cores')} cores; torch threads {m.get('torch_threads', '–')})",
        f"- GPU: {m.get('gpu') or 'none'}" + (f" (CUDA {m['cuda']})" if m.get("cuda") else ""),
        f"- Platform: {m.get('platform')}, Python {m.get('python')}",
        f"- Libraries: {versions}",
        f"- onnxruntime providers: {', '.join(m.get('onnxruntime_providers', [])) or '–'}",
        f"- Device requested: {c.device}; created {report.created_utc}; suite ran {report.elapsed_s:.1f} s",
        "",
        "Latencies include host<->device copies (each call takes and returns host numpy arrays) and exclude "
        "preprocessing (decoding, resizing, normalisation): inputs are ready float32 arrays. "
        f"Protocol: {report.config.protocol['warmup']} warm-up calls, then {report.config.protocol['runs']} "
        "timed calls per format and frame count; median, p95 and a 3-sigma-clipped mean.",
        "",
    ]


def _per_frames(report: BenchReport, title: str, fn, digits: int = 2) -> list[str]:
    frames = report.config.frames
    body = []
    for row in report.rows:
        cells = [f"`{row.format}`"]
        for n in frames:
            r = row.result(n)
            cells.append(_cell(fn(r), digits) if r is not None and r.status == "ok" else
                         ("–" if r is None else r.status.split(":")[0]))
        body.append(cells)
    return [f"## {title}", ""] + _table(["format"] + [f"{n} frame{'s' * (n > 1)}" for n in frames], body) + [""]


def render_markdown(report: BenchReport, plots: list[str]) -> str:
    lines = machine_header(report)
    lines += ["## Formats", ""]
    lines += _table(["format", "status", "precision", "backend / device", "size MB", "parity p99 |d|", "export s"],
                    [[f"`{r.format}`", _short(r.status), _cell(r.precision), f"{r.backend or '–'} / {r.device or '–'}",
                      _cell(r.size_mb), (f"{r.parity_p99_abs:.2e}" if r.parity_p99_abs is not None else "–"), _cell(r.export_s, 1)] for r in report.rows])
    lines.append("")
    lines += _per_frames(report, "Latency per call, median (ms)", lambda r: r.timing.median_ms)
    lines += _per_frames(report, "Latency per call, p95 (ms)", lambda r: r.timing.p95_ms)
    lines += _per_frames(report, "Latency per call, sigma-clipped mean ± std (ms)",
                         lambda r: f"{r.timing.mean_ms:.2f} ± {r.timing.std_ms:.2f}")
    lines += _per_frames(report, "Latency per frame, median (ms)", lambda r: r.per_frame_ms)
    lines += _per_frames(report, "Throughput (frames/s)", lambda r: r.throughput_fps, 1)
    lines += _per_frames(report, "Speedup vs PyTorch (same run, median)", lambda r: r.speedup_vs_pytorch)
    lines += _per_frames(report, "Peak host memory, VmHWM (MiB)", lambda r: r.peak_rss_mb, 0)
    accuracy = [r for r in report.rows if r.accuracy]
    if accuracy:
        lines += ["## Accuracy", "", f"Dataset: `{report.config.dataset}`, {max(report.config.frames)} frames "
                  "per sequence.", ""]
        lines += _table(["format", "AbsRel ↓", "AUC@30 ↑", "sequences"],
                        [[f"`{r.format}`", _cell(r.accuracy.get("abs_rel"), 4), _cell(r.accuracy.get("auc_30"), 4),
                          _cell(r.accuracy.get("sequences"), 0)] if "error" not in r.accuracy
                         else [f"`{r.format}`", f"failed: {r.accuracy['error']}".replace("|", "/"), "–", "–"]
                         for r in accuracy])
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(lines)


def _timed(rows: list[FormatRow]) -> list[FormatRow]:
    return [r for r in rows if any(x.timing for x in r.results)]


def render_plots(report: BenchReport, out: Path) -> list[str]:
    """latency_vs_frames.png (and accuracy_vs_speed.png when accuracy was measured). Empty without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    rows = _timed(report.rows)
    if rows:
        fig, ax = plt.subplots(figsize=(6, 4))
        for row in rows:
            points = [(r.frames, r.timing.median_ms) for r in row.results if r.timing]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=row.format)
        ax.set_xlabel("frames per call")
        ax.set_ylabel("median latency per call (ms)")
        ax.set_title(f"{report.config.model} {report.config.height}x{report.config.width}")
        ax.set_xticks(report.config.frames)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / "latency_vs_frames.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))
    scored = [r for r in rows if r.accuracy and r.accuracy.get("abs_rel") is not None]
    if scored:
        frames = max(report.config.frames)
        fig, ax = plt.subplots(figsize=(6, 4))
        for row in scored:
            r = row.result(frames)
            if r is None or r.timing is None:
                continue
            ax.scatter(r.throughput_fps, row.accuracy["abs_rel"], label=row.format)
            ax.annotate(row.format, (r.throughput_fps, row.accuracy["abs_rel"]), fontsize=8)
        ax.set_xlabel(f"throughput at {frames} frames (frames/s)")
        ax.set_ylabel("depth AbsRel (lower is better)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / "accuracy_vs_speed.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))
    return written


def write_report(report: BenchReport, out: str | Path) -> Path:
    """Write ``report.md`` and the plots into ``out``; returns the Markdown path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = render_plots(report, out)
    path = out / "report.md"
    path.write_text(render_markdown(report, plots))
    return path
