"""``edgescene train vggt``: fine-tune (or train) VGGT on sequences with ground-truth depth and cameras,
or, with ``--self-supervised``, on footage that has neither.

Data: a manifest folder whose sequences carry depth and camera-from-world poses on every frame,
e.g. ``edgescene synth --out data/synth`` (or a preprocessed dataset with depth and cameras).

Single GPU (or CPU)::

    python -m edgescene.train.vggt.cli --dataset-dir data/synth --out-dir runs/vggt \\
        --init facebook/VGGT-1B --freeze aggregator --steps 2000

Several GPUs on one machine (``--batch-size`` is per process)::

    torchrun --nproc_per_node=N -m edgescene.train.vggt.cli --dataset-dir data/synth --out-dir runs/vggt \\
        --init facebook/VGGT-1B --steps 2000

Self-supervised adaptation to one's own footage (videos, or one folder of images per sequence)::

    python -m edgescene.train.vggt.cli --self-supervised --dataset-dir my_ir_videos --out-dir runs/ir \
        --init facebook/VGGT-1B --steps 2000 --patience 3

Continue an interrupted run with the same command plus ``--resume`` (out/last.pt), a CPU smoke
test with ``--preset vggt_tiny --height 42 --width 56 --frames 2 3 --device cpu``. The result,
``out/last.pt``, loads with ``edgescene.models.load_vggt`` and exports with
``edgescene export --model out/last.pt``.
"""

from __future__ import annotations

import argparse
import os
import sys

from edgescene.train.vggt.config import (
    DEFAULT_VAL_FRACTION,
    FREEZE_CHOICES,
    POINT_GRADIENT_CHOICES,
    SELF_SUPERVISED_DEFAULTS,
    VGGTTrainConfig,
)

_DEFAULTS = VGGTTrainConfig.__dataclass_fields__
SS = SELF_SUPERVISED_DEFAULTS


def _default(name: str):
    return _DEFAULTS[name].default


