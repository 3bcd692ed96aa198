"""``edgescene train dinov3``: the command line of the DINOv3 trainer (:mod:`.trainer`).

Every field of :class:`~edgescene.train.dinov3.config.DinoTrainConfig` is an option
(``head_prototypes`` -> ``--head-prototypes``); the resolved configuration is printed at the start.
Upstream's equivalent entry point is ``dinov3/train/train.py``.

Run::

    # one GPU (or CPU)
    python -m edgescene.train.dinov3.cli --dataset-dir data/processed --out-dir runs/dino_s \\
        --preset dinov3_vits16 --init dinov3_vits16_pretrain_lvd1689m-08c60483.pth --steps 20000
    # N GPUs on one node (DDP; --batch-size is per process)
    torchrun --nproc_per_node=N -m edgescene.train.dinov3.cli --dataset-dir data/processed --out-dir runs/dino_s \\
        --preset dinov3_vits16 --init dinov3_vits16_pretrain_lvd1689m-08c60483.pth --steps 20000
    # continue from runs/dino_s/last.pt (same options plus --resume)
    python -m edgescene.train.dinov3.cli --dataset-dir data/processed --out-dir runs/dino_s \\
        --preset dinov3_vits16 --resume
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from dataclasses import MISSING, fields

from edgescene.train.dinov3.config import DinoTrainConfig

HELP = {
    "dataset_dir": "folder holding manifest.json (from `edgescene preprocess` or `edgescene synth`)",
    "out_dir": "where last.pt and metrics.jsonl are written",
    "preset": "DINOv3 preset (see `edgescene models`)",
    "init": "released backbone (.pth / .safetensors / HF) to start from; the heads start fresh",
    "resume": "continue exactly from OUT_DIR/last.pt",
    "steps": "total optimizer steps (all schedules span them)",
    "stop_at": "end this session after this step without changing the schedules; continue with --resume",
    "batch_size": "images per process",
    "lr": "peak learning rate (upstream: 1e-3 x 4*sqrt(global_batch/1024))",
    "min_lr": "learning rate at the end of the cosine",
    "warmup_steps": "linear learning-rate warm-up steps",
    "weight_decay": "weight decay at the start (cosine)",
    "weight_decay_end": "weight decay at the end",
    "clip_grad": "gradient-norm clip (0: off)",
    "layer_decay": "layer-wise lr decay per block",
    "patch_embed_lr_mult": "lr multiplier of the patch embedding",
    "freeze_last_layer_steps": "steps during which the heads' last layer is frozen",
    "momentum_teacher": "teacher EMA momentum at the start (cosine)",
    "momentum_teacher_end": "teacher EMA momentum at the end",
    "teacher_temp_warmup": "teacher temperature at the start of its warm-up",
    "teacher_temp": "teacher temperature after its warm-up",
    "teacher_temp_warmup_steps": "steps of the linear teacher-temperature warm-up",
    "student_temp": "student temperature",
    "global_crop_size": "global crop side, a multiple of the patch size",
    "local_crop_size": "local crop side, a multiple of the patch size",
    "local_crops_number": "local crops per image",
    "global_crops_scale": "area fraction range of global crops (two numbers)",
    "local_crops_scale": "area fraction range of local crops (two numbers)",
    "horizontal_flips": "random horizontal flips (p 0.5 per crop)",
    "mask_ratio_min_max": "iBOT mask ratio range (two numbers)",
    "mask_probability": "fraction of global crops that are masked",
    "head_prototypes": "prototypes K of the DINO and iBOT heads (upstream 65536)",
    "head_hidden_dim": "hidden width of the heads (upstream 2048)",
    "head_bottleneck_dim": "bottleneck width of the heads (upstream 256)",
    "ibot_weight": "iBOT loss weight",
    "koleo_weight": "KoLeo loss weight",
    "log_every": "steps between metrics.jsonl lines",
    "save_every": "steps between saves of last.pt",
    "seed": "random seed (weights, batches, crops, masks)",
    "device": "auto | cpu | cuda",
    "num_workers": "data-loading processes per training process",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per config field, typed from the dataclass annotations, defaults from its defaults."""
    hints = typing.get_type_hints(DinoTrainConfig)
    for f in fields(DinoTrainConfig):
        flag, hint = "--" + f.name.replace("_", "-"), hints[f.name]
        required = f.default is MISSING
        text = HELP[f.name] + ("" if required else f" (default: {f.default})")
        if hint is bool:
            action = argparse.BooleanOptionalAction if f.default else "store_true"
            parser.add_argument(flag, action=action, default=f.default, help=text)
            continue
        args = [t for t in typing.get_args(hint) if t is not type(None)]
        if typing.get_origin(hint) is tuple:
            parser.add_argument(
                flag, type=args[0], nargs=len(args), default=f.default, metavar=("LOW", "HIGH"), help=text
            )
        else:
            kind = args[0] if args else hint
            parser.add_argument(flag, type=kind, required=required, default=None if required else f.default, help=text)


def config_from_args(args: argparse.Namespace) -> DinoTrainConfig:
    values = {f.name: getattr(args, f.name) for f in fields(DinoTrainConfig)}
    for f in fields(DinoTrainConfig):
        if isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return DinoTrainConfig(**values)


def run(args: argparse.Namespace) -> int:
    from edgescene.train.common import cleanup_distributed
    from edgescene.train.dinov3.trainer import train

    config = config_from_args(args)
    if int(os.environ.get("RANK", "0")) == 0:
        print("dinov3 training config:\n" + config.format(), flush=True)
    try:
        result = train(config)
    finally:
        cleanup_distributed()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"dinov3: step {result['step']}, checkpoint {os.path.join(config.out_dir, 'last.pt')}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edgescene train dinov3", description="DINOv3 self-supervised training / fine-tuning"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"edgescene train dinov3: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
