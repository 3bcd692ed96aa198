"""Time one PyTorch forward pass of a preset on this machine (random weights, eval, no grad).

    python -m edgescene.bench.model_forward --model vggt_1b --frames 1 --height 392 --width 518

Prints build time, per-run forward times and peak resident memory. Random weights time the same
as real ones. The full benchmark suite (backends, precisions, reports) builds on this later.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from edgescene.models import create_model, get_spec


def time_forward(
    model_name: str, frames: int, height: int, width: int, runs: int = 1, threads: int | None = None
) -> dict:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = create_model(model_name).eval()
    build_s = time.perf_counter() - start
    family = get_spec(model_name).family
    images = torch.rand(frames, 3, height, width) if family == "vggt" else torch.randn(frames, 3, height, width)
    times = []
    with torch.inference_mode():
        for _ in range(runs):
            start = time.perf_counter()
            model(images)
            times.append(time.perf_counter() - start)
    return {
        "model": model_name,
        "frames": frames,
        "height": height,
        "width": width,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "build_s": round(build_s, 2),
        "forward_s": [round(t, 3) for t in times],
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--height", type=int, default=392)
    parser.add_argument("--width", type=int, default=518)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    print(json.dumps(time_forward(args.model, args.frames, args.height, args.width, args.runs, args.threads)))


if __name__ == "__main__":
    main()
