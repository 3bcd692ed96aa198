"""The Sim(3) pose graph (GTSAM): exact windows close the loop exactly, and a loop edge pulls a
drifting chain back (position error at most 0.6x the drift's)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gtsam")

from edgescene.core.geometry import inverse_se3
from edgescene.mapping.pose_graph import Edge, Sim3, chain, correct_cameras, optimize


def _rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _orbit(n: int = 12) -> list[Sim3]:
    """Windows around a full circle (radius 5), each with its own scale, the first at the identity."""
    rng = np.random.default_rng(0)
    nodes = [Sim3.identity()]
    for k in range(1, n):
        a = 2 * np.pi * k / n
        nodes.append(Sim3(float(rng.uniform(0.8, 1.2)), _rot_y(a), 5 * np.array([np.sin(a), 0, 1 - np.cos(a)])))
    return nodes


def _edges(nodes: list[Sim3], drift: Sim3 | None = None) -> list[Edge]:
    edges = []
    for i in range(len(nodes) - 1):
        rel = nodes[i].inverse() @ nodes[i + 1]
        edges.append(Edge(i, i + 1, rel if drift is None else rel @ drift))
    loop = nodes[-1].inverse() @ nodes[0]  # the revisit: the last window sees the first one's place
    edges.append(Edge(len(nodes) - 1, 0, loop, kind="loop"))
    return edges


def _close(a: Sim3, b: Sim3, tol: float) -> bool:
    return abs(a.s - b.s) < tol and np.abs(a.R - b.R).max() < tol and np.abs(a.t - b.t).max() < tol


def test_exact_windows_close_the_loop_exactly():
    truth = _orbit()
    edges = _edges(truth)
    chained = chain(edges, len(truth))
    assert all(_close(c, t, 1e-9) for c, t in zip(chained, truth, strict=True))
    result = optimize(chained, edges)
    assert result.initial_error < 1e-12 and result.loop_edges == 1
    assert all(_close(o, t, 1e-6) for o, t in zip(result.nodes, truth, strict=True))


def test_a_loop_edge_pulls_a_drifting_chain_back():
    truth = _orbit()
    drift = Sim3(1.01, _rot_y(np.radians(1.0)), np.array([0.02, 0.0, 0.0]))  # every window's small bias
    edges = _edges(truth, drift)
    chained = chain(edges, len(truth))
    result = optimize(chained, edges)
    centres = lambda nodes: np.array([n.t for n in nodes])  # window origins in the map
    before = np.sqrt(np.mean(np.sum((centres(chained) - centres(truth)) ** 2, axis=1)))
    after = np.sqrt(np.mean(np.sum((centres(result.nodes) - centres(truth)) ** 2, axis=1)))
    assert before > 0.3  # the chain drifted
    assert after <= 0.6 * before, (before, after)
    assert result.final_error < result.initial_error
    assert _close(result.nodes[0], Sim3.identity(), 1e-9)  # the map frame stays put


def test_cameras_move_with_their_window():
    truth = _orbit(4)
    moved = [Sim3(2.0, _rot_y(0.3), np.array([1.0, 0, 0])) @ n for n in truth]
    w = truth[2]  # a camera at window 2's origin, looking down its z axis (camera-from-map, rigid)
    cam_from_map = np.hstack([w.R.T, (-w.R.T @ w.t)[:, None]])
    corrected = correct_cameras(cam_from_map[None], [2], truth, moved)[0]
    np.testing.assert_allclose(inverse_se3(corrected)[:, 3], moved[2].t, atol=1e-9)  # at the moved origin
    np.testing.assert_allclose(corrected[:, :3], moved[2].R.T, atol=1e-9)  # turned with its window


def test_bad_graphs_are_refused():
    truth = _orbit(3)
    with pytest.raises(ValueError, match="at least two windows"):
        optimize(truth[:1], [])
    with pytest.raises(ValueError, match="does not join"):
        optimize(truth, [Edge(0, 5, Sim3.identity())])
    with pytest.raises(ValueError, match="not connected"):
        chain([Edge(0, 1, Sim3.identity())], 3)


# ---------------------------------------------------------------------------- position priors
def _priors(truth: list[Sim3], metric: Sim3, sigma: float, noise: float = 0.0, seed: int = 0):
    """Two known camera positions per window (points in the window's frame, their true metric place)."""
    from edgescene.core.sim3 import PositionPrior

    rng = np.random.default_rng(seed)
    priors = []
    for w, node in enumerate(truth):
        for point in (np.array([0.0, 0.0, 0.0]), np.array([0.3, -0.1, 0.4])):
            target = metric.apply((node.apply(point[None]))[0][None])[0] + rng.normal(scale=noise, size=3)
            priors.append(PositionPrior(w, point, target, sigma))
    return priors


def test_position_priors_pull_a_drifting_chain_without_any_loop():
    truth = _orbit()
    drift = Sim3(1.01, _rot_y(np.radians(1.0)), np.array([0.02, 0.0, 0.0]))
    edges = [e for e in _edges(truth, drift) if e.kind == "sequential"]  # no revisit at all
    chained = chain(edges, len(truth))
    metric = Sim3(3.0, _rot_y(0.7), np.array([100.0, 5.0, -40.0]))  # the map in metres (ENU)
    start = Sim3(2.9, _rot_y(0.68), np.array([100.5, 5.0, -40.2]))  # the first fit: close, not exact
    result = optimize(chained, edges, priors=_priors(truth, metric, sigma=0.05), map_to_metric=start)
    centres = lambda nodes: np.array([n.t for n in nodes])
    before = np.sqrt(np.mean(np.sum((centres(chained) - centres(truth)) ** 2, axis=1)))
    after = np.sqrt(np.mean(np.sum((centres(result.nodes) - centres(truth)) ** 2, axis=1)))
    assert before > 0.3 and after < 0.2 * before, (before, after)  # measured 0.75 -> 0.10 (biased edges vs priors)
    assert result.map_to_metric is not None and _close(result.map_to_metric, metric, 0.05)
    assert _close(result.nodes[0], Sim3.identity(), 1e-9)


def test_exact_priors_on_exact_windows_change_nothing_and_find_the_metric_frame():
    truth = _orbit()
    edges = _edges(truth)
    metric = Sim3(0.5, _rot_y(-1.2), np.array([3.0, 0.0, 7.0]))
    start = Sim3(0.52, _rot_y(-1.1), np.array([3.1, 0.1, 6.9]))
    result = optimize(chain(edges, len(truth)), edges, priors=_priors(truth, metric, sigma=0.01), map_to_metric=start)
    assert all(_close(o, t, 1e-5) for o, t in zip(result.nodes, truth, strict=True))
    assert _close(result.map_to_metric, metric, 1e-5)
    with pytest.raises(ValueError, match="need map_to_metric"):
        optimize(chain(edges, len(truth)), edges, priors=_priors(truth, metric, sigma=0.01))
