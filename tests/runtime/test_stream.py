"""Streaming geometry with exact inputs: windows predicted from ground truth (each in its own
first-camera frame and its own scale, as VGGT predicts) must chain back into the true trajectory."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edgescene.core.geometry import inverse_se3, relative_pose_to_first, umeyama_sim3
from edgescene.runtime.stream import FrameInfo, StreamConfig, StreamingReconstruction, WindowPrediction
from edgescene.train.data.synthetic import render_sequence


@pytest.fixture(scope="module")
def sequence():
    return render_sequence(seed=21, trajectory="handheld", frames=30, width=96, height=72)


class GroundTruthPredictor:
    """Answers like VGGT would if it were exact: the window's first camera is the identity and the
    scale is normalised (mean depth of the first frame, times a random factor per window)."""

    def __init__(self, seq, seed: int = 0):
        self.seq = seq
        self.index = {hashlib.sha1(self.image(i).tobytes()).hexdigest(): i for i in range(len(seq.frames))}
        self.rng = np.random.default_rng(seed)
        self.calls: list[list[int]] = []

    def image(self, i):
        return (self.seq.frames[i].transpose(2, 0, 1) / 255.0).astype(np.float32)

    def __call__(self, images: np.ndarray) -> WindowPrediction:
        ids = [self.index[hashlib.sha1(img.tobytes()).hexdigest()] for img in images]
        self.calls.append(ids)
        extrinsics = relative_pose_to_first(self.seq.extrinsics[ids])
        depth = self.seq.depth[ids].astype(np.float64)
        scale = depth[0][depth[0] > 0].mean() * self.rng.uniform(0.5, 2.0)
        extrinsics[:, :, 3] /= scale
        valid = depth > 0
        conf = np.where(valid, 1.0 + self.rng.uniform(0, 1, depth.shape), 0.0)
        intrinsics = np.repeat(self.seq.intrinsics[None], len(ids), axis=0)
        return WindowPrediction(extrinsics, intrinsics, (depth / scale).astype(np.float32), conf.astype(np.float32))


def push_all(stream, predictor, seq):
    for i in range(len(seq.frames)):
        stream.push(predictor.image(i), seq.frames[i], FrameInfo(index=i))
    return stream.finish()


@pytest.mark.parametrize("window,overlap", [(8, 2), (5, 1), (6, 3)])
def test_chained_windows_recover_the_trajectory(sequence, window, overlap):
    predictor = GroundTruthPredictor(sequence)
    stream = StreamingReconstruction(predictor, StreamConfig(window=window, overlap=overlap, conf_percentile=0))
    state = push_all(stream, predictor, sequence)
    assert state.keyframes == len(sequence.frames)
    assert state.windows == len(predictor.calls) > 2
    assert all(len(c) <= window for c in predictor.calls)
    assert all(c[:overlap] == prev[-overlap:] for prev, c in zip(predictor.calls, predictor.calls[1:], strict=False))

    estimated = stream.camera_centers()
    truth = inverse_se3(sequence.extrinsics)[:, :, 3]
    s, r, t = umeyama_sim3(estimated, truth)
    aligned = s * estimated @ r.T + t
    extent = np.linalg.norm(truth - truth.mean(0), axis=1).max()
    assert np.abs(aligned - truth).max() / extent < 1e-7  # measured 2.8e-9 .. 1.4e-8 (float32 depth)
    # rotations agree too (up to the global rotation r)
    est_r = stream.trajectory()[0][:, :, :3]
    rel = np.einsum("sij,jk->sik", est_r, r.T)  # camera-from-map = camera-from-world * r
    rel = np.einsum("sij,skj->sik", rel, sequence.extrinsics[:, :, :3])  # so est * r^T * true^T = I
    angles = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert angles.max() < 1e-4  # degrees; measured <= 3.8e-6
    assert all(a.residual < 1e-8 * extent for a in stream.alignments)  # measured <= 3.6e-9 x extent


def test_map_points_lie_on_the_true_surfaces(sequence):
    predictor = GroundTruthPredictor(sequence, seed=1)
    stream = StreamingReconstruction(predictor, StreamConfig(window=8, overlap=2, conf_percentile=0))
    push_all(stream, predictor, sequence)
    # Bring the map into the true world frame with the camera alignment, then every map point must
    # project into frame 0 at the ground-truth depth (voxel averaging aside).
    estimated, truth = stream.camera_centers(), inverse_se3(sequence.extrinsics)[:, :, 3]
    s, r, t = umeyama_sim3(estimated, truth)
    world = s * stream.map.points @ r.T + t
    cam = world @ sequence.extrinsics[0][:, :3].T + sequence.extrinsics[0][:, 3]
    k = sequence.intrinsics
    front = cam[:, 2] > 0.1
    u = np.rint(k[0, 0] * cam[front, 0] / cam[front, 2] + k[0, 2]).astype(int)
    v = np.rint(k[1, 1] * cam[front, 1] / cam[front, 2] + k[1, 2]).astype(int)
    inside = (u >= 0) & (u < 96) & (v >= 0) & (v < 72)
    gt = sequence.depth[0][v[inside], u[inside]]
    z = cam[front][inside, 2]
    visible = (gt > 0) & (np.abs(z - gt) < 0.05 * gt)  # points not hidden behind others in frame 0
    assert visible.mean() > 0.5
    assert np.median(np.abs(z[visible] - gt[visible]) / gt[visible]) < 1e-2  # voxels are depth/250 wide


def test_the_stream_keeps_only_the_overlap_in_memory(sequence):
    predictor = GroundTruthPredictor(sequence)
    results = []
    stream = StreamingReconstruction(
        predictor, StreamConfig(window=6, overlap=2, conf_percentile=0), sink=results.append
    )
    push_all(stream, predictor, sequence)
    assert [r.keyframe for r in results] == list(range(30))  # every keyframe handed out exactly once
    assert stream._overlap_points.shape[0] == 2 and len(stream._pending) == 0
    assert results[0].depth.shape == (72, 96)


def test_invalid_configuration_is_rejected():
    with pytest.raises(ValueError, match="overlap"):
        StreamConfig(window=4, overlap=4)
    with pytest.raises(ValueError, match="branch"):
        StreamConfig(branch="mesh")


def test_windows_must_overlap_to_be_aligned():
    with pytest.raises(ValueError, match=r"window must be >= 2 \(got 1\)"):
        StreamConfig(window=1, overlap=0)
    with pytest.raises(ValueError, match=r"overlap must be in \[1, window-1\]"):
        StreamConfig(window=4, overlap=0)
