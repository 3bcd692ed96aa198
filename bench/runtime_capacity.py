"""How fast the runtime itself is, and whether it keeps up with a GPU model: the oracle bench.

    python -m edgescene.bench.runtime_capacity --out docs/bench/runtime
    python -m edgescene.bench.runtime_capacity --sizes 392x518 --frames 48 --model-latency-ms 30

For each size (294x518, 392x518 and 518x518 by default) it renders a synthetic walk through a room
(:mod:`edgescene.bench.synthetic_scene`), encodes it as an H.264 MP4, and reconstructs it with
:func:`edgescene.runtime.reconstruct.reconstruct_to_folder`, the CLI's own job (decode, keyframes,
preprocessing, the model, alignment, fusion, depth files and every output), where the model is an
oracle (:mod:`edgescene.bench.oracle`) that answers each window with the ground truth plus noise.
Every keyframe is kept (``keyframe_threshold=0``), so frames and keyframes are the same here.

It reports, per size:

- **runtime_ms_per_frame**: each stage's busy milliseconds per keyframe with no model time
  (sequential, ``--no-pipeline``, so stages do not overlap; the oracle's time is its own stage,
  ``model_s``, and left out), and their sum: what the runtime costs beside the model;
- **pipeline**: the oracle made to take ``--model-latency-ms`` per frame (sleeping, releasing the
  GIL: a GPU model that leaves the CPUs free), the pipeline on (the default): end-to-end keyframes
  per second against the model alone (the same windows, back to back), and their ratio; beside it
  the ratio up to the last depth file, before the fused cloud is written once at the end (a cost of
  the map's size that a longer video amortises), and the sustained ratio: the fraction of the time
  the model was busy in the steady state (from the start of the second window to the end of the
  third-to-last, :func:`sustained_model_busy`), what a long video gets;
- **accuracy** (the sequential runs, one per seed): camera ATE after a Sim(3) alignment of the
  camera centres onto the truth, and the fused cloud against the true surfaces: accuracy (median
  distance of a fused point to the nearest true surface sample) and completeness (median distance
  of a true surface sample to the nearest fused point), in metres, in the map's frame (the first
  camera's, exact) at the scale that fits the camera centres best, so drift along the walk counts.

Timings are ratios from one run on one machine: noisy machines change absolute times, not which
stage dominates. Writes ``runtime_capacity.json`` and ``runtime_capacity.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgescene import __version__
from edgescene.bench.metrics import ate, camera_centres
from edgescene.bench.oracle import OracleNoise, OracleSession
from edgescene.bench.synthetic_scene import SyntheticVideo, make_video, surface_samples
from edgescene.runtime.outputs import read_ply
from edgescene.runtime.reconstruct import ReconstructConfig, reconstruct_to_folder
from edgescene.runtime.stream import STAGES, sustained_model_busy

SIZES = ((294, 518), (392, 518), (518, 518))
RUNTIME_STAGES = tuple(s for s in STAGES if s != "model_s")
SURFACE_SPACING = 0.01  # metres between the true surface samples accuracy is measured against


def parse_size(text: str) -> tuple[int, int]:
    """``"392x518"`` (H x W) -> (392, 518)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must be HxW, e.g. 392x518, got {text!r}") from None
    if h < 14 or w < 14 or h % 14 or w % 14:
        raise ValueError(f"size {text}: H and W must be multiples of 14 (VGGT's patch), at least 14")
    return h, w


def write_video(video: SyntheticVideo, path: Path, fps: int = 30, crf: int = 12) -> Path:
    """The frames as an H.264 MP4 (yuv420p, ``crf``: high quality), what a camera or phone gives."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = video.hw
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for rgb in video.rgb:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _config(pipeline: bool, **overrides) -> ReconstructConfig:
    # every frame a keyframe: the walk changes the image every frame, and a threshold of 0 keeps any change
    return ReconstructConfig(keyframe_threshold=0.0, pipeline=pipeline, **overrides)


def _reconstruct(frames: Path, session: OracleSession, out: Path, config: ReconstructConfig) -> dict:
    return reconstruct_to_folder(frames, session, out, config, overwrite=True, progress=False)


def accuracy(out: Path, video: SyntheticVideo, surface: np.ndarray) -> dict[str, float]:
    """ATE and the fused cloud's accuracy / completeness (metres) of a reconstruction folder."""
    from scipy.spatial import cKDTree

    cameras = json.loads((out / "cameras.json").read_text())["frames"]
    extrinsics = np.array([c["extrinsics"] for c in cameras])
    truth = video.extrinsics[[c["index"] for c in cameras]]
    pred_c, true_c = camera_centres(extrinsics), camera_centres(truth)
    trajectory = ate(pred_c, true_c)
    # the map frame is the first keyframe's camera frame at the first window's scale: put the truth
    # there (its first camera is exact; the scale is the least-squares one of the camera centres), so
    # drift along the walk counts, as a user sees it
    r0, t0 = truth[0][:, :3], truth[0][:, 3]
    true_in_map = true_c @ r0.T + t0
    scale = float(np.sum(pred_c * true_in_map) / np.sum(true_in_map * true_in_map))
    points, _ = read_ply(out / "points.ply")
    fused = points.astype(np.float64) / scale  # metres, first camera's frame
    truth_surface = surface @ r0.T + t0
    to_truth, _ = cKDTree(truth_surface).query(fused, workers=1)
    to_fused, _ = cKDTree(fused).query(truth_surface, workers=1)
    return {
        "ate_rmse_m": trajectory["ate_rmse"],
        "ate_rel": trajectory["ate_rel"],
        "accuracy_m": float(np.median(to_truth)),
        "completeness_m": float(np.median(to_fused)),
        "fused_points": int(len(points)),
    }


