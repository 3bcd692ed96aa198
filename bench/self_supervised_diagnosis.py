"""Why self-supervised adaptation is fragile, in numbers: what its training signal sees, window by
window, on rendered footage whose truth is known.

Self-supervised training (:mod:`edgescene.train.vggt.self_supervised`) can only move the depth
toward the truth where its signal prefers the truth: where the frames' relative poses are measured
(:func:`~edgescene.train.vggt.match_poses.match_poses`: flow + essential matrix) and where the
true depth, warped through poses measured with it, explains the frames better than the model's
depth does. This bench measures both on held-out synthetic sequences
(:func:`~edgescene.train.data.synthetic.dataset.render_sequence`: orbit, walk, handheld in turn,
seeds ``seed``, ``seed + 1``, ...), cut into the trainer's windows (``window`` consecutive frames;
each frame warped from its nearest ``max_sources`` others), in two domains (the visible frames,
and the thermal-like ones of :func:`edgescene.bench.domain_adaptation.thermal_like`: one channel,
contrast inverted) and with the calibration given or the camera head's intrinsics. Per window:

- ``matched``: the share of the window's pairs that got a measured pose;
- ``rot_err_deg`` / ``dir_err_deg``: median over those pairs of the measured rotation's error and
  of the translation direction's error against the true relative pose (degrees);
- ``score_pred``: the photometric score (what the trainer's validation minimises: per pixel the
  smaller of the warped and the unwarped error, SSIM + L1) of the model's depth, through poses
  measured with it;
- ``score_true``: the same for the true depth, through poses measured with it;
- ``score_oracle``: the true depth through the true poses (the floor of the score);
- ``truth_preferred``: ``score_true < score_pred``: the signal has a gradient toward the truth.

    python -m edgescene.bench.self_supervised_diagnosis --out docs/bench/self_supervised/diagnosis
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgescene.bench.tables import run_meta, write_rows

TRAJECTORIES = ("orbit", "walk", "handheld")


@dataclass(frozen=True)
class WindowRow:
    sequence: str
    frames: int  # the sequence's length: its trajectory is the same, so fewer frames, more motion between them
    window: int  # first frame
    domain: str  # visible | thermal-like
    intrinsics: str  # given | head
    matched: float
    rot_err_deg: float | None
    dir_err_deg: float | None
    score_pred: float
    score_true: float
    score_oracle: float
    truth_preferred: bool
    abs_rel: float  # the model's depth, one median scale per frame


def _angle_deg(cos: float) -> float:
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def pose_errors(measured: np.ndarray, ok: np.ndarray, extrinsics: np.ndarray, pairs) -> tuple[list, list]:
    """Rotation and translation-direction errors (degrees) of ``measured`` (S, S, 3, 4) source-from-
    target poses where ``ok`` (S, S), against the true camera-from-world ``extrinsics`` (S, 3, 4)."""
    rot, direction = [], []
    full = np.tile(np.eye(4), (len(extrinsics), 1, 1))
    full[:, :3] = extrinsics
    for t, s in pairs:
        if not ok[t, s]:
            continue
        true = full[s] @ np.linalg.inv(full[t])  # source from target
        r = measured[t, s, :, :3] @ true[:3, :3].T
        rot.append(_angle_deg((np.trace(r) - 1.0) / 2.0))
        a, b = measured[t, s, :, 3], true[:3, 3]
        if np.linalg.norm(a) > 1e-9 and np.linalg.norm(b) > 1e-9:
            direction.append(_angle_deg(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))))
    return rot, direction


def diagnose_window(predict, frames: np.ndarray, depth: np.ndarray, extrinsics: np.ndarray, intrinsics: np.ndarray,
                    given: bool) -> dict:  # fmt: skip
    """The figures of one window: ``predict`` (a runtime predictor: (S, 3, H, W) float32 in [0, 1]
    -> its depth and cameras), ``frames`` (S, H, W, 3) uint8, true ``depth`` (S, H, W),
    ``extrinsics`` (S, 3, 4) camera-from-world and ``intrinsics`` (3, 3) of the renderer."""
    import torch

    from edgescene.train.vggt.match_poses import match_poses
    from edgescene.train.vggt.self_supervised import SelfSupervisedConfig, _sources, photometric_loss

    cfg = SelfSupervisedConfig()
    s, h, w = depth.shape
    images = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255.0)[None]  # (1, S, 3, H, W)
    pred = predict(images[0].numpy())
    pred_depth = torch.from_numpy(np.asarray(pred.depth, np.float32))[None]
    known = np.repeat(np.asarray(intrinsics)[None], s, 0) if given else np.asarray(pred.intrinsics)
    k = torch.from_numpy(known).float()[None]
    true_depth = torch.from_numpy(depth).float()[None]
    pairs = [(t, j) for t in range(s) for j in _sources(s, t, cfg.max_sources)]

    def score(d: torch.Tensor, relative=None, extrinsics_=None) -> float:
        _, diag = photometric_loss(images, d, extrinsics_, k, None, cfg, relative)
        return float(diag["photo_score"])

    poses, ok, _ = match_poses(images, pred_depth, k, pairs, cfg.matching)
    true_poses, true_ok, _ = match_poses(images, true_depth, k, pairs, cfg.matching)

    rot, direction = pose_errors(poses[0].numpy(), ok[0].numpy(), extrinsics, pairs)
    gt_extrinsics = torch.from_numpy(np.asarray(extrinsics)).float()[None]
    p, d = pred_depth[0].numpy(), depth
    valid = d > 0
    ratios = [np.median(d[i][valid[i]] / p[i][valid[i]]) for i in range(s)]
    abs_rel = float(np.mean([np.mean(np.abs(p[i][valid[i]] * ratios[i] - d[i][valid[i]]) / d[i][valid[i]])
                             for i in range(s)]))  # fmt: skip
    score_pred = score(pred_depth, (poses, ok))
    score_true = score(true_depth, (true_poses, true_ok))
    return {
        "matched": float(ok[0][tuple(zip(*pairs, strict=True))].float().mean()),
        "rot_err_deg": float(np.median(rot)) if rot else None,
        "dir_err_deg": float(np.median(direction)) if direction else None,
        "score_pred": score_pred,
        "score_true": score_true,
        "score_oracle": score(true_depth, None, gt_extrinsics),
        "truth_preferred": score_true < score_pred,
        "abs_rel": abs_rel,
    }


def measure(
    predict, sequences: int, seed: int, frames: int | list[int], window: int, hw: tuple[int, int]
) -> list[WindowRow]:
    from edgescene.bench.domain_adaptation import thermal_like
    from edgescene.train.data.synthetic.dataset import render_sequence

    rows = []
    for i, n in ((i, n) for n in ([frames] if isinstance(frames, int) else frames) for i in range(sequences)):
        kind = TRAJECTORIES[i % len(TRAJECTORIES)]
        seq = render_sequence(seed + i, kind, n, hw[1], hw[0])
        name = f"{kind}_{seed + i}"
        thermal = np.stack([np.repeat(thermal_like(f)[..., None], 3, axis=2) for f in seq.frames])
        for domain, images in (("visible", seq.frames), ("thermal-like", thermal)):
            for start in range(0, n - window + 1, window):
                sl = slice(start, start + window)
                for given in (True, False):
                    figures = diagnose_window(
                        predict, images[sl], seq.depth[sl], np.asarray(seq.extrinsics)[sl, :3], seq.intrinsics, given
                    )  # fmt: skip
                    rows.append(WindowRow(name, n, start, domain, "given" if given else "head", **figures))
    return rows


def summarise(rows: list[WindowRow]) -> dict:
    out: dict = {}
    for frames, domain, intrinsics in dict.fromkeys((r.frames, r.domain, r.intrinsics) for r in rows):
        mine = [r for r in rows if (r.frames, r.domain, r.intrinsics) == (frames, domain, intrinsics)]
        if mine:
            rot = [r.rot_err_deg for r in mine if r.rot_err_deg is not None]
            direction = [r.dir_err_deg for r in mine if r.dir_err_deg is not None]
            out[f"{frames} frames, {domain}, {intrinsics}"] = {
                "windows": len(mine),
                "matched": float(np.mean([r.matched for r in mine])),
                "rot_err_deg": float(np.median(rot)) if rot else None,
                "dir_err_deg": float(np.median(direction)) if direction else None,
                "score_pred": float(np.mean([r.score_pred for r in mine])),
                "score_true": float(np.mean([r.score_true for r in mine])),
                "score_oracle": float(np.mean([r.score_oracle for r in mine])),
                "truth_preferred": float(np.mean([r.truth_preferred for r in mine])),
                "abs_rel": float(np.mean([r.abs_rel for r in mine])),
            }
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(rows: list[WindowRow], meta: dict) -> str:
    lines = [
        f"# What the self-supervised signal sees ({meta['date']})",
        "",
        f"`{meta['command']}`: {meta['sequences']} held-out synthetic sequences (seeds {meta['seed']}...), "
        f"each rendered with {' and '.join(str(f) for f in meta['frames'])} frames along the same trajectory, at "
        f"{meta['hw'][1]}x{meta['hw'][0]}, windows of {meta['window']} consecutive frames, model {meta['model']}. "
        "Per window, then averaged (angles: median over the windows' medians).",
        "",
        "| frames, domain, intrinsics | windows | pairs with a pose | rotation error | direction error "
        "| score: model depth | score: true depth | score: true depth + poses | truth preferred | AbsRel |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summarise(rows).items():
        lines.append(
            f"| {name} | {s['windows']} | {100 * s['matched']:.0f} % | {_fmt(s['rot_err_deg'], '.2f')} deg "
            f"| {_fmt(s['dir_err_deg'], '.1f')} deg | {s['score_pred']:.4f} | {s['score_true']:.4f} "
            f"| {s['score_oracle']:.4f} | {100 * s['truth_preferred']:.0f} % | {s['abs_rel']:.3f} |"
        )
    lines += ["", "Per window: `diagnosis.json`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgescene.bench.self_supervised_diagnosis", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", default=None, help="a VGGT model open_session opens (default: the bundled one)")
    parser.add_argument("--sequences", type=int, default=6)
    parser.add_argument("--seed", type=int, default=9600)
    parser.add_argument(
        "--frames",
        type=int,
        nargs="+",
        default=[12, 24],
        help="sequence lengths (the same trajectory: fewer "
        "frames, more motion between them; 12: the adaptation bench's)",
    )
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--height", type=int, default=126)
    parser.add_argument("--width", type=int, default=168)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.window < 2 or min(args.frames) < args.window or args.sequences < 1:
        parser.error("--window must be >= 2, --frames >= --window and --sequences >= 1")
    from edgescene.assets import default_model_dir
    from edgescene.runtime.session import open_session
    from edgescene.runtime.stream import predictor_from_session

    weights = Path(args.model) if args.model else default_model_dir()
    session = open_session(weights)
    try:
        predict = predictor_from_session(session)
        rows = measure(predict, args.sequences, args.seed, args.frames, args.window, (args.height, args.width))
    finally:
        session.close()
    meta = run_meta(
        "edgescene.bench.self_supervised_diagnosis",
        argv,
        sequences=args.sequences,
        seed=args.seed,
        frames=args.frames,
        window=args.window,
        hw=[args.height, args.width],
        model=weights.name,
    )
    write_rows(args.out, "diagnosis.json", "README.md", meta, rows, summarise(rows), markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
