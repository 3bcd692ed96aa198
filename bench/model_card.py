"""Every figure of the bundled demo model's card, measured on data regenerated from seeds.

    python -m edgescene.bench.model_card --model edgescene/assets/models/vggt_small_synthetic --out eval.json

- ``full_heldout``: 24 held-out synthetic scenes (``edgescene synth --seed 1``, 16 frames at
  168 x 126), ``edgescene eval --frames 8`` and the trivial baselines;
- ``ci_subset``: the first 6 of them (what ``tests/bench/test_bundled_model.py`` re-checks);
- ``camera_motion``: rotation gain, path ratio and AUC@30 per trajectory kind and stride
  (:mod:`edgescene.bench.camera_motion`);
- ``sample_video``: ``make demo``'s reconstruction of the bundled sample against ``sample_gt.npz``:
  ATE / extent after Sim(3), and the camera path length over the median depth, against the truth's;
- ``loop_closure``: ATE with and without closure on the two synthetic loops
  (:mod:`edgescene.bench.loop_closure`);
- ``middlebury``: the real Middlebury pair, beside constant depth.

Sections can be chosen (``--sections``); a model is anything ``open_session`` opens.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HEIGHT, WIDTH, EVAL_FRAMES = 126, 168, 8
HELDOUT = {"scenes": 24, "frames_per_scene": 16, "width": WIDTH, "height": HEIGHT, "seed": 1}
CI_SCENES = 6
SECTIONS = ("heldout", "sample_video", "loop_closure", "middlebury")


def _floats(d: dict) -> dict:
    return {k: (None if v is None else float(v)) for k, v in d.items()}


def heldout_figures(model: Path | str, work: Path) -> dict:
    from edgescene.bench.accuracy import evaluate, evaluate_baselines
    from edgescene.train.data.synthetic import SynthConfig, generate_dataset

    data = work / "synth_val"
    h = HELDOUT
    config = SynthConfig(str(data), h["scenes"], h["frames_per_scene"], h["width"], h["height"], seed=h["seed"])
    generate_dataset(config)
    full = evaluate(model, data, frames=EVAL_FRAMES)
    full_base = evaluate_baselines(data, frames=EVAL_FRAMES, size=(HEIGHT, WIDTH))
    first = list(dict.fromkeys(r.sequence for r in full.rows))[:CI_SCENES]  # evaluated once, subset here
    figures = {}
    for name, count in (("full_heldout", HELDOUT["scenes"]), ("ci_subset", CI_SCENES)):
        keep = set(first) if count == CI_SCENES else {r.sequence for r in full.rows}
        report = replace(full, rows=[r for r in full.rows if r.sequence in keep])
        base = replace(full_base, rows=[r for r in full_base.rows if r.sequence in keep])
        figures[name] = {
            **HELDOUT,
            "scenes": count,
            "eval_frames": EVAL_FRAMES,
            "model": _floats(next(iter(report.means().values()))),
            "baselines": {k: _floats(v) for k, v in base.means().items()},
        }
    figures["camera_motion"] = camera_motion(model, data)
    return figures


def camera_motion(model: Path | str, data: Path) -> dict:
    from edgescene.bench.camera_motion import motion_response, summarise

    rows = motion_response(model, data, frames=EVAL_FRAMES, strides=(1, 2))
    return {"frames": EVAL_FRAMES, "strides": [1, 2], "rows": summarise(rows)}


def sample_video(model: Path | str, work: Path) -> dict:
    """``make demo`` with this model: ATE / extent after Sim(3) and path length / median depth."""
    from edgescene.assets import sample_dir
    from edgescene.bench.metrics import ate
    from edgescene.core.geometry import inverse_se3
    from edgescene.runtime.reconstruct import ReconstructConfig, reconstruct_to_folder

    out = work / "sample"
    start = time.perf_counter()
    reconstruct_to_folder(sample_dir() / "sample.mp4", model, out, ReconstructConfig(), progress=False)
    seconds = time.perf_counter() - start
    cameras = json.loads((out / "cameras.json").read_text())
    index = [f["index"] for f in cameras["frames"]]
    centres = inverse_se3(np.array([f["extrinsics"] for f in cameras["frames"]]))[:, :, 3]
    gt = np.load(sample_dir() / "sample_gt.npz")
    truth = inverse_se3(gt["extrinsics"][index])[:, :, 3]
    depth = np.stack([np.load(out / "depth" / f"{i:05d}.npz")["depth"] for i in index])
    truth_depth = gt["depth"].astype(np.float32)

    def path_over_depth(c: np.ndarray, d: np.ndarray) -> float:
        return float(np.linalg.norm(np.diff(c, axis=0), axis=1).sum() / np.median(d[d > 0]))

    extent = float(np.max(np.linalg.norm(truth[:, None] - truth[None], axis=-1)))
    figures = {
        "keyframes": len(index),
        "ate_rel": float(ate(centres, truth)["ate_rel"]),
        # a camera that never moves, placed at the best point (the truth's mean), in the same units
        "static_ate_rel": float(np.sqrt(np.mean(np.sum((truth - truth.mean(0)) ** 2, axis=1))) / extent),
        "path_over_depth": path_over_depth(centres, depth),
        "truth_path_over_depth": path_over_depth(truth, truth_depth[index]),
        "seconds": round(seconds, 2),
        "command": "edgescene reconstruct edgescene/assets/sample/sample.mp4 --out OUT",
    }
    figures["path_ratio"] = figures["path_over_depth"] / figures["truth_path_over_depth"]
    return figures


def loop_closure(model: Path | str, work: Path) -> dict:
    from edgescene.bench.loop_closure import loop_sequences, run_model
    from edgescene.mapping.pose_graph import solve

    rows = {}
    for seq in loop_sequences():
        open_run, closed_run = (run_model(seq, model, solver, work / "loops") for solver in (None, solve))
        rows[seq.trajectory] = {
            "open_ate_rel": open_run.ate_rel,
            "closed_ate_rel": closed_run.ate_rel,
            "closed_over_open": closed_run.ate_rel / open_run.ate_rel,
            "loops_found": closed_run.row()["loops_found"],
        }
    return rows


def middlebury(model: Path | str, work: Path) -> dict:
    from edgescene.bench.accuracy import evaluate, evaluate_baselines
    from edgescene.train.data.middlebury import write_middlebury_motorcycle

    data = write_middlebury_motorcycle(work / "middlebury-motorcycle")
    report = evaluate(model, data)
    model_means = next(iter(report.means().values()))
    base = evaluate_baselines(
        data, frames=None, size=(HEIGHT, WIDTH), baselines=["constant_depth"], any_size=report.any_size
    )
    return {"model": _floats(model_means), "constant_depth": _floats(base.means()["constant_depth"])}


def measure(model: Path | str, work: Path, sections=SECTIONS, log=print) -> dict:
    """The figures of ``sections`` for ``model``; scratch data goes under ``work``."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}; valid: {', '.join(SECTIONS)}")
    figures: dict = {}
    if "heldout" in sections:
        figures.update(heldout_figures(model, work))
        log(json.dumps(figures["full_heldout"]["model"]))
    if "sample_video" in sections:
        figures["sample_video"] = sample_video(model, work)
        log(json.dumps(figures["sample_video"]))
    if "loop_closure" in sections:
        figures["loop_closure"] = loop_closure(model, work)
        log(json.dumps(figures["loop_closure"]))
    if "middlebury" in sections:
        figures["middlebury"] = middlebury(model, work)
        log(json.dumps(figures["middlebury"]))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="an artifact folder, a checkpoint or a preset")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated (default: {','.join(SECTIONS)})"
    )
    args = parser.parse_args(argv)
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(args.model, Path(tmp), sections)
    Path(args.out).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
