"""Loop closure in the stream: revisits found and measured on rendered loops, the pose graph's
corrections applied to cameras, map and depth.

Windows come from the ground truth (:class:`edgescene.bench.loop_closure.DriftingGroundTruth`):
exact, or with a known drift inside every window, as a real model drifts. The bundled demo model
cannot show what closure does (its camera head predicts about 1.7 degrees of rotation whatever
the motion: docs/mapping.md, "Loop closure"), so the drift is made here, where it is known.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgescene.bench.loop_closure import DriftingGroundTruth, loop_sequences, run_drifting
from edgescene.bench.metrics import ate
from edgescene.core.geometry import inverse_se3
from edgescene.core.sim3 import Sim3
from edgescene.runtime.fusion import PointMap
from edgescene.runtime.loops import LoopConfig, LoopDetector, global_descriptor
from edgescene.runtime.stream import FrameInfo, StreamConfig, StreamingReconstruction
from edgescene.train.data.synthetic import render_sequence

pytest.importorskip("gtsam")
from edgescene.mapping.pose_graph import solve


@pytest.fixture(scope="module")
def loops():
    """loop_orbit (1.25 turns) and figure_eight, 120 frames at 256x192 (as the table in docs/mapping.md)."""
    return {seq.trajectory: seq for seq in loop_sequences(120)}


_RUNS: dict = {}


def drifting(seq, closed: bool, drift_deg: float, drift_scale: float):
    """run_drifting, once per sequence and setting for the whole module (the runs are deterministic)."""
    key = (seq.trajectory, closed, drift_deg, drift_scale)
    if key not in _RUNS:
        _RUNS[key] = run_drifting(seq, solve if closed else None, drift_deg, drift_scale)
    return _RUNS[key]


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_window_gap": 1}, "min_window_gap must be >= 2"),
        ({"retrieval_similarity": 1.5}, "retrieval_similarity"),
        ({"candidates": 0}, "candidates must be >= 1"),
        ({"ratio": 0}, "ratio must be in"),
        ({"min_inliers": 3}, "min_inliers must be >= 4"),
        ({"max_residual": 0}, "max_residual must be > 0"),
        ({"sigma_rotation": 0}, "standard deviations must be > 0"),
    ],
)
def test_loop_config_refuses_what_cannot_work(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LoopConfig(**kwargs)


def test_global_descriptor_is_a_unit_vector_blind_to_brightness():
    rng = np.random.default_rng(0)
    image = rng.integers(30, 200, (96, 128, 3), dtype=np.uint8)
    a = global_descriptor(image)
    assert a.shape == (32 * 24,) and abs(np.linalg.norm(a) - 1) < 1e-5
    brighter = global_descriptor(image + 40)  # no clipping: 199 + 40 < 255
    assert a @ brighter > 0.999
    other = global_descriptor(rng.integers(30, 200, (96, 128, 3), dtype=np.uint8))
    assert abs(a @ other) < 0.2
    assert np.all(global_descriptor(np.full((40, 60, 3), 7, np.uint8)) == 0)  # flat image: no direction


# ----------------------------------------------------------------------------- the detector


def test_revisits_are_found_and_measured_as_the_truth_says(loops):
    """Exact windows: every loop edge found joins windows that really see one place, and its Sim(3)
    equals the one the (exact) chain implies: measured <= 0.47 deg, scale within 1.4 %."""
    for seq in loops.values():
        predictor = DriftingGroundTruth(seq, 0.0, 0.0)
        stream = StreamingReconstruction(predictor, StreamConfig(conf_percentile=0), loops=LoopConfig())
        for i in range(len(seq.frames)):
            stream.push(predictor.image(i), seq.frames[i], FrameInfo(index=i))
        stream.finish()
        matches = stream.loop_detector.matches
        assert len(matches) >= 3, seq.trajectory  # measured: 8 (orbit), 3 (figure eight)
        nodes = stream.window_nodes
        centres = inverse_se3(seq.extrinsics)[:, :, 3]
        for m in matches:
            assert m.window_b - m.window_a >= 3 and m.inliers >= 25
            # the two keyframes' cameras are close in the true world (a real revisit)
            extent = np.ptp(centres, axis=0).max()
            assert np.linalg.norm(centres[m.keyframe_a] - centres[m.keyframe_b]) < 0.25 * extent
            chain = nodes[m.window_a].inverse() @ nodes[m.window_b]
            error = chain.inverse() @ m.relative
            assert error.angle_deg() < 1.0, (seq.trajectory, m)
            assert abs(np.log(error.s)) < 0.03, (seq.trajectory, m)


def test_no_loop_on_a_path_that_never_comes_back():
    seq = render_sequence(seed=5, trajectory="orbit", frames=60, width=256, height=192)  # a 60-150 degree arc
    run = run_drifting(seq, solve, 0.3, 0.005)
    assert run.loops_found == 0
    assert run.report["applied"] is False and "no revisit" in run.report["note"]


def test_a_dinov3_revisit_hint_is_verified_even_when_retrieval_misses(loops):
    seq = loops["loop_orbit"]
    predictor = DriftingGroundTruth(seq, 0.0, 0.0)
    blind = LoopConfig(retrieval_similarity=1.0)  # retrieval finds nothing: only hints are candidates
    found = {}
    for hint in (None, "the true revisit"):
        stream = StreamingReconstruction(predictor, StreamConfig(conf_percentile=0), loops=blind)
        for i in range(len(seq.frames)):
            hinted = 1 if hint and i == 97 else None  # frame 97 sees what frame 1 saw (1.25 turns: 96 a turn)
            stream.push(predictor.image(i), seq.frames[i], FrameInfo(index=i, revisit_of=hinted))
        stream.finish()
        found[hint] = [(m.keyframe_a, m.keyframe_b) for m in stream.loop_detector.matches]
    assert found[None] == []
    assert found["the true revisit"] == [(1, 97)]


def test_detector_memory_is_small_per_keyframe(loops):
    seq = loops["figure_eight"]
    predictor = DriftingGroundTruth(seq, 0.0, 0.0)
    stream = StreamingReconstruction(predictor, StreamConfig(conf_percentile=0), loops=LoopConfig())
    for i in range(len(seq.frames)):
        stream.push(predictor.image(i), seq.frames[i], FrameInfo(index=i))
    stream.finish()
    per_keyframe = stream.loop_detector.nbytes / len(seq.frames)
    assert 1_000 < per_keyframe < 30_000  # measured ~11.7 KB (ORB points, descriptors, tiny image)
    frame_bytes = seq.frames[0].nbytes + seq.depth[0].nbytes * 3  # one frame's colours and points
    assert per_keyframe < 0.1 * frame_bytes


def test_detector_refuses_mismatched_inputs():
    detector = LoopDetector()
    with pytest.raises(ValueError, match="must share"):
        detector.add(0, 0, np.zeros((10, 12, 3), np.uint8), np.zeros((10, 11, 3)), np.zeros((10, 11)), np.zeros(3))


# ----------------------------------------------------------------------------- closing loops


@pytest.mark.parametrize("trajectory", ["loop_orbit", "figure_eight"])
def test_exact_windows_stay_exact_when_loops_close(loops, trajectory):
    """Ground-truth windows: the chain is already exact, and closing the loop keeps it so (the
    edges' own measurement noise, sub-pixel keypoints: ATE/extent measured 1.0e-3 and 3.8e-4)."""
    open_run = drifting(loops[trajectory], False, 0.0, 0.0)
    closed = drifting(loops[trajectory], True, 0.0, 0.0)
    assert open_run.ate_rel < 1e-6
    assert closed.report["applied"] and closed.ate_rel < 2e-3


@pytest.mark.parametrize("trajectory, measured", [("loop_orbit", 0.04), ("figure_eight", 0.09)])
def test_closing_loops_removes_drift(loops, trajectory, measured):
    """0.3 degree and 0.5 % of drift per frame inside each window (1.8 degrees and 3 % a window):
    ATE/extent 0.116 -> 0.005 (orbit), 0.056 -> 0.005 (figure eight); the target is 0.6x."""
    open_run = drifting(loops[trajectory], False, 0.3, 0.005)
    closed = drifting(loops[trajectory], True, 0.3, 0.005)
    assert open_run.ate_rel > 0.04
    assert closed.ate_rel <= 0.6 * open_run.ate_rel
    assert closed.ate_rel / open_run.ate_rel < measured * 2


def test_map_moves_with_the_cameras(loops):
    """After closure, the fused map agrees with the corrected cameras: each keyframe's depth,
    unprojected with its corrected camera, lands on map voxels; and the place mapped twice before
    closure is mapped once (fewer voxels)."""
    seq = loops["loop_orbit"]
    runs = {}
    for closed in (False, True):
        predictor = DriftingGroundTruth(seq, 0.3, 0.005)
        stream = StreamingReconstruction(
            predictor, StreamConfig(conf_percentile=0), loops=LoopConfig() if closed else None
        )
        results = []
        stream.sink = results.append
        for i in range(len(seq.frames)):
            stream.push(predictor.image(i), seq.frames[i], FrameInfo(index=i))
        stream.finish()
        if closed:
            stream.close_loops(solve)
        runs[closed] = (stream, results)
    assert len(runs[True][0].map) < 0.9 * len(runs[False][0].map)  # measured 0.79x

    stream, results = runs[True]
    extrinsics, intrinsics = stream.trajectory()
    voxel = stream.map.voxel_size
    keys = {tuple(k) for k in np.floor(stream.map.points.astype(np.float64) / voxel).astype(np.int64)}
    from edgescene.core.geometry import unproject_depth

    for k in (5, 60, 115):
        scale = stream.corrections[stream.keyframe_windows[k]].s
        depth = results[k].depth.astype(np.float64) * scale  # the sink saw the depth before closure
        points = unproject_depth(depth[None], extrinsics[k][None], intrinsics[k][None])[0][depth > 0]
        cells = np.floor(points[::50] / voxel).astype(np.int64)
        near = [any((c[0] + a, c[1] + b, c[2] + d) in keys for a in (-1, 0, 1) for b in (-1, 0, 1) for d in (-1, 0, 1))
                for c in cells]  # fmt: skip
        assert np.mean(near) > 0.8, k  # within a voxel of the map


def test_close_loops_needs_detection_and_a_finished_stream(loops):
    seq = loops["figure_eight"]
    predictor = DriftingGroundTruth(seq, 0.0, 0.0)
    plain = StreamingReconstruction(predictor, StreamConfig())
    with pytest.raises(RuntimeError, match="without loop detection"):
        plain.close_loops(solve)
    stream = StreamingReconstruction(predictor, StreamConfig(), loops=LoopConfig())
    for i in range(9):
        stream.push(predictor.image(i), seq.frames[i], FrameInfo(index=i))
    with pytest.raises(RuntimeError, match="after finish"):
        stream.close_loops(solve)


def test_a_solver_that_loses_windows_is_refused(loops):
    seq = loops["loop_orbit"]
    predictor = DriftingGroundTruth(seq, 0.0, 0.0)
    stream = StreamingReconstruction(predictor, StreamConfig(conf_percentile=0), loops=LoopConfig())
    for i in range(len(seq.frames)):
        stream.push(predictor.image(i), seq.frames[i], FrameInfo(index=i))
    stream.finish()
    with pytest.raises(ValueError, match="returned 1 nodes for 20 windows"):
        stream.close_loops(lambda nodes, edges: ([Sim3.identity()], {}))


# ----------------------------------------------------------------------------- the map's tags


def test_point_map_tags_follow_voxels_through_growth_and_coarsening():
    rng = np.random.default_rng(1)
    pmap = PointMap(voxel_size=0.01, max_points=4000)
    a = rng.uniform(0, 1, (3000, 3))
    b = rng.uniform(0, 1, (3000, 3)) + [5.0, 0, 0]
    colours = np.zeros((3000, 3), np.uint8)
    pmap.add(a, colours, tag=0)
    pmap.add(b, colours, tag=7)  # past max_points: the grid coarsens
    tags, points = pmap.tags, pmap.points
    assert set(np.unique(tags)) == {0, 7}
    assert np.all(points[tags == 7][:, 0] >= 5.0 - 1e-6) and np.all(points[tags == 0][:, 0] <= 1.0 + 1e-6)
    with pytest.raises(ValueError, match="int32"):
        pmap.add(a[:3], colours[:3], tag=2**40)


def test_transform_tags_moves_each_window_and_merges_what_meets():
    grid = np.stack(np.meshgrid(*[np.arange(10) * 0.1 + 0.05] * 3, indexing="ij"), -1).reshape(-1, 3)
    colours = np.full((len(grid), 3), 100, np.uint8)
    pmap = PointMap(voxel_size=0.1)
    pmap.add(grid, colours, tag=0)
    pmap.add(grid + [2.0, 0, 0], colours, tag=1)  # the same place mapped again, 2 units off (drift)
    assert len(pmap) == 2000
    pmap.transform_tags({1: Sim3(1.0, np.eye(3), np.array([-2.0, 0.0, 0.0]))})  # the correction
    assert len(pmap) == 1000  # one surface again
    np.testing.assert_allclose(np.sort(pmap.points, axis=0), np.sort(grid, axis=0), atol=1e-6)
    np.testing.assert_allclose(pmap.weights, 2.0)
    with pytest.raises(ValueError, match="scale > 0"):
        pmap.transform_tags({0: Sim3(0.0, np.eye(3), np.zeros(3))})


def test_ate_of_the_bench_runs_is_the_metric_of_the_bench(loops):
    run = drifting(loops["figure_eight"], False, 0.3, 0.005)
    assert run.ate_rel == pytest.approx(ate(run.centres, run.truth)["ate_rel"])
    assert run.windows == 20 and run.keyframes == 120


# ----------------------------------------------------------------------------- through the runtime


@pytest.fixture(scope="module")
def orbit_runs(loops, tmp_path_factory):
    """The bundled model on the 1.25-turn orbit (PNG frames), without and with loop closure."""
    from PIL import Image

    from edgescene.assets import default_model_dir
    from edgescene.runtime.reconstruct import ReconstructConfig, reconstruct_to_folder

    root = tmp_path_factory.mktemp("orbit")
    for i, rgb in enumerate(loops["loop_orbit"].frames):
        Image.fromarray(rgb).save(root / f"{i:04d}.png")
    reports = {}
    for closed in (False, True):
        reports[closed] = reconstruct_to_folder(
            root,
            default_model_dir(),
            root.parent / f"out_{closed}",
            ReconstructConfig(loop_closure=closed),
            progress=False,
            solver=solve if closed else None,
        )
    return root, reports


@pytest.mark.slow
def test_reconstruct_to_folder_corrects_cameras_map_and_depth_files(orbit_runs):
    import json

    from edgescene.runtime.outputs import read_ply

    root, reports = orbit_runs
    lc = reports[True]["loop_closure"]
    assert lc["applied"] and len(lc["loops"]) >= 3  # measured: 8 loop edges
    assert lc["max_correction"]["rotation_deg"] > 1.0  # measured 15.9
    assert "loop_closure" not in reports[False]
    folders = {c: root.parent / f"out_{c}" for c in (False, True)}
    cams = {c: json.loads((folders[c] / "cameras.json").read_text())["frames"] for c in folders}
    assert [f["index"] for f in cams[True]] == [f["index"] for f in cams[False]]
    np.testing.assert_allclose(cams[True][0]["extrinsics"], cams[False][0]["extrinsics"], atol=1e-9)  # window 0 stays
    moved = [
        np.abs(np.subtract(a["extrinsics"], b["extrinsics"])).max()
        for a, b in zip(cams[True], cams[False], strict=True)
    ]
    assert max(moved) > 0.01
    # every depth file is the open run's times its window's correction scale (the same model output)
    scales = []
    for k in (0, 50, 119):
        a = np.load(folders[True] / f"depth/{k:05d}.npz")
        b = np.load(folders[False] / f"depth/{k:05d}.npz")
        ratio = a["depth"][b["depth"] > 0] / b["depth"][b["depth"] > 0]
        assert np.ptp(ratio) < 1e-5 * ratio.mean()
        np.testing.assert_array_equal(a["conf"], b["conf"])
        assert int(a["frame_index"]) == k
        scales.append(float(ratio.mean()))
    assert scales[0] == pytest.approx(1.0, abs=1e-6) and scales[2] != pytest.approx(1.0, abs=1e-4)
    # the place seen twice is fused once: fewer points (measured 649k vs 801k)
    assert len(read_ply(folders[True] / "points.ply")[0]) < 0.95 * len(read_ply(folders[False] / "points.ply")[0])
    assert reports[True]["points"] == len(read_ply(folders[True] / "points.ply")[0])


def test_loop_closure_without_a_solver_says_what_to_pass(tmp_path):
    from edgescene.assets import default_model_dir, sample_dir
    from edgescene.runtime.reconstruct import ReconstructConfig, Reconstructor, reconstruct_to_folder

    with pytest.raises(ValueError, match=r"solver=edgescene\.mapping\.pose_graph\.solve"):
        reconstruct_to_folder(sample_dir() / "sample.mp4", default_model_dir(), tmp_path / "o",
                              ReconstructConfig(loop_closure=True), progress=False)  # fmt: skip
    assert not (tmp_path / "o").exists()
    rec = Reconstructor(default_model_dir(), ReconstructConfig(loop_closure=True))
    with pytest.raises(ValueError, match="needs a pose-graph solver"):
        rec.run([np.zeros((48, 64, 3), np.uint8)])
    with pytest.raises(ValueError, match="must be callable"):
        rec.run([np.zeros((48, 64, 3), np.uint8)], solver="gtsam")


def test_in_memory_run_closes_loops_too(loops):
    from edgescene.assets import default_model_dir
    from edgescene.runtime.reconstruct import ReconstructConfig, Reconstructor

    seq = loops["figure_eight"]
    rec = Reconstructor(default_model_dir(), ReconstructConfig(loop_closure=True))
    result = rec.run(list(seq.frames), solver=solve)
    lc = result.report["loop_closure"]
    assert lc["applied"] and lc["loops"]
    assert len(result.depth) == len(result.extrinsics) == result.report["keyframes"]


def test_pipelined_detection_finds_what_the_sequential_one_does(loops):
    """Pipelined streams detect revisits on their own thread, in the same order: same edges, same result."""
    seq = loops["figure_eight"]
    found = {}
    for pipelined in (False, True):
        predictor = DriftingGroundTruth(seq, 0.3, 0.005)
        stream = StreamingReconstruction(
            predictor, StreamConfig(conf_percentile=0), pipelined=pipelined, loops=LoopConfig()
        )
        for i in range(len(seq.frames)):
            stream.push(predictor.image(i), seq.frames[i], FrameInfo(index=i))
        stream.finish()
        assert all("loops_s" in t for t in stream.window_timings())
        report = stream.close_loops(solve)
        found[pipelined] = (report["loops"], stream.trajectory()[0])
    assert found[True][0] == found[False][0] and found[True][0]
    np.testing.assert_array_equal(found[True][1], found[False][1])


def test_old_places_are_thinned_past_max_places(loops):
    seq = loops["loop_orbit"]
    predictor = DriftingGroundTruth(seq, 0.0, 0.0)
    stream = StreamingReconstruction(predictor, StreamConfig(conf_percentile=0), loops=LoopConfig(max_places=40))
    for i in range(len(seq.frames)):
        stream.push(predictor.image(i), seq.frames[i], FrameInfo(index=i))
    stream.finish()
    detector = stream.loop_detector
    assert len(detector.places) <= 40 and len(detector._descriptors) == len(detector.places)
    kept = [p.keyframe for p in detector.places]
    assert kept == sorted(kept) and kept[-1] == 119 and kept[0] == 0  # the newest all kept, the oldest sparser
    assert detector.matches  # the loop is still found, from the places that remain
    with pytest.raises(ValueError, match="max_places"):
        LoopConfig(max_places=4)