def _either(name: str) -> str:
    """'X' when both kinds of run default to X, else 'X; --self-supervised: Y' (help text)."""
    fine_tune, own = _default(name), SS.get(name, _default(name))
    fine_tune, own = (" ".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in (fine_tune, own))
    return fine_tune if own == fine_tune else f"{fine_tune}; --self-supervised: {own}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = _default
    p.add_argument(
        "--dataset-dir",
        "--data",
        dest="data",
        required=True,
        help="dataset folder with a manifest.json (sequences with depth + cameras); with --self-supervised also "
        "a folder of videos and image sequences",
    )
    p.add_argument(
        "--out-dir", "--out", dest="out", required=True, help="output folder: last.pt, metrics.jsonl, tensorboard/"
    )
    p.add_argument(
        "--preset",
        default=None,
        help=f"model preset (default: the one a local --init file matches key for key, else {d('preset')})",
    )
    p.add_argument("--init", help="start from these weights: an official file, a Hub id or an edgescene checkpoint")
    p.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        metavar="CKPT",
        help="continue from CKPT (optimizer, step, RNG); without a value: OUT/last.pt",
    )
    p.add_argument(
        "--freeze", choices=FREEZE_CHOICES, default=None, help=f"parts not trained (default: {_either('freeze')})"
    )
    p.add_argument("--steps", type=int, default=d("steps"), help=f"optimizer steps (default: {d('steps')})")
    p.add_argument(
        "--batch-size",
        type=int,
        default=d("batch_size"),
        help=f"sequences per step per process (default: {d('batch_size')})",
    )
    p.add_argument(
        "--frames",
        type=int,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=None,
        help=f"frames per sequence, drawn per step in [MIN, MAX] (default: {_either('frames_per_sequence')})",
    )
    p.add_argument(
        "--max-stride",
        type=int,
        default=d("max_stride"),
        help="a sample takes every s-th frame of its sequence, s drawn in 1..MAX_STRIDE: wider motions in a "
        f"window, as keyframe selection makes them (default: {d('max_stride')}, consecutive frames)",
    )
    p.add_argument(
        "--height", type=int, default=d("image_height"), help=f"training image height (default: {d('image_height')})"
    )
    p.add_argument(
        "--width", type=int, default=d("image_width"), help=f"training image width (default: {d('image_width')})"
    )
    p.add_argument(
        "--lr", type=float, default=None, help=f"peak learning rate (default: {_either('lr')}; the first is upstream's)"
    )
    p.add_argument(
        "--min-lr", type=float, default=d("min_lr"), help=f"warm-up start and cosine end (default: {d('min_lr')})"
    )
    p.add_argument(
        "--warmup", type=float, default=d("warmup_fraction"), help="warm-up share of the steps (default: 0.05)"
    )
    p.add_argument("--weight-decay", type=float, default=d("weight_decay"), help="AdamW weight decay (default: 0.05)")
    p.add_argument(
        "--clip-grad", type=float, default=d("clip_grad"), help="max grad norm per module, 0 = off (default: 1.0)"
    )
    p.add_argument("--camera-weight", type=float, default=d("camera_weight"), help="camera loss weight (default: 5.0)")
    p.add_argument("--depth-weight", type=float, default=d("depth_weight"), help="depth loss weight (default: 1.0)")
    p.add_argument(
        "--point-weight", type=float, default=d("point_weight"), help="point-map loss weight, 0 = off (default: 1.0)"
    )
    p.add_argument(
        "--match-weight",
        type=float,
        default=d("match_weight"),
        help="presets with motion cues (vggt_small_motion): weight of their matches against the true "
        "correspondences (default: 1.0)",
    )
    p.add_argument(
        "--point-gradient",
        choices=POINT_GRADIENT_CHOICES,
        default=d("point_gradient"),
        help="gradient term of the point loss (default: normal)",
    )
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"colour jitter and random zoom, the same for all frames of a sample (default: {_either('augment')})",
    )
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute aggregator blocks in backward")
    p.add_argument(
        "--log-every", type=int, default=d("log_every"), help=f"steps between logs (default: {d('log_every')})"
    )
    p.add_argument(
        "--save-every",
        type=int,
        default=d("save_every"),
        help=f"steps between validation + checkpoint (default: {d('save_every')})",
    )
    p.add_argument("--seed", type=int, default=d("seed"), help="random seed (default: 0)")
    p.add_argument("--device", default=d("device"), help="auto, cpu or cuda (default: auto)")
    p.add_argument(
        "--workers", type=int, default=d("num_workers"), help=f"data loader workers (default: {d('num_workers')})"
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help=f"held-out share of the sequences (default: {DEFAULT_VAL_FRACTION}; --self-supervised: "
        f"{SS['val_fraction']}; none with --val-data)",
    )
    p.add_argument("--val-dataset-dir", "--val-data", dest="val_data", help="a separate dataset folder for validation")
    p.add_argument(
        "--self-supervised",
        action="store_true",
        help="train on footage without depth or cameras: photometric reprojection, smoothness and head "
        "consistency losses; --dataset-dir may hold videos and folders of images (one per sequence)",
    )
    p.add_argument("--photometric-weight", type=float, default=d("photometric_weight"), help="self-supervised")
    p.add_argument("--smoothness-weight", type=float, default=d("smoothness_weight"), help="self-supervised")
    p.add_argument(
        "--point-consistency-weight", type=float, default=d("point_consistency_weight"), help="self-supervised"
    )
    p.add_argument(
        "--camera-consistency-weight", type=float, default=d("camera_consistency_weight"), help="self-supervised"
    )
    p.add_argument(
        "--no-automask",
        action="store_true",
        help="self-supervised: keep every pixel in the photometric loss (default: Monodepth2's auto-masking drops "
        "pixels an unwarped frame explains better)",
    )
    p.add_argument(
        "--warp-poses",
        choices=("matches", "camera_head"),
        default=d("warp_poses"),
        help="self-supervised: the relative poses the photometric loss warps through: 'matches' (measured on the "
        "frames: optical flow, essential matrix, one depth scale per window; default) or 'camera_head' (the "
        "model's own cameras)",
    )
    p.add_argument(
        "--match-pose-weight",
        type=float,
        default=d("match_pose_weight"),
        help="self-supervised: camera head against the matched poses",
    )
    p.add_argument(
        "--metadata-json",
        help="self-supervised, raw footage: a metadata JSON for the preprocessing (edgescene preprocess "
        "--metadata-json; paths relative to --dataset-dir, and to --val-data when that is raw footage too); its "
        "'intrinsics' (the camera's calibration) are warped through and supervise the camera head's field of view",
    )
    p.add_argument(
        "--intrinsics-weight",
        type=float,
        default=None,
        help="self-supervised: camera head's fields of view against the data's known intrinsics (preprocess "
        "--metadata-json with 'intrinsics'; > 0 trains the camera head; default "
        f"{SS['intrinsics_weight']}: the head holds); the warp goes through the known intrinsics either way",
    )
    p.add_argument(
        "--confidence-alpha",
        type=float,
        default=d("confidence_alpha"),
        help="self-supervised: > 0 weights the terms by the heads' confidence, c e - alpha log c (default 0: off)",
    )
    p.add_argument(
        "--anchor-weight",
        type=float,
        default=None,
        help="L2-SP: adds anchor_weight * sum((w - w_start)^2) over the trained weights, so they stay near where "
        f"they started (default: {_either('anchor_weight')}; 0: off)",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=None,
        help="stop after this many validations without improvement (the best checkpoint stays as OUT/best.pt; "
        f"default: never; --self-supervised: {SS['patience']})",
    )


