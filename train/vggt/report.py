"""The report of a self-supervised VGGT run, written beside its checkpoints.

``report.json``: the configuration, steps done, wall time, whether it stopped early, the held-out
scores before training and at the best checkpoint (``best.pt``), and the loss curves
(``metrics.jsonl``: the training loss at every log, the held-out loss at every validation).
``report.md``: the before / after table and the run's warnings (too little footage, too few
held-out windows; also in report.json's ``warnings``). ``loss_curves.png``: both curves (when matplotlib is
installed: ``pip install 'edgescene[bench]'``; the JSON has the numbers either way).
"""

from __future__ import annotations

import json
from pathlib import Path

from edgescene.train.vggt.config import VGGTTrainConfig

LABELS = {
    "val_loss": "photometric score (held-out windows)",
    "val_abs_rel": "depth AbsRel (held-out windows with ground truth)",
    "val_rot_deg": "rotation error, degrees (held-out windows with ground truth)",
}


def read_curves(out_dir: str | Path) -> dict[str, list[list[float]]]:
    """``{"train_loss": [[step, value], ...], "val_loss": [...], ...}`` from ``metrics.jsonl``."""
    curves: dict[str, list[list[float]]] = {}
    path = Path(out_dir) / "metrics.jsonl"
    if not path.is_file():
        return curves
    for line in path.read_text().splitlines():
        record = json.loads(line)
        step = record["step"]
        if "total" in record:
            curves.setdefault("train_loss", []).append([step, record["total"]])
        for key in LABELS:
            if key in record:
                curves.setdefault(key, []).append([step, record[key]])
    return curves


def write_report(
    config: VGGTTrainConfig, tracker, steps_done: int, seconds: float, warnings: list[str] | None = None
) -> dict:
    """Write report.json, report.md and loss_curves.png into ``config.out_dir``; returns the JSON
    (``warnings``: what the run warned of, repeated under the table)."""
    out = Path(config.out_dir)
    curves = read_curves(out)
    report = {
        "kind": "vggt self-supervised" if config.self_supervised else "vggt",
        "steps_done": steps_done,
        "seconds": round(seconds, 1),
        "stopped_early": tracker.stopped_early,
        "monitored": tracker.metric,
        "before": tracker.before,
        "best": tracker.best_values,
        "best_step": tracker.best_step,
        "best_checkpoint": "best.pt" if tracker.best_step is not None else None,
        "warnings": list(warnings or []),
        "curves": curves,
        "config": config.to_dict(),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(markdown(report))
    plot_curves(curves, out / "loss_curves.png")
    return report


def markdown(report: dict) -> str:
    lines = [
        f"# {report['kind']} run: {report['steps_done']} steps in {report['seconds']:.0f} s"
        + (" (stopped early)" if report["stopped_early"] else ""),
        "",
        f"Best checkpoint: `{report['best_checkpoint']}` (step {report['best_step']}, by {report['monitored']})"
        + (": training never beat the starting weights, which best.pt keeps" if report["best_step"] == 0 else "."),
        "",
        "| held-out score | before | after (best) | change |",
        "|---|---|---|---|",
    ]
    for key, label in LABELS.items():
        before, after = report["before"].get(key), report["best"].get(key)
        if before is None and after is None:
            continue
        change = f"{(after / before - 1) * 100:+.1f} %" if before and after is not None else ""
        fmt = lambda v: "" if v is None else f"{v:.4f}"
        lines.append(f"| {label} | {fmt(before)} | {fmt(after)} | {change} |")
    lines += [f"\n**{w.split(': ', 1)[0].capitalize()}:** {w.split(': ', 1)[1]}" for w in report.get("warnings", [])]
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict, path: Path) -> bool:
    """Training and held-out loss against steps; False when matplotlib is missing (nothing written)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, label in (("train_loss", "training loss"), ("val_loss", "held-out loss")):
        if curves.get(key):
            steps, values = zip(*curves[key], strict=True)
            ax.plot(steps, values, marker="o" if key == "val_loss" else None, ms=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("self-supervised loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
