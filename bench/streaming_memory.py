"""Streaming reconstruction's memory and per-frame cost as a synthetic video grows.

    python -m edgescene.bench.streaming_memory --model ARTIFACT --frames 300 --out bench_out/streaming.json

Renders one long synthetic video (handheld orbit, exact ground truth available) to PNG files, runs
it through :func:`edgescene.runtime.reconstruct.run`, the one assembly every entry point uses, with
depth files written by a :class:`~edgescene.runtime.sinks.FolderSink` as ``reconstruct_to_folder``
writes them, and records after every frame (``run``'s progress) the process's resident memory
(VmRSS, and the peak so far), the wall time since the previous frame and whether the model ran.
The report compares the per-frame cost (amortised over one model period) and the memory at frame
10/50/100 with those at the last frame: a bounded stream keeps them within a few percent. Decoding,
pre-processing and the model run are included in the per-frame times; rendering is not.
``edgescene bench`` runs it as its streaming section.
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
from edgescene.runtime.outputs import OutputFolder
from edgescene.runtime.progress import Progress, ProgressTracker
from edgescene.runtime.reconstruct import ReconstructConfig, Reconstructor, Run
from edgescene.runtime.reconstruct import run as reconstruct
from edgescene.runtime.sinks import FolderSink, Sink, Tee


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
    """Run ``frames`` synthetic frames through :func:`edgescene.runtime.reconstruct.run`; samples and
    checkpoint summaries.

    The video is rendered at ``render_scale`` x (height, width) (the runtime's preprocessing resizes
    it to the model input, as it does for any camera); the session is warmed up with
    ``warmup_calls`` blank windows first (:meth:`Reconstructor.warm_up`), so frame 10 is measured
    in the steady state a running service is in. ``reserve_map`` allocates the point map for
    ``max_points`` up front (``--reserve-map``). ``pipelined`` (the runtime's default): decoding,
    keyframe selection and preprocessing read ahead on their own thread, the model runs on its own
    thread and depth files are written behind, as in ``reconstruct_to_folder``. ``loop_closure``:
    revisit detection runs on every keyframe (its places stay in memory) and the pose graph is
    solved at the end with :func:`edgescene.mapping.pose_graph.solve` (``loop_closure_s``,
    ``loop_detector_mb`` in the result).

    The video is rendered to PNG files first (excluded: the camera's job), then run from that
    folder as a user's images would be, decoding included. End to end: ``fps`` is frames over the
    run's wall time up to the last depth file written (the last window included, loop closure
    not), beside ``model_only_fps``, the ceiling the model alone allows: ``window - overlap`` new
    frames per model call, timed on ``window`` blank frames after the run (3 calls, mean).

    Per-frame latency at checkpoint ``n`` is amortised over one model period: the ``frame_s`` (wall
    time between consecutive frames leaving the pipeline, decoding included) of the
    ``window - overlap`` frames that end with the first model call at or after frame ``n`` (one
    model call plus the cheap frames between calls), divided by that count. Memory at ``n`` is the
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
            pipeline=pipelined,
            loop_closure=loop_closure,
        ),
        **(session_options or {}),
    )
    solver = None
    if loop_closure:
        from edgescene.mapping.pose_graph import solve

        solver = solve
    warmup_s = rec.warm_up(warmup_calls)
    render_h, render_w = max(16, round(height * render_scale)), max(16, round(width * render_scale))
    with tempfile.TemporaryDirectory() as tmp:
        render_start = time.perf_counter()
        folder = Path(tmp) / "frames"
        folder.mkdir()
        for frame in synthetic_video(frames, render_w, render_h, seed):  # excluded: the camera's job
            Image.fromarray(frame.rgb).save(folder / f"{frame.index:06d}.png", compress_level=1)
        render_s = time.perf_counter() - render_start

        with OutputFolder(Path(tmp) / "out") as out:
            # depth goes to disk as in reconstruct_to_folder (written behind when pipelined)
            depth_files = FolderSink(out, write_behind=pipelined, depth=2 * window)
            samples = _Samples(frames, log)
            stream_start = time.perf_counter()
            # decoding the PNGs is part of the run, as for any image folder
            stream = reconstruct(
                rec,
                open_frames(folder),
                Tee(depth_files, samples),
                solver=solver,
                progress=ProgressTracker(samples.on_progress),
            ).stream
        assert samples.flushed is not None
        stream_s = samples.flushed - stream_start  # to the last depth file written, loop closure excluded
        loops: dict = {}
        if stream.loop_closure is not None:
            report = stream.loop_closure
            loops = {
                "loop_closure_s": report["seconds"],
                "loop_edges": len(report["loops"]),
                "loop_detector_mb": round(report["detector_bytes"] / 2**20, 2),
                "rss_after_closure_mb": samples.rss_after_closure_mb,
            }
        stages = stream.timings
        backend = f"{rec.session.backend}/{rec.session.device}"
    per_call_s = rec.warm_up(3) / 3
    period = window - overlap
    marks = sorted({n for n in checkpoints if n < frames} | {frames})
    summary = {str(n): _checkpoint(samples.samples, n, period) for n in marks}
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
        "model_busy_s": round(stages["model_s"], 3),
        "stage_s": {k: round(v, 4) for k, v in stages.items()},
        "samples": [{k: round(v, 5) if isinstance(v, float) else v for k, v in s.items()} for s in samples.samples],
        "note": "run by edgescene.runtime.reconstruct.run with a FolderSink, as reconstruct_to_folder runs; "
        "frame_s is the wall time between consecutive frames leaving the pipeline (run's progress): "
        "decoding the PNG, keyframe selection and preprocessing (pipelined: on the read-ahead thread, "
        "overlapped), the model (once per window; pipelined: waiting for it), alignment and fusion; "
        "stream_s ends when the last depth file is written (loop closure, if on, is loop_closure_s); "
        "stage_s sums each stage's busy seconds; "
        "rendering the synthetic frames and the warm-up calls are excluded",
    }


class _Samples(Sink):
    """Per-frame samples through ``run``'s progress (each frame's): wall time since the previous frame (the
    first: since the run started), RSS and peak RSS, map points and windows integrated so far."""

    def __init__(self, frames: int, log=None) -> None:
        self.frames = frames
        self.log = log
        self.samples: list[dict] = []
        self.stream: Run | None = None
        self.flushed: float | None = None  # when the last window and depth file were done
        self.rss_after_closure_mb: float | None = None
        self._last = 0.0

    def start(self, run: Run) -> None:
        self.stream = run
        self._last = time.perf_counter()

    def on_progress(self, progress: Progress) -> None:
        if progress.stage != "reconstructing":  # the per-frame events only
            return
        seen = progress.frames_seen
        now = time.perf_counter()
        assert self.stream is not None
        rss, peak = rss_mb()
        state = self.stream.stream.state
        self.samples.append(
            {
                "frame": seen,
                "frame_s": now - self._last,
                "rss_mb": rss,
                "peak_mb": peak,
                "map_points": state.points,
                "windows": state.windows,
            }
        )
        if self.log is not None and seen % 50 == 0:
            self.log(f"bench: streaming frame {seen}/{self.frames}: rss {rss:.0f} MiB, {state.windows} model calls")
        self._last = time.perf_counter()  # the sample itself is not the next frame's cost

    def flush(self) -> None:  # after the FolderSink's flush in the Tee: every depth file is on disk
        self.flushed = time.perf_counter()

    def loops_closed(self, run: Run) -> None:
        self.rss_after_closure_mb = round(rss_mb()[0] or 0.0, 2)


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
        "per_frame_s": round(sum(s["frame_s"] for s in span) / len(span), 5),
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
