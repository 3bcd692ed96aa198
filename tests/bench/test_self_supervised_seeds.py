"""The across-seeds table of self-supervised adaptation at toy sizes: one run per setting and seed,
runs reused when the command starts again, medians and worst cases as the runs say."""

from __future__ import annotations

import json
import statistics

import pytest

pytest.importorskip("torch")
pytest.importorskip("cv2")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # tests/conftest.py

TOY = "--frames 4 --width 84 --height 56 --steps 2 --eval-frames 4 --window-frames 2 3 --lr 1e-3"


def test_runs_each_seed_once_and_summarises_them(tmp_path):
    from edgescene.bench.self_supervised_seeds import main

    args = ["--out", str(tmp_path), "--seeds", "1", "2", "--settings", "footage_2", "--heldout-scenes", "1",
            "--run-args", TOY]  # fmt: skip
    assert main(args) == 0
    result = json.loads((tmp_path / "seeds.json").read_text())
    summary = result["settings"]["footage_2"]
    runs = {s: json.loads((tmp_path / "runs" / "footage_2" / f"seed{s}" / "domain_adaptation.json").read_text())
            for s in (1, 2)}  # fmt: skip
    for seed, run in runs.items():
        assert run["meta"]["adapt_scenes"] == 2 and run["meta"]["heldout_scenes"] == 1 and run["meta"]["seed"] == seed
        assert run["meta"]["known_intrinsics"]
    changes = [100 * (r["after"]["abs_rel"] / r["before"]["abs_rel"] - 1) for r in runs.values()]
    assert summary["median_abs_rel_change_pct"] == pytest.approx(statistics.median(changes), abs=0.01)
    assert summary["worst_abs_rel_change_pct"] == pytest.approx(max(changes), abs=0.01)
    assert summary["seeds_worse"] == sum(c > 0 for c in changes)
    text = (tmp_path / "README.md").read_text()
    assert "| footage_2 | 2 sequences" in text and "python -m edgescene.bench.self_supervised_seeds" in text
    stamp = (tmp_path / "runs" / "footage_2" / "seed1" / "domain_adaptation.json").stat().st_mtime_ns
    assert main(args) == 0  # started again: the runs already there are reused, not rerun
    assert (tmp_path / "runs" / "footage_2" / "seed1" / "domain_adaptation.json").stat().st_mtime_ns == stamp


def test_the_committed_table_is_its_runs_and_the_trainer_warns_from_it():
    """docs/bench/self_supervised/seeds: each setting's summary is the summary of the runs committed
    beside it, and the trainer's footage warning quotes those medians."""
    from pathlib import Path

    from edgescene.bench.self_supervised_seeds import FOOTAGE, summarise
    from edgescene.train.vggt.unlabeled import FOOTAGE_CURVE

    root = Path(__file__).resolve().parents[2] / "docs" / "bench" / "self_supervised" / "seeds"
    table = json.loads((root / "seeds.json").read_text())
    assert len(table["meta"]["seeds"]) >= 5 and not set(table["meta"]["seeds"]) & {5, 6, 7}  # not the tuning seeds
    for name, summary in table["settings"].items():
        runs = {int(p.parent.name.removeprefix("seed")): json.loads(p.read_text())
                for p in (root / "runs" / name).glob("seed*/domain_adaptation.json")}  # fmt: skip
        assert json.loads(json.dumps(summarise(runs))) == summary  # (JSON keys the seeds as strings)
    assert {n: table["settings"][k]["median_abs_rel_change_pct"] for k, n in FOOTAGE.items()} == FOOTAGE_CURVE
