"""The rule that picks best.pt: a lower held-out mean replaces the best only when the held-out
windows agree on it (paired differences beyond their spread), not when one window carries it."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from edgescene.train.vggt.trainer import BestTracker


def tracker_at_start(windows: list[float]) -> BestTracker:
    tracker = BestTracker("val_loss")
    assert tracker.update(0, {"val_loss": sum(windows) / len(windows)}, windows)  # the start is the first best
    return tracker


def test_a_gain_every_window_shares_replaces_the_best():
    start = [0.030, 0.020, 0.040, 0.025, 0.035, 0.030, 0.028, 0.032]
    tracker = tracker_at_start(start)
    new = [w * 0.98 for w in start]  # 2 % lower in every window: no spread at all
    assert tracker.update(50, {"val_loss": sum(new) / len(new)}, new)
    assert tracker.best_step == 50 and tracker.best_windows == new and tracker.bad == 0 and tracker.verdict == ""


def test_the_same_mean_gain_carried_by_one_window_does_not():
    start = [0.030, 0.020, 0.040, 0.025, 0.035, 0.030, 0.028, 0.032]
    tracker = tracker_at_start(start)
    gain = 0.02 * sum(start)  # the same 2 % of the mean as above, all of it in one window
    new = [start[0] - gain] + [w + 1e-4 * (-1) ** i for i, w in enumerate(start[1:])]
    mean = sum(new) / len(new)
    assert mean < tracker.best * (1 - BestTracker.MIN_DELTA)  # the old rule would have taken it
    assert not tracker.update(50, {"val_loss": mean}, new)
    assert tracker.best_step == 0 and tracker.best_windows == start
    assert "below the best (step 0)" in tracker.verdict and "8 held-out windows" in tracker.verdict
    assert tracker.bad == 0  # but the score went lower: patience waits on, the run goes on


def test_patience_counts_validations_since_the_score_last_went_lower():
    start = [0.030, 0.020, 0.040, 0.025]
    tracker = tracker_at_start(start)
    noisy = [0.040, 0.010, 0.030, 0.030]  # mean 0.0275 < 0.02875, but the windows disagree: not a new best
    assert not tracker.update(50, {"val_loss": sum(noisy) / 4}, noisy) and tracker.bad == 0
    assert not tracker.update(100, {"val_loss": 0.028}, [0.028] * 4) and tracker.bad == 1  # above the lowest seen
    agreed = [w * 0.9 for w in start]  # 10 % lower in every window: a new best, and lower than any seen
    assert tracker.update(150, {"val_loss": sum(agreed) / 4}, agreed) and tracker.bad == 0
    again = BestTracker.from_state(tracker.state(), "val_loss")
    assert again.lowest == tracker.lowest and again.best_step == 150


def test_too_few_windows_for_a_spread_fall_back_to_the_mean():
    tracker = tracker_at_start([0.03, 0.01])
    assert tracker.update(10, {"val_loss": 0.019}, [0.037, 0.001])  # one up, one down: mean 0.019 < 0.02
    assert tracker.best_step == 10


def test_a_worse_or_equal_score_never_replaces_the_best():
    start = [0.03, 0.02, 0.04]
    tracker = tracker_at_start(start)
    assert not tracker.update(10, {"val_loss": tracker.best}, start)
    assert not tracker.update(20, {"val_loss": 0.04}, [0.04, 0.04, 0.04])
    assert tracker.bad == 2 and tracker.best_step == 0


def test_the_windows_survive_a_resume():
    start = [0.03, 0.02, 0.04, 0.05]
    tracker = tracker_at_start(start)
    tracker.update(10, {"val_loss": 0.1}, [0.1] * 4)
    again = BestTracker.from_state(tracker.state(), "val_loss")
    assert again.best_windows == start and again.bad == 1 and again.best_step == 0 and again.lowest == tracker.best
    old = {k: v for k, v in tracker.state().items() if k != "best_windows"}  # a checkpoint from before the rule
    resumed = BestTracker.from_state(old, "val_loss")
    assert resumed.best_windows == [] and resumed.update(20, {"val_loss": 0.03}, [0.05, 0.01, 0.03, 0.03])
    assert resumed.best_windows == [0.05, 0.01, 0.03, 0.03]  # compared on the mean once, then window by window


def test_supervised_runs_without_windows_keep_the_mean_rule():
    tracker = BestTracker("val_abs_rel")
    assert tracker.update(10, {"val_abs_rel": 0.3})
    assert tracker.update(20, {"val_abs_rel": 0.29})
    assert not tracker.update(30, {"val_abs_rel": 0.29 * (1 - BestTracker.MIN_DELTA / 2)})
