"""Time one PyTorch forward pass of a model on this machine (eval, no grad), through the runtime.

    python -m edgescene.bench.model_forward --model vggt_1b --frames 1 --height 392 --width 518

Prints the load time, per-run forward times and peak resident memory. ``--model`` is a preset
(random weights time the same as real ones), a checkpoint file or a Hub id; the session is the
runtime's PyTorch backend (:func:`edgescene.runtime.session.open_session`), so the model code is
the one users run.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from edgescene.runtime.session import open_session


def time_forward(model_name: str, frames: int, height: int, width: int, runs: int = 1, device: str = "cpu") -> dict:
    start = time.perf_counter()
    session = open_session(model_name, device=device, height=height, width=width)
    build_s = time.perf_counter() - start
    images = np.random.default_rng(0).random((frames, 3, height, width), dtype=np.float32)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session({"images": images})
        times.append(time.perf_counter() - start)
    artifact = session.artifact
    session.close()
    return {
        "model": model_name,
        "preset": artifact.model.get("preset"),
        "frames": frames,
        "height": height,
        "width": width,
        "device": session.device,
        "precision": artifact.precision,
        "torch": artifact.versions.get("torch"),
        "build_s": round(build_s, 2),
        "forward_s": [round(t, 3) for t in times],
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a preset (random weights), a checkpoint file or a Hub id")
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--height", type=int, default=392)
    parser.add_argument("--width", type=int, default=518)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    print(json.dumps(time_forward(args.model, args.frames, args.height, args.width, args.runs, args.device)))


if __name__ == "__main__":
    main()
