"""``edgescene colmap OUT_DIR``: the COLMAP sparse model of a reconstruction folder (pycolmap)."""

from __future__ import annotations

import argparse


def add_colmap_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recon_dir", help="a folder written by `edgescene reconstruct`")
    p.add_argument(
        "--input",
        help="the video, or the folder of images, the reconstruction was made from (default: the path it "
        "recorded; needed when that input has moved)",
    )
    p.add_argument(
        "--bundle-adjust",
        action="store_true",
        help="refine poses and points with pycolmap's bundle adjustment; prints the reprojection error before "
        "and after",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR/colmap")


def print_colmap(result) -> None:
    print(
        f"colmap: {result.images} images, {result.points3D} points3D, {result.observations} observations "
        f"(mean track {result.mean_track_length}) -> {result.folder}/sparse/0 and {result.folder}/images"
    )
    if result.bundle_adjusted:
        print(
            f"colmap: bundle adjustment: mean reprojection error {result.reprojection_error_before_px:.3f} -> "
            f"{result.reprojection_error_px:.3f} px ({result.points3D_removed} points above the error bound removed)"
        )
    else:
        print(f"colmap: mean reprojection error {result.reprojection_error_px:.3f} px")


def run_colmap(args: argparse.Namespace) -> int:
    from edgescene.mapping.colmap import export_colmap

    result = export_colmap(
        args.recon_dir, source=args.input, bundle_adjust=args.bundle_adjust, overwrite=args.overwrite
    )
    print_colmap(result)
    return 0
