"""Self-supervised adaptation to a shifted domain: before / after on held-out scenes with ground truth.

    python -m edgescene.bench.domain_adaptation --out docs/bench/self_supervised

1. Renders synthetic scenes (``edgescene synth``) and moves them to a domain the bundled model
   never saw (``--domain``): ``thermal``, one channel with the contrast inverted (``255 - grey``),
   written as single-channel PNGs as an IR camera would; or ``degraded``, a cheap camera's RGB
   (blur, vignetting, noise and a flatter tone curve).
2. Splits the scenes: the *adaptation* scenes become a folder of frame folders, one per scene,
   with no manifest, no depth and no cameras (what a user has); the *held-out* scenes keep their
   ground truth for scoring only.
3. Scores the starting model on the held-out scenes (``edgescene eval``'s metrics: depth AbsRel
   after one median scale per sequence, pose AUC@30), adapts it with ``edgescene train vggt
   --self-supervised`` on the adaptation frames alone, and scores the best checkpoint again.

With ``--trace`` the run goes in slices of one validation each (resumed from ``last.pt``, the same
run as an uninterrupted one) and every checkpoint is scored on the held-out scenes too: the table
then shows whether the held-out photometric score that picks ``best.pt`` moves with depth AbsRel
(Spearman's rank correlation over the checkpoints, the start included).

Writes ``domain_adaptation.json`` and ``domain_adaptation.md`` (the table, the commands, steps and
seconds) and keeps the training run's report (``report.md``, ``loss_curves.png``); the working
folder ``OUT/work`` (data, checkpoints) is removed unless ``--keep-work``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgescene.bench.accuracy import evaluate
from edgescene.core.manifest import read_manifest, resolve_inside, write_manifest

SFM_UNIT = 3.7  # --known-poses: the cameras' translations in an arbitrary unit, as SfM's are
POSES_NOTE = "; each frame's camera pose known too (in an arbitrary unit, as structure-from-motion gives them)"
METRICS = (("abs_rel", "depth AbsRel", False), ("delta_1_25", "delta<1.25", True), ("auc_30", "pose AUC@30", True))


def thermal_like(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint8: grey with its contrast inverted (hot = dark surfaces bright)."""
    grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return (255.0 - np.clip(np.rint(grey), 0, 255)).astype(np.uint8)


