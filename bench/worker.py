"""One benchmark row in its own process: ``python -m edgescene.bench.worker SPEC_JSON OUT_JSON``.

Peak memory (VmHWM) is a property of a process, and allocators keep what earlier rows freed, so
every row of :func:`edgescene.bench.suite.run_bench` is measured in a fresh interpreter: its peak
is its own, and a crash in one backend becomes that row's status. SPEC holds ``model``,
``device``, ``options`` (for :func:`edgescene.runtime.session.open_session`), ``frames``,
``height``, ``width``, ``protocol``, ``seed`` and ``block_profile`` (PyTorch VGGT rows: time the
aggregator's frame and global blocks at the largest frame count); OUT receives ``backend``, ``device``,
``rss_loaded_mb``, ``block_profile`` and one :class:`edgescene.bench.suite.FrameResult` per frame count. An ONNX
artifact's worker never imports torch (the runtime's promise), so its memory is the runtime's.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path


def run(spec: dict) -> dict:
    from edgescene.bench.suite import FrameResult, _error, measure, rss_mb
    from edgescene.runtime.session import open_session

    session = open_session(spec["model"], spec["device"], **spec.get("options", {}))
    baseline, _ = rss_mb()
    proto = spec["protocol"]
    results = []
    try:
        for n in sorted(spec["frames"]):  # ascending: allocators only grow, so each peak is this size's
            try:
                r = measure(
                    session,
                    n,
                    spec["height"],
                    spec["width"],
                    proto["warmup"],
                    proto["runs"],
                    spec["seed"],
                    min_runs=proto["min_runs"],
                    budget_s=proto["budget_s"],
                    baseline_mb=baseline,
                )
                print(
                    f"bench:   frames={n}: median {r.timing.median_ms:.2f} ms, p95 {r.timing.p95_ms:.2f} ms, "
                    f"{r.throughput_fps:.1f} frames/s, peak {r.peak_rss_mb:.0f} MiB",
                    file=sys.stderr,
                    flush=True,
                )
            except Exception as exc:  # noqa: BLE001 - one frame count failing is a result, not a crash
                r = FrameResult(frames=n, status=f"failed: {_error(exc)}")
            results.append(asdict(r))
        profile = None
        if spec.get("block_profile") and hasattr(session, "block_profile"):
            profile = _block_profile(session, max(spec["frames"]), spec["height"], spec["width"], spec["seed"])
        return {
            "backend": session.backend,
            "device": session.device,
            "rss_loaded_mb": baseline,
            "torch_imported": "torch" in sys.modules,
            "results": results,
            "block_profile": profile,
        }
    finally:
        session.close()


def _block_profile(session, frames: int, height: int, width: int, seed: int) -> dict | None:
    """Seconds in the aggregator's frame and global blocks (and merge plan) at ``frames``: the median
    of 3 profiled calls (VGGT PyTorch sessions); None when the model is not a VGGT."""
    import statistics

    import numpy as np

    images = np.random.default_rng(seed).random((frames, 3, height, width), dtype=np.float32)
    try:
        runs = [session.block_profile({"images": images}) for _ in range(3)]
    except ValueError:
        return None
    return {key: round(statistics.median(r.get(key, 0.0) for r in runs), 5) for key in runs[0]}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m edgescene.bench.worker SPEC_JSON OUT_JSON", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    Path(argv[1]).write_text(json.dumps(run(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
