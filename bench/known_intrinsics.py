"""Known intrinsics against predicted ones: the same reconstructions with and without ``--intrinsics``.

Held-out synthetic sequences (:func:`edgescene.train.data.synthetic.dataset.render_sequence`, orbit /
walk / handheld in turn, seeds ``seed``, ``seed + 1``, ...; 40 frames at 256 x 192, fields of view
of 50-75 degrees) are reconstructed by the runtime with its defaults, once with the model's own
field of view and once with the renderer's true camera as a calibration, in two domains: the
visible frames and the thermal-like ones of :func:`edgescene.bench.domain_adaptation.thermal_like`
(one channel, contrast inverted). Per run:

- ``ate_rel``: ATE of the keyframes' camera centres after a Sim(3) fit, over the true extent;
- ``auc_30``: pose AUC@30 over every pair of keyframes (:func:`edgescene.bench.metrics.pose_auc`);
- ``abs_rel``: depth AbsRel of every keyframe after one median scale per frame (the model's depth:
  intrinsics do not change it; reported to show so);
- ``point_rel``: the geometry the intrinsics do change: every output depth pixel, scaled by the
  frame's median ratio to the truth (as ``abs_rel``) and unprojected through the output camera, in
  the camera's own frame, against the true point of that pixel (true depth through the true camera);
  mean over frames of the median distance over the true depth. A wrong field of view spreads the
  points sideways by the focal error; the cameras' own errors are left out (``ate_rel`` has them).

    python -m edgescene.bench.known_intrinsics --sequences 6 --seed 9200 --out docs/bench/metric
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgescene.bench.metrics import ate, camera_centres, pose_auc
from edgescene.bench.tables import run_meta, write_rows
from edgescene.core.geometry import unproject_depth
from edgescene.core.preprocess import Resize, depth_to_source

IDENTITY = np.eye(3, 4)[None]


@dataclass(frozen=True)
class IntrinsicsRow:
    sequence: str
    domain: str
    intrinsics: str  # predicted | given
    ate_rel: float
    auc_30: float
    abs_rel: float
    point_rel: float
    focal_ratio: float | None  # the model's focal over the given one (given runs)


def _thermal(frames: np.ndarray) -> np.ndarray:
    from edgescene.bench.domain_adaptation import thermal_like

    return np.stack([np.repeat(thermal_like(f)[..., None], 3, axis=2) for f in frames])


def run_one(session, seq, name: str, domain: str, given: bool) -> IntrinsicsRow:
    from edgescene.runtime.calibration import parse_calibration
    from edgescene.runtime.reconstruct import ReconstructConfig, Reconstructor

    frames = seq.frames if domain == "visible" else _thermal(seq.frames)
    calibration = parse_calibration({"K": np.asarray(seq.intrinsics).tolist()}) if given else None
    rec = Reconstructor(session, ReconstructConfig(keyframe_threshold=0.0, pipeline=False), calibration=calibration)
    result = rec.run(list(frames))
    index = [int(k["index"]) for k in result.keyframes]
    truth_e = np.asarray(seq.extrinsics, np.float64)[index]
    centres, truth_c = camera_centres(result.extrinsics), camera_centres(truth_e)
    provenance = result.report["preprocessing"]["frames"]
    abs_rel, point_rel = [], []
    for k, i in enumerate(index):
        resize = Resize.from_provenance(provenance[k])
        pred = depth_to_source(result.depth[k], resize)
        true = np.asarray(seq.depth[i], np.float64)
        valid = np.isfinite(pred) & (pred > 0) & (true > 0)
        p, d = pred[valid].astype(np.float64), true[valid]
        scale = np.median(d) / np.median(p)
        abs_rel.append(float(np.mean(np.abs(p * scale - d) / d)))
        k_src = resize.to_source_intrinsics(result.intrinsics[k])
        scaled = np.where(valid, pred * scale, 0.0)[None].astype(np.float64)
        pts = unproject_depth(scaled, IDENTITY, k_src[None])[0]  # the camera's own frame
        ref = unproject_depth(true[None], IDENTITY, np.asarray(seq.intrinsics, np.float64)[None])[0]
        point_rel.append(float(np.median(np.linalg.norm(pts[valid] - ref[valid], axis=1) / d)))
    focal = result.report["intrinsics"].get("focal_ratio_median")
    return IntrinsicsRow(
        sequence=name,
        domain=domain,
        intrinsics="given" if given else "predicted",
        ate_rel=float(ate(centres, truth_c)["ate_rel"]),
        auc_30=float(pose_auc(result.extrinsics, truth_e, thresholds=(30,))["auc_30"]),
        abs_rel=float(np.mean(abs_rel)),
        point_rel=float(np.mean(point_rel)),
        focal_ratio=focal,
    )


def measure(session, sequences: int, seed: int) -> list[IntrinsicsRow]:
    from edgescene.train.data.synthetic.dataset import render_sequence
    from edgescene.train.data.synthetic.trajectories import TRAJECTORIES

    rows = []
    for i in range(sequences):
        kind = TRAJECTORIES[i % len(TRAJECTORIES)]
        seq = render_sequence(seed + i, kind, 40, 256, 192)
        for domain in ("visible", "thermal-like"):
            for given in (False, True):
                rows.append(run_one(session, seq, f"{kind}_{seed + i}", domain, given))
    return rows


KEYS = ("ate_rel", "auc_30", "abs_rel", "point_rel")


def summarise(rows: list[IntrinsicsRow]) -> dict:
    out: dict = {}
    for domain in dict.fromkeys(r.domain for r in rows):
        for kind in ("predicted", "given"):
            mine = [r for r in rows if r.domain == domain and r.intrinsics == kind]
            out.setdefault(domain, {})[kind] = {k: float(np.mean([getattr(r, k) for r in mine])) for k in KEYS}
        ratios = [r.focal_ratio for r in rows if r.domain == domain and r.focal_ratio is not None]
        out[domain]["focal_ratio_median"] = float(np.median(ratios)) if ratios else None
    return out


def markdown(rows: list[IntrinsicsRow], meta: dict) -> str:
    lines = [
        f"# Known intrinsics against predicted ({meta['date']})",
        "",
        f"`{meta['command']}`: {meta['sequences']} held-out sequences (seeds {meta['seed']}...), "
        "40 frames at 256x192, the runtime's defaults; means over the sequences.",
        "",
        "| domain | intrinsics | ATE / extent | pose AUC@30 | depth AbsRel (median-scaled) | point error / depth |",
        "|---|---|---|---|---|---|",
    ]
    summary = summarise(rows)
    for domain, kinds in summary.items():
        for kind in ("predicted", "given"):
            s = kinds[kind]
            lines.append(
                f"| {domain} | {kind} | {s['ate_rel']:.4f} | {s['auc_30']:.4f} | "
                f"{s['abs_rel']:.4f} | {s['point_rel']:.4f} |"
            )
    lines += ["", "The model's focal length over the true one (median per domain): "]
    lines[-1] += ", ".join(f"{d} {k['focal_ratio_median']:.3f}" for d, k in summary.items())
    lines += ["", "Per sequence: `known_intrinsics.json`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:

    from edgescene.assets import default_model_dir
    from edgescene.runtime.session import open_session

    parser = argparse.ArgumentParser(
        prog="python -m edgescene.bench.known_intrinsics", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", default=None, help="a VGGT model (default: the bundled demo model)")
    parser.add_argument("--sequences", type=int, default=6)
    parser.add_argument("--seed", type=int, default=9200)
    parser.add_argument("--out", type=Path, required=True, help="folder for known_intrinsics.json and .md")
    args = parser.parse_args(argv)
    if args.sequences < 1:
        parser.error("--sequences must be >= 1")
    session = open_session(args.model or default_model_dir())
    try:
        rows = measure(session, args.sequences, args.seed)
    finally:
        session.close()
    meta = run_meta(
        "edgescene.bench.known_intrinsics",
        argv,
        sequences=args.sequences,
        seed=args.seed,
        model=str(args.model or default_model_dir().name),
    )
    write_rows(
        args.out, "known_intrinsics.json", "known_intrinsics.md", meta, rows, summarise(rows), markdown(rows, meta)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
