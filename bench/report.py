"""Render a :class:`edgescene.bench.suite.BenchReport` to ``report.md`` and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgescene.bench.suite import FAST, BenchReport, FormatRow


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 10**-digits or abs(value) >= 1e6):
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in body]


def _short(text: str, limit: int = 120) -> str:
    text = text.replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int8_line(machine: dict[str, Any]) -> list[str]:
    int8 = machine.get("int8")
    if not int8:
        return []
    return [f"- int8: {int8['instruction_set']}; onnxruntime's uint8 x int8 kernels here: {int8['u8s8_kernels']}"]


def machine_header(report: BenchReport) -> list[str]:
    m, c = report.machine, report.config
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    return [
        f"# Benchmark: {c.model} at {c.height}x{c.width}",
        "",
        "## Machine",
        "",
        f"- CPU: {m.get('cpu')} ({m.get('cores')} cores; torch threads {m.get('torch_threads', '–')})",
        *_int8_line(m),
        f"- GPU: {m.get('gpu') or 'none'}" + (f" (CUDA {m['cuda']})" if m.get("cuda") else ""),
        f"- Platform: {m.get('platform')}, Python {m.get('python')}",
        f"- Libraries: {versions}",
        f"- onnxruntime providers: {', '.join(m.get('onnxruntime_providers', [])) or '–'}",
        f"- Device requested: {c.device}; created {report.created_utc}; suite ran {report.elapsed_s:.1f} s",
        "",
        "Latencies include host<->device copies (each call takes and returns host numpy arrays) and exclude "
        "preprocessing (decoding, resizing, normalisation): inputs are ready float32 arrays. "
        f"Protocol: {report.config.protocol['warmup']} warm-up calls, then {report.config.protocol['min_runs']} to "
        f"{report.config.protocol['runs']} timed calls per format and frame count; median, p95 and a "
        "3-sigma-clipped mean. Speedups are ratios of medians measured in this same run.",
        "",
    ]


def _per_frames(report: BenchReport, title: str, fn, digits: int = 2) -> list[str]:
    frames = report.config.frames
    body = []
    for row in report.rows:
        cells = [f"`{row.format}`"]
        for n in frames:
            r = row.result(n)
            cells.append(
                _cell(fn(r), digits)
                if r is not None and r.status == "ok"
                else ("–" if r is None else r.status.split(":")[0])
            )
        body.append(cells)
    return [f"## {title}", ""] + _table(["format"] + [f"{n} frame{'s' * (n > 1)}" for n in frames], body) + [""]


def _largest_common(report: BenchReport, a: FormatRow, b: FormatRow):
    frames = [
        n
        for n in sorted(report.config.frames, reverse=True)
        if a.result(n) and a.result(n).timing and b.result(n) and b.result(n).timing
    ]
    return frames[0] if frames else None


ATTENTION_GOALS = {"pytorch": 1.5, "onnx": 1.4}  # end-to-end speedup of fast over exact attention
ATTENTION_GOAL_FRAMES = 128  # ... in a batch of this many frames or more


def _attention_targets(report: BenchReport) -> list[dict]:
    """Fast attention: end-to-end speedups, global blocks >= 3x, AbsRel within 0.01, AUC@30 within 0.02."""
    out = []
    for exact, fast in attention_pairs(report):
        n = _largest_common(report, exact, fast)
        if n is None:
            continue
        ratio = exact.result(n).timing.median_ms / fast.result(n).timing.median_ms
        goal = ATTENTION_GOALS.get(exact.format)
        judged = goal is not None and n >= ATTENTION_GOAL_FRAMES  # the goals are set for many-frame batches
        out.append(
            {
                "target": f"`{fast.format}` end to end vs exact at {n} frames"
                + (f" (goal >= {goal}x at {ATTENTION_GOAL_FRAMES}+ frames)" if goal else ""),
                "measured": f"{ratio:.2f}x",
                "met": ratio >= goal if judged else None,
                "value": ratio,
            }
        )
        ge, gf = (exact.block_profile or {}).get("global_blocks_s"), (fast.block_profile or {}).get("global_blocks_s")
        if ge and gf:
            out.append(
                {
                    "target": f"`{fast.format}` global-attention blocks alone >= 3x faster "
                    f"({max(report.config.frames)} frames)",
                    "measured": f"{ge / gf:.2f}x ({ge:.3f} -> {gf:.3f} s)",
                    "met": ge / gf >= 3.0,
                    "value": ge / gf,
                }
            )
        acc_e, acc_f = exact.accuracy or {}, fast.accuracy or {}
        for key, label, limit in (("abs_rel", "depth AbsRel", 0.01), ("auc_30", "AUC@30", 0.02)):
            if acc_e.get(key) is not None and acc_f.get(key) is not None:
                d = abs(acc_f[key] - acc_e[key])
                out.append(
                    {
                        "target": f"`{fast.format}` {label} within {limit} of exact",
                        "measured": f"|Δ| = {d:.4f}",
                        "met": d <= limit,
                        "value": d,
                    }
                )
    return out


def targets(report: BenchReport) -> list[dict]:
    """The issue's CPU and streaming targets, checked against this run's numbers (ratios of one run)."""
    out = []
    ref = report.row("pytorch")

    def speed(name: str, goal: float):
        row = report.row(name)
        if ref is None or row is None:
            return
        n = _largest_common(report, ref, row)
        if n is None:
            out.append({"target": f"{name} >= {goal}x PyTorch eager", "measured": row.status, "met": None})
            return
        ratio = row.result(n).speedup_vs_pytorch
        out.append(
            {
                "target": f"{name} >= {goal}x PyTorch eager",
                "measured": f"{ratio:.2f}x at {n} frames",
                "met": ratio >= goal,
                "value": ratio,
            }
        )

    speed("onnx", 1.4)
    speed("onnx-int8", 2.5)
    speed("onnx-int8-static", 2.5)
    fp32 = report.row("onnx")
    for name in ("onnx-int8", "onnx-int8-static"):
        row = report.row(name)
        if fp32 and row and fp32.accuracy and row.accuracy and "abs_rel" in fp32.accuracy and "abs_rel" in row.accuracy:
            d = abs(row.accuracy["abs_rel"] - fp32.accuracy["abs_rel"])
            out.append(
                {
                    "target": f"{name} depth AbsRel within 0.01 of fp32",
                    "measured": f"|Δ| = {d:.4f}",
                    "met": d <= 0.01,
                    "value": d,
                }
            )
    out += _attention_targets(report)
    st = report.stream
    if st is not None and not st.error:
        for what, change in (("per-frame latency", st.latency_change), ("memory (RSS)", st.rss_change)):
            first, last = min(st.checkpoints, key=int), max(st.checkpoints, key=int)
            out.append(
                {
                    "target": f"streaming {what} constant within 10 % (frame {first} -> {last})",
                    "measured": f"{change * 100:+.1f} %",
                    "met": abs(change) <= 0.10,
                    "value": change,
                }
            )
    return out


def _scale_sections(report: BenchReport) -> list[str]:
    lines = []
    if report.batch_scale:
        lines += [
            "## Scale: batch mode (all frames in one call)",
            "",
            "Growth fitted as `y = a * frames^k` over the frame counts; activation memory is the peak RSS "
            "while running minus the RSS with the model loaded.",
            "",
        ]
        body = []
        for b in report.batch_scale:
            lat = b.latency_growth
            mem = b.memory_growth or {}
            act = ", ".join(f"{n}: {_cell(a, 0)}" for n, a in zip(b.frames, b.activation_mb, strict=True))
            body.append(
                [
                    f"`{b.format}`",
                    f"{lat.get('label')} (k={_cell(lat.get('exponent'))})",
                    f"{mem.get('label', '–')} (k={_cell(mem.get('exponent'))})",
                    act,
                ]
            )
        lines += _table(["format", "latency growth", "memory growth", "activation MiB by frames"], body) + [""]
    st = report.stream
    if st is not None:
        lines += ["## Scale: streaming (frame by frame, bounded memory)", ""]
        if st.error:
            lines += [f"Streaming section failed: {st.error}", ""]
        else:
            rendered = st.render_size or st.size
            lines += [
                f"`{st.format}` ({st.backend}) at {st.size[0]}x{st.size[1]} on a {st.frames}-frame synthetic "
                f"handheld orbit rendered at {rendered[0]}x{rendered[1]} (resized to the input by the runtime); "
                f"window {st.window}, overlap {st.overlap} (the model runs once every {st.window - st.overlap} "
                f"frames); {st.warmup_calls} blank warm-up windows before frame 1"
                f"{'; point map reserved for 2 M points up front (--reserve-map)' if st.reserve_map else ''}"
                f". Per-frame latency is amortised "
                f"over one model period and includes decoding the PNG frames, keyframe selection, "
                f"preprocessing, the model, alignment and fusion (edgescene.runtime.reconstruct.run, "
                f"depth files written as reconstruct_to_folder does); rendering "
                f"({st.render_s_excluded:.1f} s) and the warm-up are excluded.",
                "",
            ]
            body = [
                [
                    str(c["frame"]),
                    _cell(c["per_frame_s"] * 1e3, 1),
                    f"{c['span'][0]}–{c['span'][1]}",
                    _cell(c["rss_mb"], 0),
                    _cell(c["peak_mb"], 0),
                    str(c["map_points"]),
                    str(c["model_calls"]),
                ]
                for c in sorted(st.checkpoints.values(), key=lambda c: c["frame"])
            ]
            lines += _table(
                ["frame", "per-frame ms", "frames averaged", "RSS MiB", "peak MiB", "map points", "model calls"], body
            )
            lines += ["", f"- per-frame latency: {st.latency_label}", f"- memory: {st.memory_label}"]
            if st.fps is not None and st.model_only_fps:
                lines += [
                    f"- end to end {st.fps:.1f} frames/s (pipeline {'on' if st.pipelined else 'off'}) beside the "
                    f"model-only ceiling of {st.model_only_fps:.1f} frames/s "
                    f"({st.fps / st.model_only_fps:.2f}x of it)"
                ]
            lines += [""]
    return lines


def attention_pairs(report: BenchReport) -> list[tuple[FormatRow, FormatRow]]:
    """(exact row, its fast twin) for every row run both ways."""
    pairs = []
    for fast in report.rows:
        if fast.attention == "fast":
            exact = report.row(fast.format.removesuffix(FAST))
            if exact is not None:
                pairs.append((exact, fast))
    return pairs


def _scheme(q: dict[str, Any] | None) -> str:
    """artifact.json's quantization schemes in a cell: "static QDQ u8/s8 7-bit per-channel; dynamic ..."."""
    if not q or not q.get("schemes"):
        return "–"
    short = {"uint8": "u8", "int8": "s8"}
    parts = []
    for s in q["schemes"]:
        bits = "7-bit" if s.get("reduce_range") else "8-bit"
        channel = " per-channel" if s.get("per_channel") else ""
        kind = f"{s['method']} {s['quant_format']}"
        parts.append(f"{kind} {short[s['activation_type']]}/{short[s['weight_type']]} {bits}{channel}")
    return "; ".join(parts)


