"""``edgescene eval``: depth and pose accuracy of a VGGT model on a dataset with ground truth."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from edgescene.commands.model_choice import FAST_ATTENTION_HELP, MODEL_HELP, check_model_choice
from edgescene.core.atomic import atomic_write_text


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="allow a preset name in --model to run with random weights (tests, timing)",
    )
    p.add_argument(
        "--dataset",
        required=True,
        help="a folder with a manifest.json whose frames have depth and cameras (e.g. from edgescene synth), "
        "or middlebury-motorcycle: the real Middlebury 2014 stereo pair with structured-light ground "
        "truth that scikit-image ships (pip install scikit-image)",
    )
    p.add_argument(
        "--frames", type=int, help="frames per sequence, evenly spaced (default: the model's optimal frame count)"
    )
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "tensorrt"], help="default: cpu")
    p.add_argument("--max-sequences", type=int, help="evaluate at most this many sequences (sorted by name)")
    p.add_argument("--json", dest="json_out", help="also write the full report (every sequence) to this JSON file")
    p.add_argument("--fast-attention", action="store_true", help=FAST_ATTENTION_HELP)
    p.add_argument(
        "--metric",
        action="store_true",
        help="also score in the dataset's units, as a run with a scale source would be: each sequence's cameras "
        "fitted to its true camera positions (--scale-from poses:), depth AbsRel with no median scaling, ATE",
    )
    p.add_argument(
        "--baselines",
        action="store_true",
        help="score constant depth, identity poses and a constant forward walk on the same frames",
    )


def run_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from edgescene.bench.accuracy import evaluate, evaluate_baselines

    check_model_choice(args.model, random_weights=args.random_weights, has_weights_option=False)

    bars: list = []

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="seq", desc="eval", file=sys.stderr))
        bars[0].update(done - bars[0].n)

    with tempfile.TemporaryDirectory(prefix="edgescene-eval-") as scratch:
        dataset = args.dataset
        if dataset == "middlebury-motorcycle" and not Path(dataset).exists():
            from edgescene.train.data.middlebury import write_middlebury_motorcycle

            dataset = str(write_middlebury_motorcycle(Path(scratch) / "middlebury-motorcycle"))
        try:
            report = evaluate(
                args.model,
                dataset,
                frames=args.frames,
                device=args.device,
                max_sequences=args.max_sequences,
                progress=progress,
                fast_attention=args.fast_attention,
                metric=args.metric,
            )
        finally:
            for bar in bars:
                bar.close()
        if args.baselines:
            report = report.merged(
                evaluate_baselines(dataset, report.frames, report.size, args.max_sequences, any_size=report.any_size)
            )
        report.dataset = args.dataset
    print(report.format())
    if args.json_out:
        json_out = Path(args.json_out)
        json_out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json_out, json.dumps(report.to_json(), indent=1))
        print(f"eval: report written to {args.json_out}")
    return 0
