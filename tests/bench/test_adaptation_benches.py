"""The self-supervised adaptation benches end to end at toy sizes: they adapt, score before and
after with the ground truth, and write their table, commands and the run's report."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("cv2")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # tests/conftest.py


def test_domain_adaptation_bench_with_known_poses(tmp_path):
    from edgescene.bench.domain_adaptation import main

    out = tmp_path / "bench"
    args = ["--out", str(out), "--scenes", "3", "--frames", "4", "--width", "84", "--height", "56", "--steps", "2",
            "--eval-frames", "4", "--known-poses", "--window-frames", "2", "3", "--augment",
            "--batch-size", "2", "--anchor-weight", "0.5"]  # fmt: skip
    assert main(args) == 0
    result = json.loads((out / "domain_adaptation.json").read_text())
    assert result["meta"]["known_poses"] and result["meta"]["adapt_scenes"] == 2
    assert set(result["before"]) >= {"abs_rel", "auc_30"} and set(result["after"]) >= {"abs_rel", "auc_30"}
    assert result["training"]["steps_done"] in (1, 2)
    text = (out / "domain_adaptation.md").read_text()
    assert "| depth AbsRel (lower is better) |" in text and "--metadata-json" in text
    assert "each frame's camera pose known too" in text
    # the settings that differ from the trainer's self-supervised defaults, as run; the rest are the defaults
    assert "--batch-size 2" in text and "--frames 2 3 --anchor-weight 0.5 --augment" in text
    assert "--lr" not in text
    assert (out / "report.md").is_file() and not (out / "work").exists()  # the data and checkpoints are gone


def test_domain_adaptation_trace_scores_every_checkpoint(tmp_path):
    from edgescene.bench.domain_adaptation import main

    out = tmp_path / "trace"
    args = ["--out", str(out), "--scenes", "3", "--frames", "4", "--width", "84", "--height", "56", "--steps", "4",
            "--validate-every", "2", "--eval-frames", "4", "--known-intrinsics", "--window-frames", "2", "3",
            "--lr", "1e-3", "--patience", "9", "--trace"]  # fmt: skip
    assert main(args) == 0
    result = json.loads((out / "domain_adaptation.json").read_text())
    rows = result["trace"]["checkpoints"]
    assert [r["step"] for r in rows] == [0, 2, 4]  # the start, then each validation of the sliced run
    assert rows[0]["abs_rel"] == result["before"]["abs_rel"]
    assert len({r["abs_rel"] for r in rows}) == 3  # each checkpoint scored on its own weights (lr 1e-3 moves them)
    best = next(r for r in rows if r["step"] == result["training"]["best_step"])
    assert best["abs_rel"] == pytest.approx(result["after"]["abs_rel"])  # best.pt is the checkpoint the rule picked
    rho = result["trace"]["spearman_score_vs_abs_rel"]
    if len({r["val_loss"] for r in rows}) > 1:
        assert -1 <= rho <= 1
    else:  # at 84x56 no held-out pair may get a measured pose: a score that never moves ranks nothing
        assert rho is None
    assert result["training"]["steps_done"] == 4
    assert "Spearman rank correlation" in (out / "domain_adaptation.md").read_text()
    assert not list(out.rglob("*.pt"))


def test_middlebury_adaptation_bench(tmp_path):
    pytest.importorskip("skimage")
    from edgescene.bench.middlebury_adaptation import main

    out = tmp_path / "mb"
    assert main(["--out", str(out), "--steps", "2", "--height", "56", "--width", "84"]) == 0
    result = json.loads((out / "middlebury_adaptation.json").read_text())
    assert 0 < result["before"]["abs_rel"] < 1 and 0 < result["after"]["abs_rel"] < 1
    assert "--metadata-json" in (out / "middlebury_adaptation.md").read_text()
