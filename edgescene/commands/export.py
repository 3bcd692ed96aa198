"""``edgescene export``: a checkpoint or preset -> an artifact folder accepted by the parity gate."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgescene.commands.model_choice import ModelChoiceError, check_model_choice
from edgescene.export.formats import FORMATS, help_text


def _frames_range(text: str) -> tuple[int, int, int]:
    parts = text.split(":")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected MIN:OPT:MAX (e.g. 1:4:16), got {text!r}")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    from edgescene.core.artifact import parse_size

    try:
        return tuple(parse_size(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    # edgescene.cli.HelpFormatter (set by the CLI) keeps the description's line breaks
    p.epilog = "formats (name, precisions, what it is):\n" + help_text()
    p.add_argument(
        "--model",
        required=True,
        help="a preset (see `edgescene models`) with --weights or --random-weights, a checkpoint file or a VGGT Hub id",
    )
    p.add_argument("--weights", help="checkpoint for the preset named in --model")
    p.add_argument("--random-weights", action="store_true", help="export a preset with random weights (tests, timing)")
    p.add_argument("--format", required=True, help=f"one of: {', '.join(FORMATS)}")
    p.add_argument("--out", required=True, help="artifact folder to create")
    frames = p.add_mutually_exclusive_group()
    frames.add_argument("--frames", type=int, help="a fixed frame (batch) count")
    frames.add_argument(
        "--frames-range",
        type=_frames_range,
        metavar="MIN:OPT:MAX",
        help="the frame counts the artifact serves (default: 1:2:8 for VGGT, 1:1:8 for DINOv3)",
    )
    p.add_argument(
        "--height",
        type=int,
        help="input height in pixels (default: 392 VGGT, 224 DINOv3). Every format "
        "serves this one size; the runtime pads other aspect ratios into it "
        "whole (a 16:9 video: 294x518 in 392x518), never cropping more than "
        "upstream VGGT; the PyTorch backend serves every size",
    )
    p.add_argument("--width", type=int, help="input width in pixels (default: 518 VGGT, 224 DINOv3)")
    p.add_argument(
        "--sizes",
        type=_sizes,
        metavar="HxW,HxW,...",
        help="VGGT: serve several input sizes from one artifact, each exported and gated at its size "
        "(the first is the default), e.g. 294x518,350x518,392x518,518x518: upstream's crop-mode sizes "
        "for 16:9, 3:2, 4:3 and square or portrait inputs (pad mode is always 518x518); each size "
        "carries its own copy of the weights",
    )
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="for tensorrt and triton (others imply it)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default: 17)")
    p.add_argument("--track", action="store_true", help="include VGGT's track head (query_points input)")
    p.add_argument("--workspace-gb", type=float, help="TensorRT builder workspace (default: 8)")
    p.add_argument(
        "--calibration",
        help="onnx-int8-static: an image folder or a video whose frames set the "
        "activation ranges (default: the bundled sample video)",
    )
    p.add_argument(
        "--fast-attention",
        action="store_true",
        help="VGGT: export the global attention with token merging (training-free, faster at many frames, "
        "not exact); the parity gate compares with the fast PyTorch model",
    )
    p.add_argument(
        "--unproject",
        action="store_true",
        help="VGGT: add the output depth_points, depth unprojected with the predicted cameras inside the graph "
        "(on the GPU where the model runs there), which the runtime then uses instead of its own CPU unprojection",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def next_commands(result) -> list[str]:
    """Commands to use the artifact, limited to commands this edgescene has."""
    from edgescene.assets import sample_dir
    from edgescene.commands import COMMANDS

    names = {c.name for c in COMMANDS}
    folder = result.folder
    lines = []
    if "reconstruct" in names and result.artifact.model["family"] == "vggt":
        lines.append(f"edgescene reconstruct {sample_dir() / 'sample.mp4'} --model {folder} --out out/reconstruction")
    if "bench" in names:
        lines.append(f"edgescene bench --model {folder} --out out/bench")
    config = result.artifact.files.get("config")
    if result.artifact.format == "triton" and config:
        model = config.split("/")[0]
        lines.append(
            f"tritonserver --model-repository={folder}  # or the Triton container, see edgescene/export/triton.py"
        )
        if "reconstruct" in names and result.artifact.model["family"] == "vggt":
            lines.append(
                f"edgescene reconstruct {sample_dir() / 'sample.mp4'} --model triton://localhost:8000/{model} "
                "--out out/reconstruction"
            )
    lines.append(
        f"python -c \"from edgescene.runtime.session import open_session; s = open_session('{folder}'); "
        f'print([t.name for t in s.input_spec()])"'
    )
    return lines


def run_export(args: argparse.Namespace) -> int:
    from edgescene.export.pipeline import ExportConfig, export_model

    check_model_choice(args.model, args.weights, args.random_weights)
    folder = Path(args.model).expanduser()
    if folder.is_dir():  # an artifact folder (the bundled model's, an earlier export): its weights are inside
        inside = [p.name for p in sorted(folder.iterdir()) if p.suffix in (".safetensors", ".pt", ".pth")]
        if inside:
            raise ModelChoiceError(
                f"--model {args.model} is a folder; export reads a checkpoint file: pass the one inside it, "
                f"--model {folder / inside[0]}"
            )
        raise ModelChoiceError(
            f"--model {args.model} is a folder without a checkpoint (.safetensors / .pt / .pth) in it; pass the "
            "checkpoint file the model came from, a Hub id (facebook/VGGT-1B) or a preset"
        )
    if args.model.startswith("triton://"):
        raise ModelChoiceError(
            f"--model {args.model}: export reads PyTorch weights (a checkpoint, a Hub id or a preset); a model "
            "on a Triton server is already exported: pass the checkpoint it came from"
        )

    config = ExportConfig(
        model=args.model,
        weights=args.weights,
        format=args.format,
        out=args.out,
        frames=args.frames,
        frames_range=args.frames_range,
        height=args.height,
        width=args.width,
        precision=args.precision,
        opset=args.opset,
        track=args.track,
        workspace_gb=args.workspace_gb,
        calibration=args.calibration,
        overwrite=args.overwrite,
        sizes=args.sizes,
        fast_attention=args.fast_attention,
        unproject=args.unproject,
    )
    result = export_model(config)
    print(f"export: {'ACCEPTED' if result.accepted else 'REJECTED'} in {result.elapsed_s:.1f} s -> {result.folder}")
    if result.artifact.device.get("verified_on_gpu") is False:
        print(f"export: {result.artifact.device['note']}")
    for name, mb in result.sizes_mb.items():
        print(f"  {name:<40} {mb:>10.2f} MB")
    if not result.accepted:
        print("export: the artifact failed the parity gate; it is kept for inspection but not accepted")
        return 3
    print("next:")
    for line in next_commands(result):
        print(f"  {line}")
    return 0
