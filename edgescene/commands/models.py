"""``edgescene models`` and ``edgescene inspect``: what presets exist, and what a checkpoint file is."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ImportError("this command needs PyTorch: pip install 'edgescene[torch]'") from exc


def add_models_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", choices=["dinov3", "vggt"], help="only this model family")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def format_params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def run_models(args: argparse.Namespace) -> int:
    _require_torch()
    from edgescene.models import list_models

    specs = [s for s in list_models() if args.family in (None, s.family)]
    rows = [
        {
            "name": s.name,
            "family": s.family,
            "parameters": s.num_parameters,
            "patch": s.patch_size,
            "dim": s.embed_dim,
            "depth": s.depth,
            "weights": s.weights,
        }
        for s in specs
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'name':<24} {'family':<7} {'params':>14} {'':>7} {'patch':>5} {'dim':>5} {'depth':>5}  weights"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['name']:<24} {r['family']:<7} {r['parameters']:>14,} {format_params(r['parameters']):>7} "
            f"{r['patch']:>5} {r['dim']:>5} {r['depth']:>5}  {r['weights']}"
        )
    return 0


def add_inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="a .pth / .pt / .safetensors file")
    p.add_argument("--preset", help="compare against this preset instead of detecting it")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run_inspect(args: argparse.Namespace) -> int:
    _require_torch()
    from edgescene.models.weights.inspect import inspect_checkpoint

    report = inspect_checkpoint(args.checkpoint, preset=args.preset)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:<16} {value}")
    return 0


def add_download_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo-id", default="facebook/VGGT-1B", help="Hugging Face repo (default: facebook/VGGT-1B)")
    p.add_argument("--filename", help="file in the repo (default: model.safetensors, then model.pt)")
    p.add_argument("--revision", help="branch, tag or commit")
    p.add_argument("--target-dir", type=Path, default=Path("models/vggt"), help="where the checked copy goes")
    p.add_argument("--overwrite", action="store_true", help="replace a different file of the same name")


def run_download(args: argparse.Namespace) -> int:
    _require_torch()
    import shutil

    from edgescene.core.atomic import atomic_write
    from edgescene.models.weights.common import sha256_of
    from edgescene.models.weights.inspect import inspect_checkpoint
    from edgescene.models.weights.vggt import download_from_hub

    cached = download_from_hub(args.repo_id, args.filename, args.revision)
    report = inspect_checkpoint(cached)  # a file that is not a VGGT / DINOv3 checkpoint stops here
    target = args.target_dir / cached.name
    if target.exists() and sha256_of(target) != sha256_of(cached) and not args.overwrite:
        raise FileExistsError(
            f"{target} exists and differs from {args.repo_id}/{cached.name}; pass --overwrite or another --target-dir"
        )
    args.target_dir.mkdir(parents=True, exist_ok=True)
    if not target.exists() or args.overwrite:
        with open(cached, "rb") as src, atomic_write(target) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    print(f"{target}: {report['family']} preset {report['preset']}, {report['parameters']} parameters")
    return 0
