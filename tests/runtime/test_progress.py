"""The one progress model (runtime/progress.py): fractions that follow the model, stages, ETA, the bar."""

from __future__ import annotations

import io
import re

import pytest

from edgescene.runtime.progress import MODEL_SHARE, WRITE_SHARE, Progress, ProgressBar, ProgressTracker, format_seconds


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _run(tracker: ProgressTracker, clock: Clock, frames: int, window: int, keyframe_every: int = 1) -> None:
    """Frames 1..frames, every ``keyframe_every``-th a keyframe; a window joins every ``window`` keyframes;
    one second a frame."""
    tracker.opening()
    for seen in range(1, frames + 1):
        clock.t += 1.0
        if (seen - 1) % keyframe_every == 0:
            if not tracker.kept:
                tracker.started("vggt_small (onnx fp32) on onnxruntime/cpu", (126, 168))
            tracker.keyframe(seen)
            if tracker.kept % window == 0:
                tracker.window(tracker.kept, tracker.kept // window)
        tracker.frame(seen)


def test_the_fraction_follows_the_frames_through_the_model_and_reaches_one_only_when_done():
    told: list[Progress] = []
    clock = Clock()
    tracker = ProgressTracker(told.append, expected=20, clock=clock)
    _run(tracker, clock, frames=20, window=4, keyframe_every=2)  # keyframes at 1,3,...,19; windows at 7, 15
    assert told[0] == Progress("opening", frames_expected=20, fraction=0.0)
    frames = [p for p in told if p.stage == "reconstructing"]
    assert [p.frames_seen for p in frames] == list(range(1, 21))
    assert [p.frames_done for p in frames] == [0] * 6 + [7] * 8 + [15] * 6
    assert frames[6].fraction == pytest.approx(MODEL_SHARE * 7 / 20)
    assert frames[0].model == "vggt_small (onnx fp32) on onnxruntime/cpu" and frames[0].input_hw == (126, 168)
    # ETA from the first window on: 6 s since the first frame for 7/20 of the model's share
    assert all(p.eta_s is None for p in frames[:6])
    assert frames[6].elapsed_s == 6.0
    assert frames[6].eta_s == pytest.approx(6.0 * (1 - frames[6].fraction) / frames[6].fraction)
    tracker.stage("finishing")
    tracker.window(10, 2)  # the last, partial window (keyframes 17, 19) joined
    tracker.stage("writing")
    assert told[-1].fraction == WRITE_SHARE and told[-1].frames_done == 20
    assert all(p.fraction < 1.0 for p in told)
    tracker.stage("done")
    assert told[-1].stage == "done" and told[-1].fraction == 1.0 and told[-1].eta_s is None
    assert told[-1].message() == "done: 20 frames, 10 keyframes, 2 model calls"


def test_an_input_of_unknown_length_has_no_fraction_and_no_eta_until_done():
    told: list[Progress] = []
    clock = Clock()
    tracker = ProgressTracker(told.append, expected=None, clock=clock)
    _run(tracker, clock, frames=9, window=3)
    assert all(p.fraction is None and p.eta_s is None for p in told)
    assert told[-1].message() == "frame 9, 3 model calls"
    tracker.stage("closing loops")
    assert told[-1].fraction == MODEL_SHARE  # what is left is the same work whatever the input's length
    tracker.stage("done")
    assert told[-1].fraction == 1.0


def test_a_header_that_promised_too_few_frames_never_takes_the_fraction_past_the_models_share():
    told: list[Progress] = []
    clock = Clock()
    tracker = ProgressTracker(told.append, expected=5, clock=clock)
    _run(tracker, clock, frames=12, window=4)
    assert max(p.fraction for p in told) <= MODEL_SHARE
    assert told[-1].fraction == pytest.approx(MODEL_SHARE * 12 / 12)


def test_an_exception_of_the_callback_reaches_the_caller():
    def cancel(p: Progress) -> None:
        if p.frames_seen == 3:
            raise KeyboardInterrupt

    tracker = ProgressTracker(cancel, expected=10)
    tracker.frame(1)
    tracker.frame(2)
    with pytest.raises(KeyboardInterrupt):
        tracker.frame(3)


def test_bad_stages_and_counts_are_refused():
    with pytest.raises(ValueError, match="unknown stage 'writng'"):
        ProgressTracker(None).stage("writng")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected frames must be >= 0"):
        ProgressTracker(None, expected=-1)


def test_messages_and_json():
    p = Progress("finishing", frames_seen=30, frames_expected=32, windows=1, eta_s=75.2, input_hw=(126, 168))
    assert p.message() == "finishing, frame 30 of 32, 1 model call, about 1 min 16 s left"
    assert Progress("opening").message() == "opening the model"
    d = p.as_dict()
    assert d["input_hw"] == [126, 168] and d["message"] == p.message() and d["eta_s"] == 75.2
    assert [format_seconds(s) for s in (0, 0.2, 59, 60, 3599, 3600, 7322)] == [
        "0 s",
        "1 s",
        "59 s",
        "1 min 0 s",
        "59 min 59 s",
        "1 h 0 min",
        "2 h 2 min",
    ]


def _percentages(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"reconstruct +(\d+)%", text)]


