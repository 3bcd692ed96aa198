"""``edgescene synth``: render a synthetic multi-view dataset with exact ground truth."""

from __future__ import annotations

import argparse

TRAJECTORIES = ("orbit", "walk", "handheld")  # validated by SynthConfig; no heavy import for --help


def add_synth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (must not already hold a dataset unless --overwrite)")
    p.add_argument("--scenes", type=int, default=8, help="number of scenes, one sequence each (default: 8)")
    p.add_argument("--frames", type=int, default=24, help="frames per sequence (default: 24)")
    p.add_argument("--width", type=int, default=256, help="image width in pixels (default: 256)")
    p.add_argument("--height", type=int, default=192, help="image height in pixels (default: 192)")
    p.add_argument(
        "--trajectories",
        default=",".join(TRAJECTORIES),
        help=f"comma-separated camera paths, used in turn (default: {','.join(TRAJECTORIES)}; for loop closure: "
        "loop_orbit (1.25 turns), figure_eight)",
    )
    p.add_argument(
        "--layouts",
        default="objects",
        help="comma-separated kinds of scene, changing every len(trajectories) scenes so each meets every "
        "trajectory: objects (on a plane to the horizon), room (a closed hall: walls, ceiling, posters), "
        "terrain (rolling ground, mountains) (default: objects)",
    )
    p.add_argument(
        "--textures",
        choices=("procedural", "natural", "mixed"),
        default="procedural",
        help="surface textures: patterns, crops of the photographs scikit-image ships, or either per surface "
        "(default: procedural); a seed's geometry is the same in every style",
    )
    p.add_argument(
        "--camera-effects",
        action="store_true",
        help="frames as a camera takes them: exposure drift, vignetting, blur and sensor noise (geometry unchanged)",
    )
    p.add_argument(
        "--lens-distortion",
        action="store_true",
        help="frames taken through a lens (OpenCV radial + tangential model, drawn per sequence); the manifest "
        "records the coefficients and training views them as a pinhole camera would",
    )
    p.add_argument("--seed", type=int, default=0, help="base seed; scene i uses seed*100003+i (default: 0)")
    p.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")


def run_synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from edgescene.train.data.synthetic import SynthConfig, generate_dataset

    config = SynthConfig(
        out_dir=args.out,
        scenes=args.scenes,
        frames=args.frames,
        width=args.width,
        height=args.height,
        trajectories=tuple(t.strip() for t in args.trajectories.split(",") if t.strip()),
        layouts=tuple(name.strip() for name in args.layouts.split(",") if name.strip()),
        seed=args.seed,
        textures=args.textures,
        camera_effects=args.camera_effects,
        lens_distortion=args.lens_distortion,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    with tqdm(total=config.scenes, unit="scene", desc="synth") as bar:
        summary = generate_dataset(config, progress=lambda done, total: bar.update(done - bar.n))
    print(summary.format())
    return 0
