"""``edgescene preprocess``: users' images, IR, satellite GeoTIFFs and videos -> resized PNGs + manifest.

The work is :func:`edgescene.train.data.preprocess.preprocess_folder`; this module only parses the
options, shows a progress bar and prints the summary. OpenCV, PyAV and tifffile are imported when
the command runs, so ``edgescene --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_preprocess_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-dir", type=Path, required=True, help="folder of source files (searched recursively)")
    p.add_argument("--output-dir", type=Path, required=True, help="where the PNGs and manifest.json go")
    p.add_argument("--size", type=int, default=256, help="long side of every output image, in pixels (default 256)")
    p.add_argument(
        "--max-video-frames", type=int, default=32, help="frames sampled uniformly from each video (default 32)"
    )
    p.add_argument(
        "--metadata-json",
        type=Path,
        help="JSON object: source path relative to --input-dir -> metadata (modality, intrinsics, extrinsics, ...)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="allow replacing files the existing manifest does not list, and changing "
        "--size / --max-video-frames / --tile-size against an existing manifest "
        "(unchanged sources are still skipped)",
    )
    p.add_argument(
        "--tile-size",
        type=int,
        default=2048,
        help="images with a longer side are cut into tiles of this size before resizing (default 2048)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes decoding files in parallel (default 1)")
    p.add_argument(
        "--poses",
        choices=["none", "colmap"],
        default="none",
        help="colmap: structure-from-motion (pycolmap) on each sequence (a video, or a folder of images) writes "
        "cameras and sparse depth into the manifest: pseudo ground truth for `edgescene train vggt` (needs "
        "the mapping extra)",
    )
    p.add_argument(
        "--poses-overlap", type=int, default=10, help="--poses colmap: each frame is matched with the next N (10)"
    )


def run_preprocess(args: argparse.Namespace) -> int:
    try:
        from tqdm import tqdm

        from edgescene.train.data.preprocess import PreprocessConfig, preprocess_folder
    except ImportError as exc:
        raise ImportError(
            f"this command needs the data extras ({exc.name} is missing): pip install 'edgescene[data]'"
        ) from exc

    config = PreprocessConfig(
        input_dir=args.input_dir,
        output_dir=args.output_dir,
        size=args.size,
        max_video_frames=args.max_video_frames,
        metadata_json=args.metadata_json,
        overwrite=args.overwrite,
        tile_size=args.tile_size,
        workers=args.workers,
    )
    bar = tqdm(unit="file", desc="preprocess", file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int, source: str) -> None:
        bar.total = total
        bar.update(done - bar.n)
        bar.set_postfix_str(source[-40:], refresh=False)

    if args.poses == "colmap":
        import importlib.util

        if importlib.util.find_spec("pycolmap") is None:  # before the preprocessing, not after it
            raise ImportError("--poses colmap needs pycolmap: pip install 'edgescene[mapping]'")
    if args.poses_overlap < 1:
        raise ValueError(f"--poses-overlap must be >= 1, got {args.poses_overlap}")
    try:
        summary = preprocess_folder(config, progress=progress)
    finally:
        bar.close()
    print(summary.format())
    if args.poses == "colmap":
        from edgescene.train.data.colmap_poses import estimate_poses

        results = estimate_poses(args.output_dir, overlap=args.poses_overlap, overwrite=args.overwrite)
        registered = sum(r.registered for r in results)
        frames = sum(r.frames for r in results)
        print(
            f"poses (colmap): {registered} of {frames} frames registered in {len(results)} sequence(s); cameras "
            f"and sparse depth in {args.output_dir / 'manifest.json'} (details: poses_colmap.json)"
        )
    return 0