def degraded_camera(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8 as a cheap camera sees it: optical blur (Gaussian, sigma 1.5
    px), vignetting (quadratic fall-off, 45 % darker in the corners), read and shot noise (sigma 4 + 3 %
    of the level) and a flatter tone curve (gamma 1.6)."""
    import cv2

    h, w = rgb.shape[:2]
    image = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), 1.5)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot((x - (w - 1) / 2) / (w / 2), (y - (h - 1) / 2) / (h / 2)) / np.sqrt(2)  # 1 in the corners
    image *= (1 - 0.45 * r**2)[..., None]
    image = 255.0 * (np.clip(image, 0, 255) / 255.0) ** (1 / 1.6)
    image += rng.normal(size=image.shape).astype(np.float32) * (4.0 + 0.03 * image)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


DOMAINS = {"thermal": "one inverted-contrast channel", "degraded": "a cheap camera: blur, vignetting, noise, gamma"}


def to_domain(rgb: np.ndarray, domain: str, rng: np.random.Generator) -> np.ndarray:
    """A rendered frame moved to ``domain`` (a key of :data:`DOMAINS`)."""
    return thermal_like(rgb) if domain == "thermal" else degraded_camera(rgb, rng)


def make_domain(
    out: Path, scenes: int, frames: int, width: int, height: int, seed: int, known_poses: bool = False,
    domain: str = "thermal", heldout: int | None = None,
) -> tuple[Path, Path]:  # fmt: skip
    """Render, convert to ``domain`` (:data:`DOMAINS`), split: (adaptation frames folder, held-out
    manifest folder); ``heldout`` scenes (default a third) are kept for scoring."""
    from PIL import Image

    from edgescene.core.images import decode_image
    from edgescene.train.data.synthetic import SynthConfig, generate_dataset

    rendered = out / "rendered"
    generate_dataset(
        SynthConfig(
            out_dir=str(rendered), scenes=scenes, frames=frames, width=width, height=height, seed=seed, overwrite=True
        )  # fmt: skip
    )
    manifest = read_manifest(rendered)
    names = sorted(manifest.sequences())
    held_out = set(names[: heldout_count(scenes, heldout)])
    rng = np.random.default_rng(seed)
    adapt_dir, eval_dir = out / "adapt_frames", out / "heldout"
    for folder in (adapt_dir, eval_dir):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    kept, calibration = [], {}
    for name, entries in manifest.sequences().items():
        for entry in entries:
            rgb = decode_image(resolve_inside(rendered, entry.path))
            shifted = Image.fromarray(to_domain(rgb, domain, rng))
            if name in held_out:
                target = eval_dir / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                shifted.save(target)
                depth = eval_dir / entry.depth
                depth.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(resolve_inside(rendered, entry.depth), depth)
                kept.append(entry)
            else:  # what a user has: frames, one folder per sequence, nothing else (and the calibration)
                target = adapt_dir / name / Path(entry.path).name
                target.parent.mkdir(parents=True, exist_ok=True)
                shifted.save(target)
                calibration[f"{name}/{target.name}"] = {"intrinsics": entry.camera["intrinsics"]}
                if known_poses:  # as structure-from-motion or a rig would give them, in their own unit
                    extrinsics = np.asarray(entry.camera["extrinsics"], np.float64)[:3]
                    extrinsics[:, 3] *= SFM_UNIT
                    calibration[f"{name}/{target.name}"]["extrinsics"] = extrinsics.tolist()
    manifest.entries = kept
    write_manifest(manifest, eval_dir)
    (out / "calibration.json").write_text(json.dumps(calibration, indent=1) + "\n")  # beside, not in, the frames
    shutil.rmtree(rendered)
    return adapt_dir, eval_dir


def changed_defaults(config) -> str:
    """The command-line flags of ``config``'s settings that differ from the trainer's self-supervised
    defaults (" --lr 0.0001 --augment"; "" when the run took them all)."""
    from edgescene.train.vggt.config import SELF_SUPERVISED_DEFAULTS, VGGTTrainConfig

    flags = {"lr": "--lr", "frames_per_sequence": "--frames", "patience": "--patience", "freeze": "--freeze",
             "intrinsics_weight": "--intrinsics-weight", "anchor_weight": "--anchor-weight"}  # fmt: skip
    out = ""
    for key, flag in flags.items():
        value = getattr(config, key)
        if value != SELF_SUPERVISED_DEFAULTS.get(key, VGGTTrainConfig.__dataclass_fields__[key].default):
            if isinstance(value, tuple):
                value = " ".join(map(str, value))
            out += f" {flag} {value:g}" if isinstance(value, float) else f" {flag} {value}"
    if config.augment != SELF_SUPERVISED_DEFAULTS["augment"]:
        out += " --augment" if config.augment else " --no-augment"
    return out


def heldout_count(scenes: int, heldout: int | None) -> int:
    """How many of ``scenes`` are held out for scoring: ``heldout``, or a third (at least one)."""
    n = max(1, scenes // 3) if heldout is None else heldout
    if not 1 <= n < scenes:
        raise ValueError(f"--heldout-scenes must leave at least one of the {scenes} scenes to adapt on, got {n}")
    return n


def model_to_adapt(given: str | None) -> Path:
    """``--model``, or the bundled model's weights; relative to the working folder when inside it (the
    commands in the table then read as a clone's)."""
    from edgescene.assets import default_model_dir

    model = Path(given) if given else default_model_dir() / "model.safetensors"
    return model.resolve().relative_to(Path.cwd()) if model.resolve().is_relative_to(Path.cwd()) else model


def scores(model: str | Path, dataset: Path, frames: int) -> dict[str, float]:
    report = evaluate(model, dataset, frames=frames)
    means = next(iter(report.means().values()))
    return {key: float(means[key]) for key, _, _ in METRICS if means.get(key) is not None}


def markdown(result: dict) -> str:
    m = result["meta"]
    lines = [
        f"# Self-supervised adaptation to a shifted domain ({m['date']}, {m['machine']})",
        "",
        f"{m['adapt_scenes']} adaptation scenes (frames only) and {m['heldout_scenes']} held-out scenes "
        f"(ground truth for scoring only), {m['frames']} frames each at {m['width']}x{m['height']}; "
        f"{DOMAINS[m.get('domain', 'thermal')]}; scenes seed {m.get('seed')}; the camera's intrinsics "
        f"{'known (a metadata JSON)' if m.get('known_intrinsics') else 'unknown (the camera head predicts them)'}"
        f"{POSES_NOTE if m.get('known_poses') else ''}. "
        "Training: "
        f"{result['training']['steps_done']} steps in {result['training']['seconds']:.0f} s on the CPU "
        f"(best checkpoint at step {result['training']['best_step']}).",
        "",
    ]
    return "\n".join(lines + before_after(result, "held-out metric") + trace_lines(result.get("trace")))


def trace_lines(trace: dict | None) -> list[str]:
    """The per-checkpoint table of a ``--trace`` run and its rank correlation (markdown lines)."""
    if not trace:
        return []
    lines = [
        "Every checkpoint (step 0: the start), the held-out photometric score that picks best.pt against the "
        "held-out scenes' ground truth:",
        "",
        "| step | photometric score (picks best.pt) | depth AbsRel | pose AUC@30 |",
        "|---|---|---|---|",
    ]
    for row in trace["checkpoints"]:
        lines.append(f"| {row['step']} | {row['val_loss']:.5f} | {row['abs_rel']:.4f} | {row.get('auc_30', 0):.3f} |")
    rho = trace["spearman_score_vs_abs_rel"]
    lines += [
        "",
        f"Spearman rank correlation of the photometric score with depth AbsRel over these checkpoints: "
        f"{'none (fewer than 3 checkpoints, or one of the two never moved)' if rho is None else f'{rho:+.2f}'} "
        "(+1: the score orders the checkpoints as AbsRel does).",
        "",
    ]
    return lines


def train_traced(config, eval_dir: Path, frames: int, start_scores: dict[str, float]) -> dict:
    """Train ``config`` one validation at a time (resuming from ``last.pt``) and score each checkpoint
    on ``eval_dir``: ``{"checkpoints": [{"step", "val_loss", "abs_rel", ...}], "spearman_score_vs_abs_rel"}``
    (``start_scores``: the starting model's scores, the row of step 0)."""
    from dataclasses import replace

    from scipy.stats import spearmanr

    from edgescene.train.vggt.trainer import train

    run_dir = Path(config.out_dir)
    done, sliced, kept = 0, config, []
    while done < config.steps:
        train(sliced, stop_at_step=min(done + config.save_every, config.steps))
        report = json.loads((run_dir / "report.json").read_text())
        if report["steps_done"] <= done:
            break
        done = report["steps_done"]
        kept.append((done, run_dir / f"trace_step_{done}.pt"))
        shutil.copyfile(run_dir / "last.pt", kept[-1][1])
        if report["stopped_early"]:
            break
        sliced = replace(config, resume="last")
    held_out = {}  # step -> the held-out photometric score the trainer logged there
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "val_loss" in record:
            held_out[record["step"]] = record["val_loss"]
    rows = [{"step": 0, "val_loss": held_out[0], **start_scores}]
    for step, path in kept:
        rows.append({"step": step, "val_loss": held_out[step], **scores(path, eval_dir, frames)})
        path.unlink()
    score, abs_rel = [r["val_loss"] for r in rows], [r["abs_rel"] for r in rows]
    ranked = len(rows) >= 3 and len(set(score)) > 1 and len(set(abs_rel)) > 1  # else no order to compare
    rho = float(spearmanr(score, abs_rel).statistic) if ranked else None
    return {"checkpoints": rows, "spearman_score_vs_abs_rel": rho}


def before_after(result: dict, header: str) -> list[str]:
    """The before / after table of ``result["before"]`` and ``["after"]``, then its commands (markdown lines)."""
    lines = [f"| {header} | before | after | change |", "|---|---|---|---|"]
    for key, label, higher in METRICS:
        if key in result["before"] and key in result["after"]:
            b, a = result["before"][key], result["after"][key]
            change = f"{(a / b - 1) * 100:+.1f} %" if b else ""
            lines.append(f"| {label} ({'higher' if higher else 'lower'} is better) | {b:.4f} | {a:.4f} | {change} |")
    return lines + ["", "Commands:", "", "```", *result["commands"], "```", ""]


def run_result(meta: dict, before: dict, after: dict, run_dir: Path, seconds: float, commands: list[str]) -> dict:
    """The record of one adaptation: when and where, the scores before and after, what training did."""
    report = json.loads((run_dir / "report.json").read_text())
    return {
        "meta": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, Python {platform.python_version()}",
            **meta,
        },
        "before": before,
        "after": after,
        "training": {
            "steps_done": report["steps_done"],
            "seconds": round(seconds, 1),
            "best_step": report["best_step"],
            "stopped_early": report["stopped_early"],
            "heldout_self_supervised": {"before": report["before"], "best": report["best"]},
        },
        "commands": commands,
    }


