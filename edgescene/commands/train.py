"""``edgescene train dinov3|vggt ...``: the trainers, each parsing its own options.

Parsing is delegated so ``edgescene --help`` never imports torch; ``edgescene train vggt --help``
shows the VGGT trainer's options. Multi-GPU: ``torchrun --nproc_per_node=N -m
edgescene.train.vggt.cli ...`` (or ``edgescene.train.dinov3.cli``).
"""

from __future__ import annotations

import argparse
import importlib

TRAINERS = {"dinov3": "edgescene.train.dinov3.cli", "vggt": "edgescene.train.vggt.cli"}


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=sorted(TRAINERS), help="which model to train")
    p.add_argument(
        "options", nargs=argparse.REMAINDER, help="the trainer's options (see `edgescene train KIND --help`)"
    )


def run_train(args: argparse.Namespace) -> int:
    module = importlib.import_module(TRAINERS[args.kind])
    parser = argparse.ArgumentParser(prog=f"edgescene train {args.kind}", description=module.__doc__.splitlines()[0])
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(args.options)) or 0)
