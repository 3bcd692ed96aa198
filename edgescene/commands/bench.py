"""``edgescene bench``: every export format of a model beside its PyTorch reference (latency, memory, accuracy)."""

from __future__ import annotations

import argparse
import sys

from edgescene.commands.model_choice import check_model_choice


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="a preset name (with --weights or --random-weights), a checkpoint file or a Hub id (facebook/VGGT-1B)",
    )
    p.add_argument("--weights", help="a checkpoint for the preset in --model")
    p.add_argument("--random-weights", action="store_true", help="run a preset with random weights (timing only)")
    p.add_argument(
        "--formats",
        default="all",
        help="comma-separated export formats (see `edgescene export --help`), or 'all' (default): every "
        "format of the export table; those needing missing hardware or tools are reported as skipped. "
        "A pytorch reference row is always added",
    )
    p.add_argument("--frames", type=_int_list, default=[1, 2, 4], help="comma-separated frame counts (default: 1,2,4)")
    p.add_argument("--height", type=int, default=392, help="input height, a multiple of the patch size (default: 392)")
    p.add_argument("--width", type=int, default=518, help="input width, a multiple of the patch size (default: 518)")
    p.add_argument("--out", required=True, help="output folder: bench.json, report.md, plots, artifacts/")
    p.add_argument(
        "--quick", action="store_true", help="1 warm-up call, 3 timed calls, a 30-frame streaming run (CI smoke test)"
    )
    p.add_argument(
        "--runs",
        type=int,
        help="exactly this many timed calls per format and frame count (default: 5 to "
        "20, stopping once 3 s are spent; --quick 3)",
    )
    p.add_argument("--warmup", type=int, help="warm-up calls before timing (default 2, --quick 1)")
    p.add_argument(
        "--stream-frames",
        type=int,
        help="length of the streaming section's synthetic video (default 300, --quick 30; 0 skips the section)",
    )
    p.add_argument(
        "--stream-format",
        help="the row whose model streams (default: the first accepted onnxruntime format, else pytorch)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "tensorrt"], help="default: auto")
    p.add_argument("--dataset", help="held-out folder with depth and cameras: also score AbsRel and AUC@30")
    p.add_argument("--max-sequences", type=int, help="with --dataset: score at most this many sequences")
    p.add_argument(
        "--fast-attention",
        action="store_true",
        help="the attention axis: beside every row, its twin with fast attention (token merging in VGGT's "
        "global attention; exported rows are exported with --fast-attention): speed, per-block profile and, "
        "with --dataset, accuracy side by side, plus attention_accuracy_vs_speed.png",
    )


def run_bench(args: argparse.Namespace) -> int:
    from edgescene.bench.report import write_report
    from edgescene.bench.suite import BenchConfig
    from edgescene.bench.suite import run_bench as _run
    from edgescene.export.formats import FORMATS

    check_model_choice(args.model, args.weights, args.random_weights)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if formats == ["all"]:
        formats = list(FORMATS)
    config = BenchConfig(
        model=args.model,
        formats=formats,
        frames=args.frames,
        height=args.height,
        width=args.width,
        out=args.out,
        runs=args.runs,
        warmup=args.warmup,
        quick=args.quick,
        dataset=args.dataset,
        device=args.device,
        weights=args.weights,
        max_sequences=args.max_sequences,
        stream_frames=args.stream_frames,
        stream_format=args.stream_format,
        attention=("exact", "fast") if args.fast_attention else ("exact",),
    )
    report = _run(config, log=lambda s: print(s, file=sys.stderr))
    path = write_report(report, args.out)
    for row in report.rows:
        print(f"{row.format:<12} {row.status}")
    print(f"bench: {args.out}/bench.json and {path} written")
    return 0