def _int8_section(report: BenchReport) -> list[str]:
    """int8 rows on the CPU the bench ran on: scheme, portability, gate (worst check) and speed vs fp32."""
    rows = [r for r in report.rows if r.precision == "int8"]
    if not rows:
        return []
    cpu = report.machine.get("int8") or {}
    fp32 = report.row("onnx")
    lines = [
        "## int8 on this CPU",
        "",
        f"Instruction set: **{cpu.get('instruction_set', 'unknown')}**; onnxruntime's uint8 x int8 kernels here: "
        f"{cpu.get('u8s8_kernels', 'unknown')}. x86 CPUs without VNNI add pairs of uint8 x int8 products into int16 "
        "with saturation; weights within [-64, 64] (7-bit, `reduce_range`) cannot saturate, so such an artifact "
        "computes the same on x86 with and without VNNI and on arm64 (`same on every CPU`). Gate: the decoded check "
        "closest to its limit, on the CPU named (this one for formats exported in this run). Speed: median per "
        "call at the largest frame count, against the `onnx` (fp32) row of this run.",
        "",
    ]
    body = []
    for r in rows:
        q, g = r.quantization or {}, r.gate
        worst = g["worst"] if g else None
        gate = "–" if worst is None else f"{worst['metric']} {worst['value']:.4g} (limit {worst['limit']:.4g})"
        n = _largest_common(report, fp32, r) if fp32 is not None else None
        mine = max((x for x in r.results if x.timing), key=lambda x: x.frames, default=None)
        speed = "–"
        if n is not None:
            a, b = fp32.result(n).timing.median_ms, r.result(n).timing.median_ms
            speed = f"{b:.1f} ms at {n} frames ({a / b:.2f}x fp32)"
        elif mine is not None:
            speed = f"{mine.timing.median_ms:.1f} ms at {mine.frames} frames"
        same = q.get("same_on_every_cpu")
        body.append(
            [
                f"`{r.format}`",
                _short(r.status, 40),
                _scheme(q),
                "–" if same is None else ("yes" if same else "**no**"),
                q.get("gated_on", "–") if q else "–",
                gate,
                speed,
            ]
        )
    lines += _table(
        ["format", "status", "scheme (act/weights)", "same on every CPU", "gate ran on", "gate, worst check", "speed"],
        body,
    )
    return [*lines, ""]


