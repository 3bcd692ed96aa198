"""Streaming reconstruction's memory and per-frame cost as a synthetic video grows.

    python -m edgescene.bench.streaming_memory --model ARTIFACT --frames 300 --out bench_out/streaming.json

Renders one long synthetic video (handheld orbit, exact ground truth available), streams it
through :class:`edgescene.runtime.reconstruct.Reconstructor` with depth written to disk, and
records after every frame the process's resident memory (VmRSS, and the peak so far) and the
wall time of that push. The report compares the peak at frame 10/50/100 with the peak at the
last frame: a bounded stream keeps them within a few percent. Pre-processing and the model run
are included in the per-frame times; rendering is not.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from edgescene.runtime.frames import Frame
from edgescene.runtime.outputs import write_depth_npz
from edgescene.runtime.reconstruct import ReconstructConfig, Reconstructor


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB, from /proc/self/status."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


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


def run(model: str, frames: int, width: int, height: int, window: int, overlap: int, seed: int,
        max_points: int | None) -> dict:
    rec = Reconstructor(model, ReconstructConfig(window=window, overlap=overlap, keyframe_threshold=0.0,
                                                 max_points=max_points))
    with tempfile.TemporaryDirectory() as tmp:
        def sink(result):  # depth goes to disk, as in reconstruct_to_folder
            write_depth_npz(Path(tmp) / f"{result.keyframe:05d}.npz", result.depth, result.depth_conf)

        stream = rec.stream(sink=sink)
        samples = []
        render_s = 0.0
        source = synthetic_video(frames, width, height, seed)
        for i in range(frames):
            t0 = time.perf_counter()
            frame = next(source)
            t1 = time.perf_counter()
            stream.push(frame)
            t2 = time.perf_counter()
            render_s += t1 - t0
            rss, peak = rss_mb()
            samples.append({"frame": i + 1, "push_s": t2 - t1, "rss_mb": rss, "peak_mb": peak,
                            "map_points": stream.core.state.points})
        stream.finish()
    checkpoints = {n: samples[n - 1] for n in (10, 50, 100, frames) if n <= frames}
    last = samples[-1]

    def window_mean(upto: int, span: int = 10) -> float:  # mean push time over the `span` frames before `upto`
        chunk = samples[max(0, upto - span):upto]
        return float(np.mean([s["push_s"] for s in chunk]))

    growth = {f"peak_growth_{n}_to_{frames}": round(last["peak_mb"] / checkpoints[n]["peak_mb"] - 1, 4)
              for n in checkpoints if n != frames}
    return {
        "model": str(model), "frames": frames, "max_points": max_points, "size": [height, width], "window": window, "overlap": overlap,
        "backend": f"{rec.session.backend}/{rec.session.device}",
        "checkpoints": {str(n): {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()}
                        for n, s in checkpoints.items()},
        **growth,
        "mean_push_s": {str(n): round(window_mean(n), 4) for n in checkpoints},
        "render_s_excluded": round(render_s, 2),
        "note": "push_s includes keyframe selection, preprocessing, the model (once per window) and fusion",
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
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = run(args.model, args.frames, args.width, args.height, args.window, args.overlap, args.seed, args.max_points)
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