def save_result(out: Path, stem: str, result: dict, text: str, run_dir: Path) -> None:
    """``OUT/stem.json`` and ``OUT/stem.md``, and the training run's report.md and loss_curves.png beside them."""
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{stem}.md").write_text(text)
    for name in ("report.md", "loss_curves.png"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the data, the run and the table")
    parser.add_argument("--model", help="weights to adapt (default: the bundled model's model.safetensors)")
    parser.add_argument("--preset", help="the preset of --model (default: detected from its keys)")
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument(
        "--heldout-scenes", type=int, help="scenes kept for scoring (default: a third); the rest are adapted on"
    )
    parser.add_argument(
        "--domain", choices=sorted(DOMAINS), default="thermal",
        help="the shift: " + "; ".join(f"{k}: {v}" for k, v in DOMAINS.items()),
    )  # fmt: skip
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--width", type=int, default=168)
    parser.add_argument("--height", type=int, default=126)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, help="default: the trainer's self-supervised default")
    parser.add_argument(
        "--window-frames", type=int, nargs=2, metavar=("MIN", "MAX"), help="frames per window (default: the trainer's)"
    )
    parser.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, help="colour jitter, random zoom (default: the trainer's)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="windows per step")
    parser.add_argument("--eval-frames", type=int, default=8)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--consistency-weight", type=float, default=0.0, help="point and camera consistency terms")
    parser.add_argument("--smoothness-weight", type=float, default=1e-3)
    parser.add_argument("--freeze", choices=["none", "aggregator", "patch_embed"], help="default: the trainer's")
    parser.add_argument("--no-automask", action="store_true", help="train without Monodepth2's auto-masking")
    parser.add_argument("--warp-poses", default="matches", choices=["matches", "camera_head"])
    parser.add_argument("--match-pose-weight", type=float, default=0.0)
    parser.add_argument("--confidence-alpha", type=float, default=0.0)
    parser.add_argument("--patience", type=int, help="default: the trainer's")
    parser.add_argument("--intrinsics-weight", type=float, help="default: the trainer's")
    parser.add_argument("--anchor-weight", type=float, help="L2-SP anchor to the start (default: the trainer's)")
    parser.add_argument(
        "--known-poses",
        action="store_true",
        help="the calibration also carries each frame's camera pose (in an arbitrary unit, as structure-from-motion "
        "gives them): the warp goes through them; implies --known-intrinsics",
    )
    parser.add_argument(
        "--known-intrinsics",
        action="store_true",
        help="the adaptation frames come with the camera's calibration (a metadata JSON through edgescene "
        "preprocess): no depth, no poses, only what a calibrated IR camera's user has",
    )
    parser.add_argument(
        "--validate-every", type=int, help="steps between validations (default: a sixth of --steps, at least 10)"
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="score every checkpoint on the held-out scenes too: does the photometric score that picks best.pt "
        "move with depth AbsRel? (slower: one evaluation per validation)",
    )
    parser.add_argument(
        "--keep-work", action="store_true", help="keep OUT/work (the rendered data and the run's checkpoints)"
    )
    args = parser.parse_args(argv)

    from edgescene.train.vggt.config import VGGTTrainConfig
    from edgescene.train.vggt.trainer import train, weights_preset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    heldout = heldout_count(args.scenes, args.heldout_scenes)  # a bad count fails before anything is rendered
    model = model_to_adapt(args.model)
    preset = args.preset or weights_preset(model)
    adapt_dir, eval_dir = make_domain(
        work, args.scenes, args.frames, args.width, args.height, args.seed, known_poses=args.known_poses,
        domain=args.domain, heldout=heldout,
    )  # fmt: skip
    before = scores(model, eval_dir, args.eval_frames)
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    chosen = {"lr": args.lr, "augment": args.augment, "patience": args.patience, "freeze": args.freeze,
             "intrinsics_weight": args.intrinsics_weight, "anchor_weight": args.anchor_weight,
             "frames_per_sequence": tuple(args.window_frames) if args.window_frames else None}  # fmt: skip
    config = VGGTTrainConfig.self_supervised_run(
        **{k: v for k, v in chosen.items() if v is not None},
        dataset_dir=str(adapt_dir), out_dir=str(run_dir), preset=preset, init=str(model), steps=args.steps,
        batch_size=args.batch_size, image_height=args.height, image_width=args.width, log_every=10,
        save_every=args.validate_every or max(10, args.steps // 6), device="cpu", num_workers=0,
        seed=args.seed, point_consistency_weight=args.consistency_weight,
        camera_consistency_weight=args.consistency_weight, smoothness_weight=args.smoothness_weight,
        automask=not args.no_automask, warp_poses=args.warp_poses, match_pose_weight=args.match_pose_weight,
        confidence_alpha=args.confidence_alpha,
        metadata_json=str(work / "calibration.json") if args.known_intrinsics or args.known_poses else None,
    )  # fmt: skip
    start = time.perf_counter()
    trace = train_traced(config, eval_dir, args.eval_frames, before) if args.trace else None
    if trace is None:
        train(config)
    seconds = time.perf_counter() - start
    after = scores(run_dir / "best.pt", eval_dir, args.eval_frames)
    given = argv if argv is not None else sys.argv[1:]
    calibrated = args.known_intrinsics or args.known_poses
    extra = (f" --metadata-json {work / 'calibration.json'}" if calibrated else "") + "".join(
        f" --{flag} {value:g}"
        for flag, value, default in (
            ("point-consistency-weight", args.consistency_weight, 0.0),
            ("camera-consistency-weight", args.consistency_weight, 0.0),
            ("match-pose-weight", args.match_pose_weight, 0.0),
            ("confidence-alpha", args.confidence_alpha, 0.0),
        )
        if value != default
    )  # fmt: skip
    commands = [
        "python -m edgescene.bench.domain_adaptation " + " ".join(shlex.quote(a) for a in given),
        "# which runs, on the adaptation frames only (and, with --known-intrinsics, their calibration):",
        f"edgescene train vggt --self-supervised --dataset-dir {adapt_dir} --out-dir {run_dir} --preset "
        f"{preset} --init {model} --steps {args.steps} --batch-size {args.batch_size} --height {args.height} "
        f"--width {args.width} --seed {args.seed} --device cpu{changed_defaults(config)}{extra}",
        f"edgescene eval --model {model} --dataset {eval_dir} --frames {args.eval_frames}          # before",
        f"edgescene eval --model {run_dir / 'best.pt'} --dataset {eval_dir} --frames {args.eval_frames}   # after",
    ]
    meta = {
        "adapt_scenes": args.scenes - heldout,
        "heldout_scenes": heldout,
        "domain": args.domain,
        "frames": args.frames,
        "width": args.width,
        "height": args.height,
        "seed": args.seed,
        "known_intrinsics": args.known_intrinsics or args.known_poses,
        "known_poses": args.known_poses,
    }
    result = run_result(meta, before, after, run_dir, seconds, commands)
    if trace is not None:
        result["trace"] = trace
    save_result(out, "domain_adaptation", result, markdown(result), run_dir)
    if not args.keep_work:  # data and checkpoints: megabytes that do not belong beside a report
        shutil.rmtree(work, ignore_errors=True)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