def model_alone_s(session: OracleSession, windows: list[tuple[int, ...]], repeats: int = 3) -> float:
    """Seconds the oracle needs for these windows back to back (median of repeats): the model-only floor."""
    batches = [session.video.rgb[list(w)].transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255) for w in windows]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            session({"images": batch})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_size(
    hw: tuple[int, int],
    frames: int,
    seeds: tuple[int, ...],
    latency_ms: float,
    repeats: int,
    noise: OracleNoise,
    work: Path,
) -> dict:
    """Every figure of one size (see the module docstring)."""
    video = make_video(frames, hw, seed=seeds[0])
    folder = write_video(video, work / f"walk_{hw[0]}x{hw[1]}_{seeds[0]}.mp4")
    session = OracleSession(video, noise, latency_ms=0.0)
    # sequential, no model latency: the runtime's own stages (first run warms caches and the oracle's answers)
    stage_rows = []
    for i in range(repeats + 1):
        report = _reconstruct(folder, session, work / "out", _config(pipeline=False))
        if i:
            stage_rows.append(report)
    keyframes = stage_rows[0]["keyframes"]
    per_frame = {
        stage: statistics.median(r["timings_s"][stage] for r in stage_rows) * 1000.0 / keyframes
        for stage in (*RUNTIME_STAGES, "outputs_s")
    }
    runtime_ms = sum(per_frame[s] for s in RUNTIME_STAGES)  # write_s already holds outputs_s
    result: dict = {
        "size": f"{hw[0]}x{hw[1]}",
        "frames": frames,
        "keyframes": keyframes,
        "windows": stage_rows[0]["windows"],
        "runtime_ms_per_frame": {k.removesuffix("_s"): round(v, 2) for k, v in per_frame.items()},
        "runtime_ms_per_frame_total": round(runtime_ms, 2),
        "sequential_total_s": [r["timings_s"]["total_s"] for r in stage_rows],
    }
    windows = list(dict.fromkeys(session.calls))  # each window once, in order
    # the pipeline against a stand-in GPU model
    if latency_ms > 0:
        session.latency_ms = latency_ms
        alone = model_alone_s(session, windows)
        totals, streaming, sustained = [], [], []
        for _ in range(repeats):
            report = _reconstruct(folder, session, work / "out", _config(pipeline=True))
            totals.append(report["timings_s"]["total_s"])
            streaming.append(report["timings_s"]["total_s"] - report["timings_s"]["outputs_s"])
            sustained.append(sustained_model_busy(report["window_timings_s"]))
        total = statistics.median(totals)
        stream_s = statistics.median(streaming)
        result["pipeline"] = {
            "model_latency_ms_per_frame": latency_ms,
            "model_alone_s": round(alone, 4),
            "model_alone_keyframes_per_s": round(keyframes / alone, 2),
            "end_to_end_s": [round(t, 4) for t in totals],
            "end_to_end_keyframes_per_s": round(keyframes / total, 2),
            "ratio_to_model": round(alone / total, 3),
            # the same run up to the last depth file, before the whole map is written once (points.ply,
            # scene.glb: a cost of the map's size, not of the frames, that a longer video amortises)
            "streaming_s": round(stream_s, 4),
            "streaming_ratio_to_model": round(alone / stream_s, 3),
            # the model's busy fraction from the second window to the third-to-last (steady state)
            "sustained_ratio_to_model": (
                round(statistics.median(sustained), 3) if all(v is not None for v in sustained) else None
            ),
        }
        session.latency_ms = 0.0
    # accuracy, one sequential run per seed (the walk and the noise change with it)
    rows = []
    for seed in seeds:
        video_s = video if seed == seeds[0] else make_video(frames, hw, seed=seed)
        folder_s = folder if seed == seeds[0] else write_video(video_s, work / f"walk_{hw[0]}x{hw[1]}_{seed}.mp4")
        oracle = session if seed == seeds[0] else OracleSession(video_s, OracleNoise(**{**asdict(noise), "seed": seed}))
        out = work / f"acc_{seed}"
        _reconstruct(folder_s, oracle, out, _config(pipeline=False))
        rows.append({"seed": seed, **accuracy(out, video_s, surface_samples(video_s, SURFACE_SPACING))})
    result["accuracy"] = rows
    result["accuracy_mean"] = {
        k: float(np.mean([r[k] for r in rows])) for k in ("ate_rmse_m", "ate_rel", "accuracy_m", "completeness_m")
    }
    return result


