"""The one assembly of the pipeline, ``run(rec, frames, sink)``: every entry point is a sink over it.

An oracle session (ground truth plus noise, :mod:`edgescene.bench.oracle`) stands in for the model,
so these tests check the assembly and the sinks, not a network.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from edgescene.bench.oracle import OracleNoise, OracleSession
from edgescene.bench.synthetic_scene import make_video
from edgescene.runtime.fusion import resolve_backend
from edgescene.runtime.outputs import OutputFolder
from edgescene.runtime.progress import ProgressTracker
from edgescene.runtime.reconstruct import ReconstructConfig, Reconstructor, reconstruct_to_folder, run
from edgescene.runtime.sinks import FolderSink, MemorySink, Sink, Tee, ViewerSink

HW = (56, 84)


@pytest.fixture(scope="module")
def video():
    return make_video(14, HW, seed=3)


def _rec(video, **config) -> Reconstructor:
    return Reconstructor(OracleSession(video, OracleNoise(seed=1)), ReconstructConfig(keyframe_threshold=0.0, **config))


class Recorder(Sink):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.keyframes: list[int] = []

    def start(self, stream) -> None:
        self.calls.append("start")

    def keyframe(self, result) -> None:
        self.keyframes.append(result.keyframe)

    def window(self, run) -> None:
        self.calls.append(f"window {run.stream.state.windows}")

    def flush(self) -> None:
        self.calls.append("flush")

    def finish(self, stream) -> None:
        self.calls.append("finish")

    def close(self) -> None:
        self.calls.append("close")


def test_the_compiled_loop_is_loaded_while_the_model_opens_and_nothing_is_left_running(video):
    rec = _rec(video, window=6, overlap=2)
    assert not [t for t in threading.enumerate() if t.name == "edgescene-jit"]
    done = run(rec, list(video.rgb)[:8], pipeline=False)
    assert done.stream.map is not None and done.stream.map.backend == resolve_backend("auto")
    assert done.frames.frames_seen == 8 and done.frames.model_hw == HW


def test_hooks_come_in_order_and_every_keyframe_once(video):
    sink = Recorder()
    told = []
    tracker = ProgressTracker(told.append, expected=14)
    stream = run(_rec(video, window=6, overlap=2), list(video.rgb), sink, pipeline=False, progress=tracker).stream
    frames = [p for p in told if p.stage == "reconstructing"]
    assert [p.frames_seen for p in frames] == list(range(1, 15))
    assert [p.stage for p in told if p.stage != "reconstructing"] == ["finishing"]
    assert told[0].model is not None and told[0].input_hw == HW  # before the first frame's event
    # every keyframe here (no frame is skipped): windows 1-6, 5-10, 9-14 join at frames 6, 10, 14, and
    # the fraction counts only the frames through the model, never the ones merely decoded
    assert [(p.windows, p.frames_done) for p in frames] == [(0, 0)] * 5 + [(1, 6)] * 4 + [(2, 10)] * 4 + [(3, 14)]
    assert [p.fraction for p in frames[4:7]] == [0.0, pytest.approx(0.95 * 6 / 14), pytest.approx(0.95 * 6 / 14)]
    assert frames[0].eta_s is None and frames[5].eta_s is not None and frames[5].eta_s > 0
    assert tracker.current.frames_done == 14 and tracker.current.windows == 3
    assert sink.keyframes == list(range(14))
    # windows of 6 with 2 carried: frames 0-5, 4-9, 8-13 (the last one full too)
    assert sink.calls == ["start", "window 1", "window 2", "window 3", "flush", "finish", "close"]
    assert stream.state.keyframes == 14


def test_pipelined_run_equals_the_sequential_one(video):
    results = {}
    for pipelined in (False, True):
        sink = MemorySink()
        stream = run(_rec(video, window=6, overlap=2), list(video.rgb), sink, pipeline=pipelined).stream
        results[pipelined] = (stream.trajectory()[0], stream.map.points, [r.depth for r in sink.results])
    assert np.array_equal(results[False][0], results[True][0])
    assert np.array_equal(results[False][1], results[True][1])
    assert all(np.array_equal(a, b) for a, b in zip(results[False][2], results[True][2], strict=True))


def test_reconstructor_run_is_a_memory_sink_over_run(video):
    rec = _rec(video, window=6, overlap=2)
    result = rec.run(list(video.rgb))
    sink = MemorySink()
    stream = run(_rec(video, window=6, overlap=2), list(video.rgb), sink, pipeline=False).stream
    assert np.array_equal(result.extrinsics, stream.trajectory()[0])
    assert np.array_equal(result.points, stream.map.points)
    assert len(result.world_points) == 14 and result.world_points[0].shape == (*HW, 3)


def test_a_failing_sink_stops_the_run_and_everything_is_closed(video):
    class Failing(Recorder):
        def keyframe(self, result) -> None:
            if result.keyframe == 7:
                raise OSError("disk full")

    sink = Failing()
    with pytest.raises(OSError, match="disk full"):
        run(_rec(video, window=6, overlap=2), list(video.rgb), sink, pipeline=True)
    assert sink.calls[-1] == "close" and "finish" not in sink.calls


def test_no_frames_is_a_clear_error(video):
    sink = Recorder()
    with pytest.raises(ValueError, match="no frames to reconstruct"):
        run(_rec(video), [], sink)
    assert sink.calls == ["start", "close"]


def test_folder_sink_writes_each_keyframe_and_tee_feeds_a_viewer(video, tmp_path):
    updates = []
    with OutputFolder(tmp_path / "out") as folder:
        files = FolderSink(folder, write_behind=True, depth=4)
        viewer = ViewerSink(updates.append)
        stream = run(_rec(video, window=6, overlap=2), list(video.rgb), Tee(files, viewer)).stream
        assert len(files.kept) == 14 and files.kept[0].depth.size == 0  # cameras only: depth is on disk
    depth = sorted((tmp_path / "out" / "depth").iterdir())
    assert [p.name for p in depth] == [f"{i:05d}.npz" for i in range(14)]
    assert np.load(depth[5])["depth"].shape == HW
    assert len(updates) == 4  # three windows and the final scene
    assert updates[-1]["extrinsics"].shape == (14, 3, 4) and len(updates[-1]["thumbnails"]) == 14
    assert len(updates[-1]["points"]) == len(stream.map)


def test_reconstruct_to_folder_takes_an_open_session(video, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image

    for i, rgb in enumerate(video.rgb):
        Image.fromarray(rgb).save(frames / f"{i:03d}.png")
    session = OracleSession(video)
    report = reconstruct_to_folder(
        frames, session, tmp_path / "out", ReconstructConfig(keyframe_threshold=0.0), progress=False
    )
    assert report["keyframes"] == 14 and report["backend"]["name"] == "oracle"
    cameras = json.loads((tmp_path / "out" / "cameras.json").read_text())
    assert [f["index"] for f in cameras["frames"]] == list(range(14))
    with pytest.raises(ValueError, match="session options"):
        Reconstructor(session, ReconstructConfig(), providers=["x"])


@pytest.mark.skipif(
    resolve_backend("auto") != "compiled", reason="numba is not installed (the compiled fusion backend)"
)
def test_compiled_and_numpy_fusion_build_the_same_reconstruction(video):
    """The compiled path (pixel selection, unprojection and the map in numba) against the numpy one,
    through the whole stream: the same cameras, voxels, tags and weights, sums to rounding."""
    streams = {
        backend: run(_rec(video, window=6, overlap=2, fusion_backend=backend), list(video.rgb), pipeline=False).stream
        for backend in ("numpy", "compiled")
    }
    a, b = streams["numpy"], streams["compiled"]
    assert a.map is not None and b.map is not None and (a.map.backend, b.map.backend) == ("numpy", "compiled")
    np.testing.assert_array_equal(a.trajectory()[0], b.trajectory()[0])
    n = len(a.map)
    assert n == len(b.map) > 1000
    oa, ob = np.argsort(a.map._packed[:n]), np.argsort(b.map._packed[:n])
    np.testing.assert_array_equal(a.map._packed[:n][oa], b.map._packed[:n][ob])
    np.testing.assert_array_equal(a.map.tags[oa], b.map.tags[ob])
    np.testing.assert_allclose(a.map._sums[:n][oa], b.map._sums[:n][ob], rtol=1e-12, atol=1e-12)