def _attention_section(report: BenchReport) -> list[str]:
    pairs = attention_pairs(report)
    if not pairs:
        return []
    lines = [
        "## Attention: exact vs fast (token merging in the global attention)",
        "",
        "Each `+fast` row is its format with VGGT's global attention on merged tokens "
        "(`edgescene.models.vggt.token_merge`: training-free; the first frame and the camera / register "
        "tokens are never merged); exported ones passed the parity gate against the fast PyTorch model. "
        "Speedup: exact median / fast median, same run and frames. Global blocks: the aggregator's global "
        "blocks alone (PyTorch, largest frame count, median of 3 profiled calls).",
        "",
    ]
    body = []
    for exact, fast in pairs:
        for n in report.config.frames:
            a, b = exact.result(n), fast.result(n)
            if not (a and b and a.timing and b.timing):
                continue
            ge = (exact.block_profile or {}).get("global_blocks_s") if n == max(report.config.frames) else None
            gf = (fast.block_profile or {}).get("global_blocks_s") if n == max(report.config.frames) else None
            acc_e, acc_f = exact.accuracy or {}, fast.accuracy or {}
            body.append(
                [
                    f"`{exact.format}`",
                    str(n),
                    _cell(a.timing.median_ms, 1),
                    _cell(b.timing.median_ms, 1),
                    _cell(a.timing.median_ms / b.timing.median_ms) + "x",
                    (f"{ge:.3f} / {gf:.3f} s ({ge / gf:.1f}x)" if ge and gf else "–"),
                    f"{_cell(acc_e.get('abs_rel'), 4)} / {_cell(acc_f.get('abs_rel'), 4)}",
                    f"{_cell(acc_e.get('auc_30'), 4)} / {_cell(acc_f.get('auc_30'), 4)}",
                ]
            )
    lines += _table(
        [
            "format",
            "frames",
            "exact ms",
            "fast ms",
            "speedup",
            "global blocks exact / fast",
            "AbsRel ↓ e / f",
            "AUC@30 ↑ e / f",
        ],
        body,
    )
    return [*lines, ""]