def run(
    sizes=SIZES,
    frames: int = 48,
    seeds: tuple[int, ...] = (0, 1, 2),
    latency_ms: float = 30.0,
    repeats: int = 2,
    noise: OracleNoise | None = None,
) -> dict:
    noise = noise or OracleNoise()
    if frames < 8:
        raise ValueError(f"frames must be >= 8 (one window), got {frames}")
    if not seeds:
        raise ValueError("seeds: give at least one")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgescene-capacity-") as tmp:
        for hw in sizes:
            rows.append(measure_size(tuple(hw), frames, tuple(seeds), latency_ms, repeats, noise, Path(tmp)))
    return {
        "bench": "runtime_capacity",
        "edgescene": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": _cpu_name(), "cores": _cores(), "python": platform.python_version()},
        "settings": {
            "frames": frames,
            "seeds": list(seeds),
            "repeats": repeats,
            "noise": asdict(noise),
            "config": "ReconstructConfig defaults, keyframe_threshold=0 (every frame a keyframe)",
        },
        "sizes": rows,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def markdown(result: dict) -> str:
    """The report as Markdown tables."""
    lines = [
        "# Runtime capacity (oracle model)",
        "",
        f"edgescene {result['edgescene']}, {result['created_utc']}, {result['machine']['cpu']}, "
        f"{result['machine']['cores']} cores. `python -m edgescene.bench.runtime_capacity` "
        f"({result['settings']['frames']} frames per size, seeds {result['settings']['seeds']}).",
        "",
        "## The runtime's own work, ms per keyframe (sequential, model time excluded)",
        "",
    ]
    stages = list(result["sizes"][0]["runtime_ms_per_frame"])
    lines.append("| size | " + " | ".join(stages) + " | total |")
    lines.append("|---" * (len(stages) + 2) + "|")
    for row in result["sizes"]:
        values = " | ".join(f"{row['runtime_ms_per_frame'][s]:.1f}" for s in stages)
        lines.append(f"| {row['size']} | {values} | **{row['runtime_ms_per_frame_total']:.1f}** |")
    lines += ["", "(`write` includes `outputs`: points, scene, cameras written once at the end.)", ""]
    if all("pipeline" in r for r in result["sizes"]):
        lines += [
            "## End to end against a stand-in GPU model (pipeline on)",
            "",
            "| size | model ms/frame | model alone, keyframes/s | end to end, keyframes/s | ratio "
            "| ratio before the final cloud is written | sustained ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in result["sizes"]:
            p = row["pipeline"]
            lines.append(
                f"| {row['size']} | {p['model_latency_ms_per_frame']:g} | {p['model_alone_keyframes_per_s']:.1f} "
                f"| {p['end_to_end_keyframes_per_s']:.1f} | **{p['ratio_to_model']:.2f}** "
                f"| {p['streaming_ratio_to_model']:.2f} | {_sustained(p)} |"
            )
        lines += [
            "",
            "Ratio: the whole clip, first frame to last output; before the final cloud: to the last depth "
            "file; sustained: the fraction of the time the model was busy from the start of the second "
            "window to the end of the third-to-last (the steady state of a long video: no first-window "
            "fill, no last-window drain, no final write; the oracle's time per window is fixed, so this "
            "is the sustained throughput against the model alone).",
            "",
        ]
    lines += [
        "## Accuracy against the ground truth (mean over seeds)",
        "",
        "| size | ATE rmse (m) | ATE / extent | accuracy (m) | completeness (m) |",
        "|---|---|---|---|---|",
    ]
    for row in result["sizes"]:
        a = row["accuracy_mean"]
        lines.append(
            f"| {row['size']} | {a['ate_rmse_m']:.4f} | {a['ate_rel']:.4f} | {a['accuracy_m']:.4f} "
            f"| {a['completeness_m']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def _sustained(pipeline: dict) -> str:
    value = pipeline.get("sustained_ratio_to_model")
    return "- (fewer than 5 windows)" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgescene.bench.runtime_capacity", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for runtime_capacity.json and .md")
    parser.add_argument("--sizes", default=",".join(f"{h}x{w}" for h, w in SIZES), help="HxW,HxW,...")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated; the first also times the runtime")
    parser.add_argument("--model-latency-ms", type=float, default=30.0, help="oracle's time per frame (0: skip)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--depth-noise", type=float, default=OracleNoise.depth_noise)
    args = parser.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    result = run(
        sizes, args.frames, seeds, args.model_latency_ms, args.repeats, OracleNoise(depth_noise=args.depth_noise)
    )
    text = markdown(result)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "runtime_capacity.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "runtime_capacity.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