def test_the_bar_shows_100_percent_only_at_done_and_announces_the_model_once():
    out = io.StringIO()
    announced: list[Progress] = []
    bar = ProgressBar(file=out, on_start=announced.append)
    clock = Clock()
    tracker = ProgressTracker(bar, expected=8, clock=clock)
    _run(tracker, clock, frames=8, window=4)
    tracker.stage("finishing")
    tracker.stage("writing")
    before_done = _percentages(out.getvalue())
    assert before_done and max(before_done) == 97 and before_done == sorted(before_done)
    tracker.stage("done")
    text = out.getvalue()
    assert _percentages(text)[-1] == 100 and "done: 8 frames" in text
    assert len(announced) == 1 and announced[0].input_hw == (126, 168)


def test_the_bar_counts_frames_where_the_length_is_unknown():
    out = io.StringIO()
    bar = ProgressBar(file=out)
    clock = Clock()
    tracker = ProgressTracker(bar, expected=None, clock=clock)
    _run(tracker, clock, frames=5, window=2)
    tracker.stage("done")
    text = out.getvalue()
    assert "%" not in text and "reconstruct 5 frames" in text and "done: 5 frames" in text


def test_a_folder_run_reaches_one_only_once_the_folder_is_in_place(tmp_path):
    from edgescene.assets import default_model_dir, sample_dir
    from edgescene.runtime.reconstruct import reconstruct_to_folder

    out = tmp_path / "rec"
    seen: list[tuple[Progress, bool]] = []
    report = reconstruct_to_folder(
        sample_dir() / "sample.mp4",
        default_model_dir(),
        out,
        progress=False,
        on_progress=lambda p: seen.append((p, (out / "report.json").is_file())),
    )
    stages = [p.stage for p, _ in seen]
    assert stages[0] == "opening" and stages[-3:] == ["finishing", "writing", "done"]
    assert all(not written for p, written in seen[:-1]) and seen[-1][1]  # the folder appears at done only
    fractions = [p.fraction for p, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[-2] == WRITE_SHARE
    done = seen[-1][0]
    assert (done.frames_seen, done.keyframes, done.windows) == (
        report["frames_seen"],
        report["keyframes"],
        report["windows"],
    )
    first_window = next(i for i, (p, _) in enumerate(seen) if p.windows > 0)
    assert seen[1][0].model is not None and first_window > 1  # the model is named before the first window


def test_a_run_that_stops_leaves_no_bar_behind():
    from terminal import terminal_lines

    out = io.StringIO()
    bar = ProgressBar(file=out)
    tracker = ProgressTracker(bar, expected=10)
    tracker.opening()
    tracker.frame(1)
    assert terminal_lines(out.getvalue())  # drawn
    bar.close()  # an error: the caller closes it
    assert terminal_lines(out.getvalue()) == []  # wiped: the error will be the one line left