def config_from_args(args: argparse.Namespace) -> VGGTTrainConfig:
    """The configuration: what the command line gives, else the defaults of its kind of run."""
    given = {
        "freeze": args.freeze,
        "lr": args.lr,
        "frames_per_sequence": tuple(args.frames) if args.frames else None,
        "augment": args.augment,
        "intrinsics_weight": args.intrinsics_weight,
        "patience": args.patience,
        "anchor_weight": args.anchor_weight,
        "val_fraction": args.val_fraction,
    }
    defaults = SS if args.self_supervised else {}
    chosen = {k: v if v is not None else defaults.get(k, _default(k)) for k, v in given.items()}
    if args.val_data is not None and args.val_fraction is None:
        chosen["val_fraction"] = None  # a separate validation set: nothing held out of --dataset-dir
    return VGGTTrainConfig(
        **chosen,
        dataset_dir=args.data,
        out_dir=args.out,
        preset=args.preset or _default("preset"),
        init=args.init,
        resume=args.resume,
        steps=args.steps,
        batch_size=args.batch_size,
        max_stride=args.max_stride,
        image_height=args.height,
        image_width=args.width,
        min_lr=args.min_lr,
        warmup_fraction=args.warmup,
        weight_decay=args.weight_decay,
        clip_grad=args.clip_grad,
        camera_weight=args.camera_weight,
        depth_weight=args.depth_weight,
        point_weight=args.point_weight,
        match_weight=args.match_weight,
        point_gradient=args.point_gradient,
        gradient_checkpointing=args.gradient_checkpointing,
        log_every=args.log_every,
        save_every=args.save_every,
        seed=args.seed,
        device=args.device,
        num_workers=args.workers,
        val_dataset=args.val_data,
        self_supervised=args.self_supervised,
        photometric_weight=args.photometric_weight,
        smoothness_weight=args.smoothness_weight,
        point_consistency_weight=args.point_consistency_weight,
        camera_consistency_weight=args.camera_consistency_weight,
        automask=not args.no_automask,
        warp_poses=args.warp_poses,
        match_pose_weight=args.match_pose_weight,
        metadata_json=args.metadata_json,
        confidence_alpha=args.confidence_alpha,
    )


def run(args: argparse.Namespace) -> int:
    if args.preset is None and args.init and os.path.isfile(args.init):
        from edgescene.train.vggt.trainer import weights_preset

        args.preset = weights_preset(args.init)  # the bundled model, a checkpoint of an earlier run
    config = config_from_args(args)
    if int(os.environ.get("RANK", "0")) == 0:
        print("edgescene train vggt, resolved config:\n" + config.format(), flush=True)
    from edgescene.train.vggt.trainer import train  # torch and the model only once the arguments are valid

    metrics = train(config)
    if int(os.environ.get("RANK", "0")) == 0 and metrics:
        print("final: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgescene.train.vggt.cli",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:  # RuntimeError: e.g. the run diverged
        print(f"edgescene train vggt: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
