"""Streaming reconstruction's memory and per-frame cost as a synthetic video grows.

    python -m edgescene.bench.streaming_memory --model ARTIFACT --frames 300 --out bench_out/streaming.json

Renders one long synthetic video (handheld orbit, exact ground truth available), streams it
through :class:`edgescene.runtime.reconstruct.Reconstructor` with depth written to disk, and
records after every frame the process's resident memory (VmRSS, and the peak so far), the wall
time of that push and whether the model ran. The report compares the per-frame cost (amortised
over one model period) and the memory at frame 10/50/100 with those at the last frame: a bounded
stream keeps them within a few percent. Pre-processing and the model run are included in the
per-frame times; rendering is not. ``edgescene bench`` runs it as its streaming section.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from edgescene.bench.suite import rss_mb
from edgescene.runtime.frames import Frame, open_frames
from edgescene.runtime.outputs import write_depth_npz
from edgescene.runtime.pipeline import WriteBehind
from edgescene.runtime.reconstruct import ReconstructConfig, Reconstructor


def synthetic_video(frames: int, width: int, height: int, seed: int):
    """Yields Frame objects of a long handheld orbit, rendered on the fly (nothing kept)."""
    from edgescene.train.data.synthetic.raycast import render
    from edgescene.train.data.synthetic.scene import random_scene
    from edgescene.train.data.synthetic.trajectories import handheld, orbit

    scene = random_scene(seed)
    rng = np.random.default_rng(seed)
    extrinsics = handheld(rng, orbit(rng, frames, scene.object_radius))
    focal = (width / 2) / np.tan(np.radians(60) / 2)
    intrinsics = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    for i, extr in enumerate(extrinsics):
        rgb, _ = render(scene, intrinsics, extr, height, width)
        yield Frame(index=i, timestamp_s=i / 10.0, rgb=rgb, source=f"synthetic#{i}")


def run(
    model: str,
    frames: int,
    width: int,
    height: int,
    window: int,
    overlap: int,
    seed: int,
    max_points: int | None,
    checkpoints: tuple[int, ...] = (10, 50, 100),
    session_options: dict | None = None,
    log=None,
    device: str = "auto",
    render_scale: float = 1.0,
    warmup_calls: int = 2,
    reserve_map: bool = False,
    pipelined: bool = True,
    loop_closure: bool = False,
) -> dict:
    """Stream ``frames`` synthetic frames through the reconstructor; samples and checkpoint summaries.

    The video is rendered at ``render_scale`` x (height, width) (the runtime's preprocessing resizes
    it to the model input, as it does for any camera); the session is warmed up with
    ``warmup_calls`` blank windows first (:meth:`Reconstructor.warm_up`), so frame 10 is measured
    in the steady state a running service is in. ``reserve_map`` allocates the point map for
    ``max_points`` up front (``--reserve-map``). ``pipelined`` (the runtime's default): the model
    runs on its own thread and depth files are written behind, as in ``reconstruct_to_folder``.
    ``loop_closure``: revisit detection runs on every keyframe (its places stay in memory) and the
    pose graph is solved at the end (``loop_closure_s``, ``loop_detector_mb`` in the result).

    The video is rendered to PNG files first (excluded: the camera's job), then streamed from that
    folder as a user's images would be, decoding included. End to end: ``fps`` is frames over the
    stream's wall time, ``finish()`` and the last depth file included, beside
    ``model_only_fps``, the ceiling the model alone allows: ``window - overlap`` new frames per
    model call, timed on ``window`` blank frames after the stream (3 calls, mean).

    Per-frame latency at checkpoint ``n`` is amortised over one model period: the push times of the
    ``window - overlap`` frames that end with the first model call at or after frame ``n`` (one
    model call plus the cheap pushes between calls), divided by that count. Memory at ``n`` is the
    process's RSS and peak RSS (VmHWM) after frame ``n``.
    """
    rec = Reconstructor(
        model,
        ReconstructConfig(
            window=window,
            overlap=overlap,
            keyframe_threshold=0.0,
            max_points=max_points,
            reserve_map=reserve_map,
            device=device,
            loop_closure=loop_closure,
        ),
        **(session_options or {}),
    )
    warmup_s = rec.warm_up(warmup_calls)
    render_h, render_w = max(16, round(height * render_scale)), max(16, round(width * render_scale))
    with tempfile.TemporaryDirectory() as tmp, WriteBehind(depth=2 * window, name="bench-writer") as writer:
        render_start = time.perf_counter()
        folder = Path(tmp) / "frames"
        folder.mkdir()
        for frame in synthetic_video(frames, render_w, render_h, seed):  # excluded: the camera's job
            Image.fromarray(frame.rgb).save(folder / f"{frame.index:06d}.png", compress_level=1)
        render_s = time.perf_counter() - render_start

        def write(result):
            write_depth_npz(Path(tmp) / f"{result.keyframe:05d}.npz", result.depth, result.depth_conf)

        def sink(result):  # depth goes to disk, as in reconstruct_to_folder
            if pipelined:
                writer.submit(write, result)
            else:
                write(result)

        stream = rec.stream(sink=sink, pipelined=pipelined)
        samples = []
        source = iter(open_frames(folder))
        stream_start = time.perf_counter()
        for i in range(frames):
            t0 = time.perf_counter()
            frame = next(source)  # decoding the PNG is part of the stream, as for any image folder
            t1 = time.perf_counter()
            stream.push(frame)
            t2 = time.perf_counter()
            rss, peak = rss_mb()
            state = stream.core.state
            samples.append(
                {
                    "frame": i + 1,
                    "push_s": t2 - t1,
                    "decode_s": t1 - t0,
                    "rss_mb": rss,
                    "peak_mb": peak,
                    "map_points": state.points,
                    "windows": state.windows,
                }
            )
            if log is not None and (i + 1) % 50 == 0:
                log(f"bench: streaming frame {i + 1}/{frames}: rss {rss:.0f} MiB, {state.windows} model calls")
        stream.finish()
        writer.close()
        stream_s = time.perf_counter() - stream_start
        loops: dict = {}
        if loop_closure:
            from edgescene.mapping.pose_graph import solve

            report = stream.close_loops(solve)
            loops = {
                "loop_closure_s": report["seconds"],
                "loop_edges": len(report["loops"]),
                "loop_detector_mb": round(report["detector_bytes"] / 2**20, 2),
                "rss_after_closure_mb": round(rss_mb()[0], 2),
            }
        model_busy_s = stream.timings["model_s"]
        backend = f"{rec.session.backend}/{rec.session.device}"
    per_call_s = rec.warm_up(3) / 3
    period = window - overlap
    marks = sorted({n for n in checkpoints if n < frames} | {frames})
    summary = {str(n): _checkpoint(samples, n, period) for n in marks}
    first, last = summary[str(marks[0])], summary[str(marks[-1])]
    return {
        "model": str(model),
        "frames": frames,
        "max_points": max_points,
        "size": [height, width],
        "window": window,
        "overlap": overlap,
        "period": period,
        "backend": backend,
        "checkpoints": summary,
        "latency_change": round(last["per_frame_s"] / first["per_frame_s"] - 1, 4),
        "rss_change": round(last["rss_mb"] / first["rss_mb"] - 1, 4),
        "peak_change": round(last["peak_mb"] / first["peak_mb"] - 1, 4),
        "render_s_excluded": round(render_s, 2),
        "render_size": [render_h, render_w],
        "warmup_calls": warmup_calls,
        "warmup_s": round(warmup_s, 2),
        "reserve_map": reserve_map,
        "pipelined": pipelined,
        "loop_closure": loop_closure,
        **loops,
        "stream_s": round(stream_s, 3),
        "fps": round(frames / stream_s, 2),
        "model_only_fps": round((window - overlap) / per_call_s, 2),
        "model_busy_s": round(model_busy_s, 3),
        "samples": [{k: round(v, 5) if isinstance(v, float) else v for k, v in s.items()} for s in samples],
        "note": "push_s includes keyframe selection, preprocessing, the model (once per window; pipelined: "
        "waiting for it) and fusion; decode_s is reading the PNG; "
        "rendering the synthetic frames and the warm-up calls are excluded",
    }


def _checkpoint(samples: list[dict], n: int, period: int) -> dict:
    """Window-aligned per-frame cost and memory at frame ``n`` (1-based)."""
    calls = [i for i in range(1, len(samples)) if samples[i]["windows"] > samples[i - 1]["windows"]]
    if samples and samples[0]["windows"] > 0:
        calls.insert(0, 0)
    after = [i for i in calls if i >= n - 1]
    end = after[0] if after else (calls[-1] if calls else len(samples) - 1)
    start = max(0, end - period + 1)
    span = samples[start : end + 1]
    at = samples[n - 1]
    return {
        "frame": n,
        "per_frame_s": round(sum(s["push_s"] for s in span) / len(span), 5),
        "span": [span[0]["frame"], span[-1]["frame"]],
        "rss_mb": round(at["rss_mb"], 2),
        "peak_mb": round(at["peak_mb"], 2),
        "map_points": at["map_points"],
        "model_calls": at["windows"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a VGGT artifact folder (or checkpoint / preset)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--max-points", type=int, default=2_000_000, help="the fused cloud's hard bound")
    parser.add_argument("--render-scale", type=float, default=1.0, help="render the video at this x the model size")
    parser.add_argument("--warmup-calls", type=int, default=2, help="blank windows run before the stream")
    parser.add_argument("--reserve-map", action="store_true", help="allocate the map for --max-points up front")
    parser.add_argument("--no-pipeline", action="store_true", help="every stage in turn on one thread")
    parser.add_argument(
        "--loop-closure", action="store_true", help="detect revisits on the way, close loops at the end (GTSAM)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = run(
        args.model,
        args.frames,
        args.width,
        args.height,
        args.window,
        args.overlap,
        args.seed,
        args.max_points,
        render_scale=args.render_scale,
        warmup_calls=args.warmup_calls,
        reserve_map=args.reserve_map,
        pipelined=not args.no_pipeline,
        loop_closure=args.loop_closure,
    )
    report.pop("samples")
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
