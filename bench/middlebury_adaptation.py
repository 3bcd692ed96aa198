"""Self-supervised adaptation on a real photo pair: Middlebury 2014 Motorcycle as a 2-frame sequence.

    python -m edgescene.bench.middlebury_adaptation --out docs/bench/self_supervised/middlebury

The pair (scikit-image ships it; no download) is what a user with two calibrated photos has: the
frames and the camera's intrinsics, no depth, no poses. The model adapts on the two frames alone
(``edgescene train vggt --self-supervised`` with the calibration as ``--metadata-json``; the
held-out score that picks ``best.pt`` is the photometric score of the same pair, as test-time
adaptation does) and is scored before and after against the structured-light ground truth with
``edgescene eval``'s metrics (depth AbsRel after one median scale, pose AUC@30).

Writes ``middlebury_adaptation.json`` / ``.md`` and keeps the run's ``report.md`` and
``loss_curves.png``; ``OUT/work`` is removed unless ``--keep-work``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

from edgescene.bench.domain_adaptation import (
    before_after,
    changed_defaults,
    model_to_adapt,
    run_result,
    save_result,
    scores,
)


def frames_only(out: Path) -> tuple[Path, Path, Path]:
    """(ground-truth manifest folder, frames folder, calibration JSON) for the pair."""
    from edgescene.train.data.middlebury import SEQUENCE, cameras, write_middlebury_motorcycle

    shutil.rmtree(out, ignore_errors=True)
    truth = write_middlebury_motorcycle(out / "truth")
    frames = out / "frames" / SEQUENCE
    frames.mkdir(parents=True)
    k_left, _, k_right, _ = cameras()
    calibration = {}
    for index, (name, k) in enumerate((("left", k_left), ("right", k_right))):
        target = frames / f"{index:02d}_{name}.png"  # name order is frame order
        shutil.copyfile(truth / "images" / f"{name}.png", target)
        calibration[f"{SEQUENCE}/{target.name}"] = {"intrinsics": k}
    path = out / "calibration.json"
    path.write_text(json.dumps(calibration, indent=1) + "\n")
    return truth, frames.parent, path


def markdown(result: dict) -> str:
    m, t = result["meta"], result["training"]
    lines = [
        f"# Self-supervised adaptation on the Middlebury 2014 Motorcycle pair ({m['date']}, {m['machine']})",
        "",
        "Two real photos (500x741, scikit-image's copy) and their calibration; no depth, no poses. Training at "
        f"{m['height']}x{m['width']}: {t['steps_done']} steps in {t['seconds']:.0f} s on the CPU (best checkpoint "
        f"at step {t['best_step']}).",
        "",
    ]
    return "\n".join(lines + before_after(result, "metric (the pair's ground truth)"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the run and the table")
    parser.add_argument("--model", help="weights to adapt (default: the bundled model's model.safetensors)")
    parser.add_argument("--preset", help="the preset of --model (default: detected from its keys)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, help="default: the trainer's self-supervised default")
    parser.add_argument("--freeze", choices=["none", "aggregator", "patch_embed"], help="default: the trainer's")
    parser.add_argument("--height", type=int, default=196)
    parser.add_argument("--width", type=int, default=294)
    parser.add_argument("--match-pose-weight", type=float, default=0.0, help="camera head against the measured poses")
    parser.add_argument("--keep-work", action="store_true", help="keep OUT/work (the pair, the run's checkpoints)")
    args = parser.parse_args(argv)

    from edgescene.train.vggt.config import VGGTTrainConfig
    from edgescene.train.vggt.trainer import train, weights_preset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    model = model_to_adapt(args.model)
    preset = args.preset or weights_preset(model)
    truth, frames, calibration = frames_only(work)
    before = scores(model, truth, 2)
    run_dir = work / "run"
    config = VGGTTrainConfig.self_supervised_run(
        dataset_dir=str(frames), out_dir=str(run_dir), preset=preset, init=str(model), steps=args.steps,
        batch_size=1, frames_per_sequence=(2, 2), image_height=args.height, image_width=args.width,
        log_every=10, save_every=max(10, args.steps // 5), device="cpu", num_workers=0, val_dataset=str(frames),
        val_fraction=None, seed=0, metadata_json=str(calibration), match_pose_weight=args.match_pose_weight,
        **({"lr": args.lr} if args.lr is not None else {}), **({"freeze": args.freeze} if args.freeze else {}),
    )  # fmt: skip
    start = time.perf_counter()
    train(config)
    seconds = time.perf_counter() - start
    after = scores(run_dir / "best.pt", truth, 2)
    given = argv if argv is not None else sys.argv[1:]
    pose_term = f" --match-pose-weight {args.match_pose_weight:g}" if args.match_pose_weight else ""
    commands = [
        "python -m edgescene.bench.middlebury_adaptation " + " ".join(shlex.quote(a) for a in given),
        "# which runs, on the two frames and their calibration only (the rest: the self-supervised defaults):",
        f"edgescene train vggt --self-supervised --dataset-dir {frames} --val-data {frames} --metadata-json "
        f"{calibration} --out-dir {run_dir} --preset {preset} --init {model} --steps {args.steps} "
        f"--height {args.height} --width {args.width} --device cpu{changed_defaults(config)}{pose_term}",
        f"edgescene eval --model {model} --dataset middlebury-motorcycle --frames 2          # before",
        f"edgescene eval --model {run_dir / 'best.pt'} --dataset middlebury-motorcycle --frames 2   # after",
    ]
    result = run_result({"height": args.height, "width": args.width}, before, after, run_dir, seconds, commands)
    save_result(out, "middlebury_adaptation", result, markdown(result), run_dir)
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
