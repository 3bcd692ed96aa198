"""Bundle a trained small VGGT as edgescene's default model, with every figure of its model card.

    python scripts/bundle_demo_model.py --checkpoint runs/vggt_small_v2/last.pt \
        --training runs/vggt_small_v2/training.json --out edgescene/assets/models/vggt_small_synthetic --overwrite

Writes, into a new folder that replaces ``--out`` only once everything passed:

- ``model.safetensors``: the weights in float16 (the loader casts them back to float32);
- ``model.onnx`` + ``artifact.json``: the fp32 ONNX export (126 x 168, 1 to 8 frames) accepted by
  the parity gate, marked as a demonstration model (``model.demo``);
- ``eval.json``: every figure of :mod:`edgescene.bench.model_card`, measured on the exported
  model, on data regenerated from seeds the training never used; ``training``: the ``--training``
  JSON (commands, steps, wall clock, hardware) as given.

The model card (``MODEL_CARD.md``) is prose written from ``eval.json``; it is copied over from the
old folder and must be brought up to date by hand.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from edgescene.bench.model_card import HEIGHT, WIDTH, measure

DEMO_NOTE = "trained on synthetic scenes only, not on real photos"


def write_weights(checkpoint: Path, folder: Path) -> tuple[Path, str]:
    """-> the float16 weights file and the checkpoint's preset."""
    import torch
    from safetensors.torch import save_file

    from edgescene.train.common import load_checkpoint

    data = load_checkpoint(checkpoint, kind="vggt")
    state = data["model"]
    path = folder / "model.safetensors"
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}, str(path))
    return path, data["preset"]


def export_onnx(weights: Path, preset: str, folder: Path) -> None:
    from edgescene.export.pipeline import ExportConfig, export_model

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "onnx"
        config = ExportConfig(
            model=preset,
            weights=str(weights),
            format="onnx",
            out=str(out),
            frames_range=(1, 8, 8),
            height=HEIGHT,
            width=WIDTH,
        )
        result = export_model(config)
        if not result.artifact.accepted:
            raise RuntimeError(f"the ONNX export failed its parity gate: {result.artifact.parity}")
        artifact = json.loads((out / "artifact.json").read_text())
        artifact["model"]["demo"] = DEMO_NOTE
        (folder / "artifact.json").write_text(json.dumps(artifact, indent=1) + "\n")
        shutil.copy(out / "model.onnx", folder / "model.onnx")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the training run's last.pt (or any of its checkpoints)")
    parser.add_argument("--training", required=True, help="JSON with the training's commands, steps, time, hardware")
    parser.add_argument("--out", required=True, help="the bundled model's folder")
    parser.add_argument("--overwrite", action="store_true", help="replace --out once every figure is measured")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        parser.error(f"{out} exists; pass --overwrite to replace it (it is replaced only if everything succeeds)")
    training = json.loads(Path(args.training).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        work, folder = Path(tmp), Path(tmp) / "bundle"
        folder.mkdir()
        weights, preset = write_weights(Path(args.checkpoint), folder)
        export_onnx(weights, preset, folder)
        print(f"exported: {(folder / 'model.onnx').stat().st_size / 1e6:.1f} MB ONNX", flush=True)
        figures = {"model": out.name, **measure(folder, work, log=lambda line: print(line, flush=True))}
        figures["training"] = training
        (folder / "eval.json").write_text(json.dumps(figures, indent=1) + "\n")
        if (out / "MODEL_CARD.md").exists():
            shutil.copy(out / "MODEL_CARD.md", folder / "MODEL_CARD.md")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(folder, out)
    print(json.dumps({k: v for k, v in figures.items() if k != "training"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
