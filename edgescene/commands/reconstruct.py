"""``edgescene reconstruct``: images or a video -> cameras, depth and a fused point cloud."""

from __future__ import annotations

import argparse
import math

from edgescene.commands.model_choice import FAST_ATTENTION_HELP, MODEL_HELP, check_model_choice


def add_reconstruct_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", nargs="+", help="an image, several images, a folder of images, or a video file")
    p.add_argument(
        "--model",
        help=f"{MODEL_HELP} (default: the bundled vggt_small_synthetic demo model, trained on synthetic scenes only)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="allow a preset name in --model to run with random weights (tests, timing)",
    )
    p.add_argument("--out", required=True, help="output folder (created atomically; never merged into)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "tensorrt"], help="default: auto")
    p.add_argument("--window", type=int, default=8, help="keyframes per model call (default: 8)")
    p.add_argument("--overlap", type=int, default=2, help="keyframes shared by consecutive windows (default: 2)")
    p.add_argument(
        "--mode",
        choices=["crop", "pad"],
        default="crop",
        help="upstream VGGT's preprocessing: crop (width 518, height rounded to 14, centre-cropped to 518 "
        "rows: a 16:9 frame is fed whole at 294x518) or pad (long side 518, white padding to "
        "518x518) (default: crop)",
    )
    p.add_argument(
        "--long-side",
        type=int,
        help="feed frames at upstream's size rule with this long side, a multiple of 14 (default: the "
        "model's resolution, 518 for VGGT-1B); an exported artifact must serve the result",
    )
    p.add_argument(
        "--orientation",
        choices=["none", "exif"],
        default="none",
        help="none: pixels as stored, as upstream (default); exif: apply EXIF orientation (every image "
        "format) and video display rotation",
    )
    p.add_argument(
        "--branch",
        choices=["depth", "points"],
        default="depth",
        help="points from depth + cameras (default) or from the point-map head",
    )
    p.add_argument(
        "--conf-percentile",
        type=float,
        default=50.0,
        help="drop points below this confidence percentile per frame (default: 50)",
    )
    p.add_argument("--voxel-size", type=float, help="point cloud voxel in map units (default: median depth / 250)")
    p.add_argument(
        "--fuse-spacing",
        type=float,
        default=1.0,
        help="fuse pixels on a stride that keeps samples this many voxels apart near the camera (default: 1.0, "
        "no gaps; 2.0 fuses 2-4x faster at 9-20 %% worse completeness, docs/runtime.md)",
    )
    p.add_argument(
        "--fusion-backend",
        choices=("auto", "compiled", "numpy"),
        default="auto",
        help="the point map's implementation: compiled with numba (installed with the runtime extras; about 2x "
        "faster) or numpy (the same map); default: compiled where numba is installed",
    )
    p.add_argument(
        "--no-pipeline",
        action="store_true",
        help="run every stage in turn on one thread (default: decoding reads ahead, window k is aligned and "
        "fused while the model runs window k+1, depth files are written behind; the outputs are the same)",
    )
    p.add_argument("--profile", action="store_true", help="print each stage's seconds per window (also in report.json)")
    p.add_argument("--fast-attention", action="store_true", help=FAST_ATTENTION_HELP)
    p.add_argument(
        "--colmap",
        action="store_true",
        help="also write OUT/colmap: a COLMAP sparse model (cameras, images, points3D with tracks) and the "
        "keyframe images, for Gaussian splatting or COLMAP (needs the mapping extra: pycolmap)",
    )
    p.add_argument(
        "--bundle-adjust", action="store_true", help="with --colmap: refine the model with pycolmap's bundle adjustment"
    )
    p.add_argument(
        "--loop-closure",
        action="store_true",
        help="correct drift where the video comes back to a place: revisits found by image retrieval and "
        "ORB matching (or --features' DINOv3 revisits), a Sim(3) pose graph over the windows (GTSAM), "
        "cameras, point cloud and depth corrected at the end (needs the mapping extra)",
    )
    p.add_argument(
        "--viewer",
        action="store_true",
        help="watch the map grow in the browser (viser; needs the mapping extra); it stays open after the run "
        "until Ctrl-C",
    )
    p.add_argument("--viewer-port", type=int, default=8080, help="the viewer's port on 127.0.0.1 (default: 8080)")
    p.add_argument(
        "--max-points",
        type=int,
        default=2_000_000,
        help="hard bound on the fused point cloud; past it the voxel size doubles (default: 2000000)",
    )
    p.add_argument(
        "--reserve-map",
        action="store_true",
        help="allocate the point map for --max-points up front (about 85 bytes a point): memory stays "
        "flat for a long stream and a machine too small fails at the start, not hours in",
    )
    p.add_argument("--every", type=float, dest="every_s", help="video: keep one frame every this many seconds")
    p.add_argument("--max-frames", type=int, help="stop after this many input frames")
    p.add_argument(
        "--keyframe-threshold",
        type=float,
        default=4.0,
        help="image difference (0-255) that makes a new keyframe (default: 4)",
    )
    p.add_argument(
        "--max-keyframe-gap", type=int, default=8, help="force a keyframe after this many frames (default: 8)"
    )
    p.add_argument("--features", help="a DINOv3 features artifact: keyframes and revisits from its embeddings")
    p.add_argument(
        "--intrinsics",
        metavar="FILE",
        help="known camera intrinsics (JSON, pixels of the original frames): one camera "
        '{"fx", "fy", "cx", "cy"[, "width", "height"]} or {"K": 3x3}, or per image {"path": {"intrinsics": 3x3}}; '
        "used in place of the model's field of view (docs/runtime.md#known-intrinsics)",
    )
    p.add_argument(
        "--scale-from",
        metavar="SOURCE",
        help="put the outputs in metres from where the cameras were: gps:FILE (GPX, or CSV time,lat,lon,alt; "
        "also places the map in local East-North-Up), exif (GPS in the photos), poses:FILE (TUM trajectory of a "
        "rig or motion capture), baseline:METRES[@A,B] (distance between frames A and B; default the first two "
        "keyframes) (docs/runtime.md#metric-scale)",
    )
    p.add_argument(
        "--gps-offset",
        dest="gps_offset_s",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with gps:/poses: added to each frame's video time before it is matched to the track (default 0: "
        "the video starts at the track's first fix, or at its time 0 for tracks in plain seconds)",
    )
    p.add_argument(
        "--position-priors",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --loop-closure and a --scale-from track or geotags (default on): the known positions also join "
        "the pose graph as priors, the map-to-metres similarity optimised with it, so drift bends toward them "
        "(a baseline only scales: no priors). Measured on 30 unseen synthetic runs: never worse than fitting "
        "after the graph by more than 0.03 %% of the extent, up to 0.4 %% better on a long walk "
        "(docs/runtime.md#metric-scale); --no-position-priors fits after the graph instead",
    )
    p.add_argument(
        "--crs",
        metavar="EPSG:CODE",
        help="with --scale-from gps:/exif, also write the cloud as points_crs.ply (float64) in this projected CRS, "
        "e.g. EPSG:32632 for UTM zone 32N (needs the geo extra: pyproj)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar (the lines before and after still print)")


def print_model_line(progress, config) -> None:
    """The model and the size frames are fed at, printed when the first keyframe is prepared: before
    the first window runs (minutes, for VGGT-1B on a CPU)."""
    hw = "x".join(map(str, progress.input_hw or ()))
    print(
        f"reconstruct: model {progress.model}; frames fed at {hw} ({config.mode}, orientation {config.orientation})",
        flush=True,
    )


def format_intrinsics(report: dict) -> str:
    """One line on the given intrinsics and how far the model's field of view was from them."""
    median = report.get("focal_ratio_median")
    check = (
        "" if median is None else f"; the model's focal length was {median:.3f}x the given one (median over windows)"
    )
    return f"reconstruct: intrinsics given by {report['file']} ({report['kind']}){check}"


def format_metric(fit: dict) -> str:
    """One line on the metric fit: its source, kind, scale and residuals."""
    rmse = fit.get("residual_rmse_m")
    residual = "" if rmse is None else f", residual RMSE {rmse:.3g} m"
    where = ""
    if "enu_origin" in fit:
        o = fit["enu_origin"]
        where = f"; East-North-Up about lat {o['lat']:.6f}, lon {o['lon']:.6f}, alt {o['alt']:.1f} m"
    return (
        f"reconstruct: metres from {fit['scale_source']} ({fit['mode']} fit, {fit['inliers']} of "
        f"{fit['positions_used']} positions kept{residual}; scale {fit['scale']:.4g}){where}"
    )


def run_reconstruct(args: argparse.Namespace) -> int:
    from edgescene.runtime.progress import ProgressBar
    from edgescene.runtime.reconstruct import CLI_REAL_MODEL, ReconstructConfig, model_notes, reconstruct_to_folder

    check_model_choice(args.model, random_weights=args.random_weights, has_weights_option=False)

    config = ReconstructConfig(
        window=args.window,
        overlap=args.overlap,
        mode=args.mode,
        branch=args.branch,
        conf_percentile=args.conf_percentile,
        voxel_size=args.voxel_size,
        fuse_spacing=args.fuse_spacing,
        fusion_backend=args.fusion_backend,
        max_points=args.max_points,
        reserve_map=args.reserve_map,
        every_s=args.every_s,
        max_frames=args.max_frames,
        keyframe_threshold=args.keyframe_threshold,
        max_keyframe_gap=args.max_keyframe_gap,
        device=args.device,
        features=args.features,
        orientation=args.orientation,
        long_side=args.long_side,
        pipeline=not args.no_pipeline,
        fast_attention=args.fast_attention,
        loop_closure=args.loop_closure,
        intrinsics=args.intrinsics,
        scale_from=args.scale_from,
        gps_offset_s=args.gps_offset_s,
        crs=args.crs,
        position_priors=args.position_priors,
    )
    from edgescene.assets import default_model_dir

    model = args.model or default_model_dir()
    if args.model is None and not (default_model_dir() / "artifact.json").is_file():
        raise FileNotFoundError(f"no bundled model at {default_model_dir()}; pass --model ({MODEL_HELP})")
    if args.bundle_adjust and not args.colmap:
        raise ValueError("--bundle-adjust refines the COLMAP model: add --colmap")
    if args.colmap:
        import importlib.util

        if importlib.util.find_spec("pycolmap") is None:  # before the run, not after it
            raise ImportError("--colmap needs pycolmap: pip install 'edgescene[mapping]'")
    solver = None
    if args.loop_closure:
        import importlib.util

        if importlib.util.find_spec("gtsam") is None:  # before the run, not after it
            raise ImportError("--loop-closure needs gtsam: pip install 'edgescene[mapping]'")
        from edgescene.mapping.pose_graph import solve as solver
    viewer = None
    if args.viewer:
        from edgescene.mapping.viewer import SceneViewer

        viewer = SceneViewer(port=args.viewer_port)
        print(f"reconstruct: the map grows at {viewer.url}", flush=True)
    source = args.input[0] if len(args.input) == 1 else args.input
    bar = ProgressBar(disable=args.quiet, on_start=lambda p: print_model_line(p, config))
    try:
        report = reconstruct_to_folder(
            source,
            model,
            args.out,
            config,
            overwrite=args.overwrite,
            progress=False,
            on_progress=bar,
            on_window=(lambda update: viewer.update(**update)) if viewer is not None else None,
            solver=solver,
        )
    except BaseException:
        bar.close()
        if viewer is not None:
            viewer.stop()
        raise
    t = report["timings_s"]
    pre = report["preprocessing"]
    for note in pre["notes"] + model_notes(report["model"], CLI_REAL_MODEL):  # report.json's notes, in flags
        print(f"reconstruct: note: {note}")
    print(
        f"reconstruct: {report['frames_seen']} frames, {report['keyframes']} keyframes, "
        f"{report['windows']} model calls, "
        f"{report['points']} points in {t['total_s']:.1f} s (model {t.get('model_s', 0):.1f} s) on "
        f"{report['backend']['name']}/{report['backend']['device']} -> {args.out}"
    )
    if report["intrinsics"]["source"] == "given":
        print(format_intrinsics(report["intrinsics"]))
    if "loop_closure" in report:
        print(format_loop_closure(report["loop_closure"]))
    if "metric" in report:
        print(format_metric(report["metric"]))
    if args.profile:
        print(format_profile(report))
    for name in report["outputs"]:
        print(f"  {name}")
    if args.colmap:
        from edgescene.commands.colmap import print_colmap
        from edgescene.mapping.colmap import export_colmap

        print_colmap(export_colmap(args.out, bundle_adjust=args.bundle_adjust, overwrite=True))
    if viewer is not None:
        from edgescene.commands.view import serve_until_interrupted

        serve_until_interrupted(viewer, "reconstruct")
    return 0


def format_loop_closure(lc: dict) -> str:
    """One line (two when applied) saying what loop closure found and did."""
    found = f"reconstruct: loop closure: {len(lc['loops'])} loop edge(s) over {lc['windows']} windows"
    if lc.get("position_priors"):
        found += f" and {lc['position_priors']} known position(s)"
    if not lc["applied"]:
        return f"{found}; {lc.get('note', 'nothing corrected')}"
    m = lc["max_correction"]
    return (
        f"{found}; pose graph error {lc['solver']['initial_error']:.4g} -> {lc['solver']['final_error']:.4g}; "
        f"largest window correction {m['translation']:.4g} map units, {m['rotation_deg']:.3g} deg, "
        f"scale x{math.exp(m['scale']):.4f}"
    )


PROFILE_STAGES = (
    "decode_s", "keyframes_s", "preprocess_s", "model_s", "align_s", "fusion_s", "loops_s", "write_s"
)  # fmt: skip


def format_profile(report: dict) -> str:
    """The per-window stage table of a run report (seconds; stages on other threads overlap)."""
    names = [s.removesuffix("_s") for s in PROFILE_STAGES]
    lines = [
        "reconstruct: profile (seconds of work per stage; with the pipeline, stages overlap in time)",
        "  " + f"{'window':>6} {'frames':>6} " + " ".join(f"{n:>10}" for n in names),
    ]
    for row in report["window_timings_s"]:
        cells = " ".join(f"{row.get(s, 0.0):>10.4f}" for s in PROFILE_STAGES)
        lines.append("  " + f"{row['window']:>6} {row['new_frames']:>6} " + cells)
    t = report["timings_s"]
    lines.append("  " + f"{'total':>6} {report['keyframes']:>6} " + " ".join(f"{t[s]:>10.4f}" for s in PROFILE_STAGES))
    lines.append(
        f"  wall {t['total_s']:.3f} s = {t['total_over_model']:.2f} x the model's {t['model_s']:.3f} s "
        f"(opening the model: {t['open_s']:.3f} s; final outputs: {t['outputs_s']:.3f} s; "
        f"pipeline {'on' if report['config']['pipeline'] else 'off'})"
    )
    steady = report.get("model_busy_steady_state")
    if steady is not None:
        lines.append(
            f"  model busy {100 * steady:.0f} % of the time over windows 1 to {len(report['window_timings_s']) - 3} "
            "(the steady state of a long video; well under 100 %: the runtime, not the model, sets the pace)"
        )
    return "\n".join(lines)
