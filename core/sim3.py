"""Similarity transforms of windows and the pose-graph edges between them (numpy only).

A reconstruction window is placed in the map by a similarity ``map_from_window``:
``p_map = s R p_window + t`` (:class:`Sim3`). An :class:`Edge` (i, j) measures ``T_i^{-1} T_j``,
window j's coordinates in window i's: the stream's overlap alignment gives one between
consecutive windows ("sequential"), a revisit gives one between windows far apart in time
("loop"). :mod:`edgescene.runtime.loops` measures edges; a pose-graph solver
(:func:`edgescene.mapping.pose_graph.solve`, GTSAM) moves the nodes to agree with them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Edge", "PositionPrior", "Sim3", "move_camera"]


@dataclass(frozen=True)
class Sim3:
    """``p -> s R p + t``: s > 0, R (3, 3) rotation, t (3,)."""

    s: float
    R: np.ndarray
    t: np.ndarray

    @staticmethod
    def identity() -> Sim3:
        return Sim3(1.0, np.eye(3), np.zeros(3))

    def __matmul__(self, other: Sim3) -> Sim3:
        """Composition: ``(self @ other)(p) = self(other(p))``."""
        return Sim3(self.s * other.s, self.R @ other.R, self.s * self.R @ other.t + self.t)

    def inverse(self) -> Sim3:
        return Sim3(1.0 / self.s, self.R.T, -(self.R.T @ self.t) / self.s)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) -> (..., 3)."""
        return self.s * np.asarray(points) @ self.R.T + self.t

    def angle_deg(self) -> float:
        """The rotation's angle in degrees (0 for the identity)."""
        return float(np.degrees(np.arccos(np.clip((np.trace(self.R) - 1.0) / 2.0, -1.0, 1.0))))


@dataclass(frozen=True)
class Edge:
    """A measured ``T_i^{-1} T_j`` with its standard deviations (smaller: more trusted)."""

    i: int
    j: int
    relative: Sim3
    sigma_rotation: float = 0.01  # rad
    sigma_translation: float = 0.01  # units of window i
    sigma_log_scale: float = 0.01
    kind: str = "sequential"  # "sequential" (shared frames) or "loop" (a revisit)


def move_camera(extrinsics: np.ndarray, c: Sim3) -> np.ndarray:
    """Camera-from-world (..., 3, 4) after the world moves by ``c`` (``p_new = c(p_old)``).

    ``x_cam = R x + t`` becomes ``R c.R^T`` and ``c.s t - R c.R^T c.t``: the camera's axes keep
    their metric, its translation scales with the world."""
    E = np.asarray(extrinsics, np.float64)
    R, t = E[..., :3], E[..., 3]
    r_new = R @ c.R.T
    t_new = c.s * t - np.einsum("...ij,j->...i", r_new, c.t)
    return np.concatenate([r_new, t_new[..., None]], axis=-1)


@dataclass(frozen=True)
class PositionPrior:
    """A known position of one camera (GPS, a rig) for the pose graph: ``point`` (3,), the camera
    centre in window ``window``'s frame, moved into the map by the window's node and into metres by
    the graph's ``map_to_metric`` similarity (a variable of the graph too), should land on ``target``
    (3,), metres, within ``sigma`` metres."""

    window: int
    point: np.ndarray
    target: np.ndarray
    sigma: float
