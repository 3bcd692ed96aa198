"""What the runtime costs beside the model: the sample video reconstructed in one process.

    python -m edgescene.bench.runtime_overhead --out docs/bench/runtime --runs 3

Reconstructs the bundled sample video with the bundled model ``runs + 1`` times per mode
(pipelined, the default, and sequential, ``--no-pipeline``), alternating, in one process; the
first run of each mode warms caches up and is not counted. For every counted run it records
report.json's own figures: ``total_s`` (wall time from the first frame to the last output written,
the model already open), ``model_s`` (the model's busy time in that run) and each stage's seconds.
Beside them, the same model calls alone (the run's window sizes on blank frames, nothing else
running): the floor any runtime could reach. Writes ``runtime_overhead.json`` and a Markdown table.

On a CPU the model and the runtime's stages share the same cores, so the pipeline's threads slow
the model down (its busy time grows) about as much as they save; the pipeline pays where the
model runs on an accelerator and the CPU is otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgescene.assets import default_model_dir, sample_dir
from edgescene.runtime.reconstruct import ReconstructConfig, Reconstructor, reconstruct_to_folder

STAGES = ("decode_s", "keyframes_s", "preprocess_s", "model_s", "align_s", "fusion_s", "write_s", "outputs_s")


def model_alone_s(model: str | Path, windows: list[int], hw: tuple[int, int], repeats: int = 3) -> float:
    """Seconds the model needs for windows of these frame counts, called back to back (median of repeats)."""
    rec = Reconstructor(model)
    batches = [np.full((n, 3, *hw), 0.5, np.float32) for n in windows]
    rec.session({"images": batches[0]})  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            rec.session({"images": batch})
        times.append(time.perf_counter() - start)
    rec.session.close()
    return statistics.median(times)


def run(runs: int = 3, model: str | Path | None = None, video: str | Path | None = None) -> dict:
    model = model or default_model_dir()
    video = video or sample_dir() / "sample.mp4"
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs + 1):
            for pipeline in (True, False):
                config = ReconstructConfig(pipeline=pipeline)
                report = reconstruct_to_folder(video, model, Path(tmp) / "out", config, overwrite=True, progress=False)
                if i == 0:
                    continue  # warm-up
                t = report["timings_s"]
                rows.append(
                    {
                        "run": i,
                        "pipeline": pipeline,
                        "total_s": t["total_s"],
                        "open_s": t["open_s"],
                        "total_over_model": t["total_over_model"],
                        **{stage: t[stage] for stage in STAGES},
                        "windows": [w["frames"] for w in report["window_timings_s"]],
                        "hw": report["preprocessing"]["model_input_hw"],
                    }
                )
    alone = model_alone_s(model, rows[0]["windows"], tuple(rows[0]["hw"]))
    summary = {}
    for pipeline in (True, False):
        mine = [r for r in rows if r["pipeline"] == pipeline]
        total = statistics.median(r["total_s"] for r in mine)
        summary["pipelined" if pipeline else "sequential"] = {
            "total_s": total,
            "model_s": statistics.median(r["model_s"] for r in mine),
            "total_over_model": statistics.median(r["total_over_model"] for r in mine),
            "worst_total_over_model": max(r["total_over_model"] for r in mine),
            "total_over_model_alone": round(total / alone, 3),
        }
    return {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "model": Path(model).name,
        "video": Path(video).name,
        "model_alone_s": round(alone, 4),
        "summary": summary,
        "runs": rows,
        "target": "total_s <= 1.25 x model_s, report.json's own figures, a run after the first in one process",
    }


def to_markdown(data: dict) -> str:
    lines = [
        f"# Runtime overhead ({data['created_utc']}, {data['machine']})",
        "",
        f"{data['model']} on {data['video']}; medians of {len(data['runs']) // 2} runs per mode after a warm-up run, "
        f"alternating, in one process. Model calls alone (same windows, nothing else running): "
        f"{data['model_alone_s']:.3f} s.",
        "",
        "| mode | total s | model s (busy, in the run) | total / model | worst | total / model alone |",
        "|---|---|---|---|---|---|",
    ]
    for mode, s in data["summary"].items():
        lines.append(
            f"| {mode} | {s['total_s']:.3f} | {s['model_s']:.3f} | {s['total_over_model']:.3f} | "
            f"{s['worst_total_over_model']:.3f} | {s['total_over_model_alone']:.3f} |"
        )
    lines += ["", "Per run (seconds of work per stage; pipelined stages overlap in time):", ""]
    lines += ["| run | mode | total | " + " | ".join(s.removesuffix("_s") for s in STAGES) + " |"]
    lines += ["|---" * (len(STAGES) + 3) + "|"]
    for r in data["runs"]:
        cells = " | ".join(f"{r[s]:.3f}" for s in STAGES)
        lines.append(
            f"| {r['run']} | {'pipelined' if r['pipeline'] else 'sequential'} | {r['total_s']:.3f} | {cells} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for runtime_overhead.json / .md")
    parser.add_argument("--runs", type=int, default=3, help="counted runs per mode (after one warm-up run)")
    parser.add_argument("--model", help="a VGGT artifact (default: the bundled model)")
    parser.add_argument("--video", help="default: the bundled sample video")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    data = run(args.runs, args.model, args.video)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runtime_overhead.json").write_text(json.dumps(data, indent=1) + "\n")
    (args.out / "runtime_overhead.md").write_text(to_markdown(data))
    print(to_markdown(data))


if __name__ == "__main__":
    main()