def render_markdown(report: BenchReport, plots: list[str]) -> str:
    lines = machine_header(report)
    checks = targets(report)
    if checks:
        mark = {True: "met", False: "**not met**", None: "–"}
        lines += (
            ["## Targets", ""]
            + _table(["target", "measured", "status"], [[c["target"], c["measured"], mark[c["met"]]] for c in checks])
            + [""]
        )
    lines += ["## Formats", ""]
    lines += _table(
        ["format", "status", "precision", "backend / device", "size MB", "parity p99 |d|", "export s"],
        [
            [
                f"`{r.format}`",
                _short(r.status),
                _cell(r.precision),
                f"{r.backend or '–'} / {r.device or '–'}",
                _cell(r.size_mb),
                (f"{r.parity_p99_abs:.2e}" if r.parity_p99_abs is not None else "–"),
                _cell(r.export_s, 1),
            ]
            for r in report.rows
        ],
    )
    lines.append("")
    lines += _int8_section(report)
    lines += _per_frames(report, "Latency per call, median (ms)", lambda r: r.timing.median_ms)
    lines += _per_frames(report, "Latency per call, p95 (ms)", lambda r: r.timing.p95_ms)
    lines += _per_frames(
        report,
        "Latency per call, sigma-clipped mean ± std (ms)",
        lambda r: f"{r.timing.mean_ms:.2f} ± {r.timing.std_ms:.2f}",
    )
    lines += _per_frames(report, "Latency per frame, median (ms)", lambda r: r.per_frame_ms)
    lines += _per_frames(report, "Throughput (frames/s)", lambda r: r.throughput_fps, 1)
    lines += _per_frames(report, "Speedup vs PyTorch (same run, median)", lambda r: r.speedup_vs_pytorch)
    lines += _per_frames(report, "Peak host memory, VmHWM (MiB)", lambda r: r.peak_rss_mb, 0)
    accuracy = [r for r in report.rows if r.accuracy]
    if accuracy:
        lines += [
            "## Accuracy",
            "",
            f"Dataset: `{report.config.dataset}`, {max(report.config.frames)} frames per sequence.",
            "",
        ]
        lines += _table(
            ["format", "AbsRel ↓", "AUC@30 ↑", "sequences"],
            [
                [
                    f"`{r.format}`",
                    _cell(r.accuracy.get("abs_rel"), 4),
                    _cell(r.accuracy.get("auc_30"), 4),
                    _cell(r.accuracy.get("sequences"), 0),
                ]
                if "error" not in r.accuracy
                else [f"`{r.format}`", f"failed: {r.accuracy['error']}".replace("|", "/"), "–", "–"]
                for r in accuracy
            ],
        )
        lines.append("")
    lines += _attention_section(report)
    lines += _scale_sections(report)
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(lines)


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def _timed(rows: list[FormatRow]) -> list[FormatRow]:
    return [r for r in rows if any(x.timing for x in r.results)]


