"""The pipelined runtime: read-ahead and write-behind threads stay bounded, hand errors to the
caller and stop when told; a pipelined reconstruction writes exactly what the sequential one does."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgescene.assets import default_model_dir, sample_dir
from edgescene.runtime.pipeline import ReadAhead, WriteBehind
from edgescene.runtime.reconstruct import ReconstructConfig, reconstruct_to_folder
from edgescene.runtime.stream import FrameInfo, StreamConfig, StreamingReconstruction, WindowPrediction


def test_read_ahead_yields_everything_in_order_and_stays_bounded():
    produced = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    got = []
    with ReadAhead(source(), depth=3) as items:
        for item in items:
            time.sleep(0.002)
            assert len(produced) - len(got) <= 3 + 2  # the queue, the item in hand, the one being put
            got.append(item)
    assert got == list(range(50))
    assert items.busy_s > 0  # the time spent producing was measured


def test_read_ahead_hands_the_sources_error_to_the_consumer_at_its_place():
    def source():
        yield 1
        yield 2
        raise OSError("disk gone")

    with ReadAhead(source(), depth=8) as items:
        assert next(items) == 1 and next(items) == 2
        with pytest.raises(OSError, match="disk gone"):
            next(items)


def test_read_ahead_close_stops_an_endless_source_and_runs_its_cleanup():
    cleaned = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                i += 1
                yield i
        finally:
            cleaned.set()

    before = threading.active_count()
    items = ReadAhead(endless(), depth=2)
    assert next(items) == 1
    start = time.monotonic()
    items.close()
    assert time.monotonic() - start < 2
    assert cleaned.is_set() and threading.active_count() == before


def test_write_behind_runs_calls_in_order_and_reraises_the_first_error():
    done = []
    with WriteBehind(depth=2) as writer:
        for i in range(20):
            writer.submit(done.append, i)
    assert done == list(range(20))

    def fail(i):
        if i == 3:
            raise PermissionError("read-only disk")
        done.append(i)

    done.clear()
    writer = WriteBehind(depth=1)
    with pytest.raises(PermissionError, match="read-only disk"):
        for i in range(100):
            writer.submit(fail, i)
            time.sleep(0.001)
        writer.close()
    assert done == [0, 1, 2]  # nothing ran after the failure
    with pytest.raises(PermissionError):
        writer.close()


def test_write_behind_blocks_the_producer_when_full():
    release = threading.Event()
    writer = WriteBehind(depth=2)
    writer.submit(release.wait)  # occupies the worker
    writer.submit(lambda: None)
    writer.submit(lambda: None)  # the queue holds 2
    blocked = threading.Thread(target=writer.submit, args=(lambda: None,))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # bounded: the fourth call waits
    release.set()
    blocked.join(5)
    writer.close()


# ----------------------------------------------------------------------------- the stream's model thread


def _predictor(calls: list, fail_at: int | None = None, delay_s: float = 0.0):
    def predict(images: np.ndarray) -> WindowPrediction:
        calls.append(len(images))
        if fail_at is not None and len(calls) == fail_at:
            raise RuntimeError("model crashed")
        time.sleep(delay_s)
        s, _, h, w = images.shape
        extrinsics = np.tile(np.eye(4)[:3], (s, 1, 1))
        extrinsics[:, 0, 3] = np.arange(s) * 0.1 + images[:, 0, 0, 0]
        intrinsics = np.tile(np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1.0]]), (s, 1, 1))
        depth = 1.0 + images.mean(1)
        return WindowPrediction(extrinsics, intrinsics, depth.astype(np.float32), np.ones_like(depth) * 2)

    return predict


def _frames(n: int, h: int = 12, w: int = 16):
    rng = np.random.default_rng(0)
    for _ in range(n):
        image = rng.random((3, h, w), dtype=np.float32)
        yield image, (image.transpose(1, 2, 0) * 255).astype(np.uint8)


def test_pipelined_stream_equals_the_sequential_one_and_lags_one_window():
    results = {}
    for pipelined in (False, True):
        calls: list = []
        sunk: list = []
        core = StreamingReconstruction(
            _predictor(calls, delay_s=0.01), StreamConfig(window=4, overlap=2), sink=sunk.append, pipelined=pipelined
        )
        states = [core.push(image, rgb, FrameInfo(index=i)) for i, (image, rgb) in enumerate(_frames(15))]
        core.finish()
        results[pipelined] = (core.trajectory(), core.map.points, [k.depth for k in sunk], states, calls)
    (seq_traj, seq_points, seq_depth, seq_states, seq_calls) = results[False]
    (pipe_traj, pipe_points, pipe_depth, pipe_states, pipe_calls) = results[True]
    assert seq_calls == pipe_calls == [4, 4, 4, 4, 4, 4, 3]
    for a, b in zip(seq_traj, pipe_traj, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(seq_points, pipe_points)
    assert all(np.array_equal(a, b) for a, b in zip(seq_depth, pipe_depth, strict=True)) and len(seq_depth) == 15
    # sequential: a state after every window; pipelined: from the second window on, one window behind
    assert [s.windows for s in seq_states if s] == [1, 2, 3, 4, 5, 6]
    assert [s.windows for s in pipe_states if s] == [1, 2, 3, 4, 5]


def test_a_model_error_on_the_model_thread_reaches_the_caller_and_the_thread_stops():
    before = threading.active_count()
    core = StreamingReconstruction(_predictor([], fail_at=2), StreamConfig(window=4, overlap=2), pipelined=True)
    with pytest.raises(RuntimeError, match="model crashed"):
        for image, rgb in _frames(12):
            core.push(image, rgb)
        core.finish()
    core.close()
    assert threading.active_count() == before, [t.name for t in threading.enumerate()]


# ----------------------------------------------------------------------------- whole reconstructions


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("branch", ["depth", "points"])
def test_pipelined_reconstruction_writes_exactly_the_sequential_outputs(tmp_path, branch):
    video = sample_dir() / "sample.mp4"
    reports = {}
    for pipeline in (False, True):
        config = ReconstructConfig(window=6, overlap=2, branch=branch, pipeline=pipeline)
        reports[pipeline] = reconstruct_to_folder(
            video, default_model_dir(), tmp_path / str(pipeline), config, progress=False
        )
    seq, pipe = _files(tmp_path / "False"), _files(tmp_path / "True")
    assert set(seq) == set(pipe) and len([f for f in seq if f.startswith("depth/")]) == 32
    for name in seq:
        if name != "report.json":
            assert seq[name] == pipe[name], name  # bit for bit
    a, b = reports[False], reports[True]
    for key in ("keyframes", "windows", "points", "alignments"):
        assert a.get(key) == b.get(key), key
    windows = b["window_timings_s"]
    assert [w["window"] for w in windows] == list(range(b["windows"]))
    assert sum(w["new_frames"] for w in windows) == 32
    stages = ("decode_s", "keyframes_s", "preprocess_s", "model_s", "align_s", "fusion_s", "write_s")
    assert all(set(stages) <= set(w) for w in windows)
    assert all(w["model_s"] > 0 and w["write_s"] > 0 for w in windows)
    starts = [w["model_at_s"] for w in windows]  # the model's timeline: one window after the other
    assert all(0 <= a < b for a, b in zip(starts, starts[1:], strict=False))
    t = b["timings_s"]
    assert t["model_s"] == pytest.approx(sum(w["model_s"] for w in windows), abs=1e-3)
    assert t["total_over_model"] == pytest.approx(t["total_s"] / t["model_s"], rel=1e-2)
    # the model's busy share of windows 2 .. n-2 (8 windows here), from the same timeline
    middle = windows[1:-2]
    wall = middle[-1]["model_at_s"] + middle[-1]["model_s"] - middle[0]["model_at_s"]
    steady = b["model_busy_steady_state"]
    assert 0 < steady <= 1 and steady == pytest.approx(sum(w["model_s"] for w in middle) / wall, abs=2e-3)
    assert json.loads((tmp_path / "True" / "report.json").read_text())["config"]["pipeline"] is True


def test_a_cancelled_pipelined_run_stops_its_threads_and_leaves_nothing(tmp_path):
    before = threading.active_count()

    def cancel(progress):
        if progress.frames_seen == 11:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        reconstruct_to_folder(
            sample_dir() / "sample.mp4", default_model_dir(), tmp_path / "out", progress=False, on_progress=cancel
        )
    assert not (tmp_path / "out").exists()
    assert threading.active_count() == before, [t.name for t in threading.enumerate()]