def render_plots(report: BenchReport, out: Path) -> list[str]:
    """latency_vs_frames.png, memory_vs_frames.png, streaming.png and (when accuracy was measured)
    accuracy_vs_speed.png. Empty without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    rows = _timed(report.rows)
    title = f"{report.config.model} {report.config.height}x{report.config.width}"

    def frames_plot(series: dict[str, list[tuple[int, float]]], ylabel: str, name: str, suffix: str = "") -> None:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, points in series.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        ax.set_xlabel("frames per call")
        ax.set_ylabel(ylabel)
        ax.set_title(title + suffix)
        ax.set_xticks(report.config.frames)
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(_save(fig, out / name))

    if rows:
        frames_plot(
            {row.format: [(r.frames, r.timing.median_ms) for r in row.results if r.timing] for row in rows},
            "median latency per call (ms)",
            "latency_vs_frames.png",
        )
    if report.batch_scale and any(a is not None for b in report.batch_scale for a in b.activation_mb):
        frames_plot(
            {
                b.format: [(n, a) for n, a in zip(b.frames, b.peak_rss_mb, strict=True) if a is not None]
                for b in report.batch_scale
            },
            "peak host memory, VmHWM (MiB)",
            "memory_vs_frames.png",
            ": memory",
        )
    st = report.stream
    if st is not None and st.samples:
        frames = [s["frame"] for s in st.samples]
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
        top.plot(frames, [s["frame_s"] * 1e3 for s in st.samples], lw=0.6, color="0.6", label="each frame")
        marks = sorted(st.checkpoints.values(), key=lambda c: c["frame"])
        top.plot(
            [c["frame"] for c in marks], [c["per_frame_s"] * 1e3 for c in marks], "o-", label="per frame, amortised"
        )
        top.set_ylabel("latency (ms)")
        top.legend(fontsize=8)
        top.grid(alpha=0.3)
        bottom.plot(frames, [s["rss_mb"] for s in st.samples], label="RSS")
        bottom.plot(frames, [s["peak_mb"] for s in st.samples], label="peak RSS")
        bottom.set_xlabel("frame")
        bottom.set_ylabel("memory (MiB)")
        bottom.legend(fontsize=8)
        bottom.grid(alpha=0.3)
        top.set_title(f"streaming: {st.format}, {st.frames} frames")
        written.append(_save(fig, out / "streaming.png"))
    scored = [r for r in rows if r.accuracy and r.accuracy.get("abs_rel") is not None]
    if scored:
        frames = max(report.config.frames)
        fig, ax = plt.subplots(figsize=(6, 4))
        for row in scored:
            r = row.result(frames)
            if r is None or r.timing is None:
                continue
            ax.scatter(r.throughput_fps, row.accuracy["abs_rel"], label=f"{row.format} ({row.precision})")
            ax.annotate(f"{row.format}", (r.throughput_fps, row.accuracy["abs_rel"]), fontsize=8)
        ax.set_xlabel(f"throughput at {frames} frames (frames/s)")
        ax.set_ylabel("depth AbsRel (lower is better)")
        ax.set_title("accuracy vs speed, by format and precision")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        written.append(_save(fig, out / "accuracy_vs_speed.png"))
    pairs = [(e, f) for e, f in attention_pairs(report) if e.accuracy and f.accuracy and "abs_rel" in e.accuracy]
    if pairs:
        frames = max(report.config.frames)
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
        for exact, fast in pairs:
            a, b = exact.result(frames), fast.result(frames)
            if not (a and b and a.timing and b.timing and "abs_rel" in fast.accuracy):
                continue
            for ax, key in ((left, "abs_rel"), (right, "auc_30")):
                xs = [a.throughput_fps, b.throughput_fps]
                ys = [exact.accuracy.get(key), fast.accuracy.get(key)]
                if None in ys:
                    continue
                ax.annotate(
                    "", xy=(xs[1], ys[1]), xytext=(xs[0], ys[0]), arrowprops={"arrowstyle": "->", "color": "0.5"}
                )
                ax.scatter(xs[:1], ys[:1], marker="o", label=f"{exact.format} exact")
                ax.scatter(xs[1:], ys[1:], marker="*", s=120, label=f"{exact.format} fast")
        left.set_ylabel("depth AbsRel (lower is better)")
        right.set_ylabel("pose AUC@30 (higher is better)")
        for ax in (left, right):
            ax.ticklabel_format(axis="y", useOffset=False)
            ax.set_xlabel(f"throughput at {frames} frames (frames/s)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle("exact vs fast attention: accuracy vs speed")
        written.append(_save(fig, out / "attention_accuracy_vs_speed.png"))
    return written


def write_report(report: BenchReport, out: str | Path) -> Path:
    """Write ``report.md`` and the plots into ``out``; returns the Markdown path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = render_plots(report, out)
    path = out / "report.md"
    path.write_text(render_markdown(report, plots))
    return path
