"""Camera trajectories for the synthetic scenes: orbit, forward walk and handheld jitter, plus two
loops for loop-closure tests (never in the default mix, so default datasets stay as they were):

- ``loop_orbit``: 1.25 turns around the scene: the last fifth of the video sees again what the
  first fifth saw, from the same places;
- ``figure_eight``: around the scene on a figure eight (azimuth swinging +-70 degrees, height at twice
  the frequency), crossing its own path at the middle, twice.

All return camera-from-world extrinsics (S, 3, 4) in OpenCV axes (x right, y down, z forward) for a
y-up world. Deterministic given the generator passed in.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Trajectory = Literal["orbit", "walk", "handheld"]
TRAJECTORIES: tuple[str, ...] = ("orbit", "walk", "handheld")  # the default mix
LOOP_TRAJECTORIES: tuple[str, ...] = ("loop_orbit", "figure_eight")  # revisits, for loop closure
ALL_TRAJECTORIES: tuple[str, ...] = TRAJECTORIES + LOOP_TRAJECTORIES
WORLD_UP = np.array([0.0, 1.0, 0.0])


def look_at(center: np.ndarray, target: np.ndarray, up: np.ndarray = WORLD_UP) -> np.ndarray:
    """Camera-from-world (3, 4) of a camera at ``center`` looking at ``target``, image y pointing down."""
    forward = target - center
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    return np.concatenate([rotation, (-rotation @ center)[:, None]], axis=1)


def orbit(rng: np.random.Generator, frames: int, object_radius: float) -> np.ndarray:
    """An arc of 60-150 degrees around the scene centre at 1.6-2.4x the object radius."""
    radius = object_radius * rng.uniform(1.6, 2.4)
    height = rng.uniform(0.8, 2.5)
    start = rng.uniform(0, 2 * np.pi)
    arc = np.radians(rng.uniform(60, 150)) * rng.choice([-1, 1])
    target = np.array([0.0, rng.uniform(0.2, 0.8), 0.0])
    angles = start + arc * np.linspace(0, 1, frames)
    return np.stack([look_at(np.array([radius * np.cos(a), height, radius * np.sin(a)]), target) for a in angles])


def loop_orbit(rng: np.random.Generator, frames: int, object_radius: float, turns: float = 1.25) -> np.ndarray:
    """``turns`` full turns around the scene centre at 1.8-2.2x the object radius, at one height."""
    radius = object_radius * rng.uniform(1.8, 2.2)
    height = rng.uniform(1.0, 2.0)
    start = rng.uniform(0, 2 * np.pi)
    direction = rng.choice([-1, 1])
    target = np.array([0.0, 0.5, 0.0])
    angles = start + direction * 2 * np.pi * turns * np.linspace(0, 1, frames)
    return np.stack([look_at(np.array([radius * np.cos(a), height, radius * np.sin(a)]), target) for a in angles])


def figure_eight(rng: np.random.Generator, frames: int, object_radius: float) -> np.ndarray:
    """A figure eight on the sphere around the scene: azimuth ``c + 70 deg sin(2 pi u)``, height
    ``h + 0.8 sin(4 pi u)`` for u in [0, 1]; it passes the middle (u = 0, 1/2, 1) three times."""
    radius = object_radius * rng.uniform(1.8, 2.2)
    height = rng.uniform(1.2, 2.0)
    centre = rng.uniform(0, 2 * np.pi)
    target = np.array([0.0, 0.5, 0.0])
    u = np.linspace(0, 1, frames)
    azimuth = centre + np.radians(70) * np.sin(2 * np.pi * u)
    heights = height + 0.8 * np.sin(4 * np.pi * u)
    return np.stack(
        [
            look_at(np.array([radius * np.cos(a), h, radius * np.sin(a)]), target)
            for a, h in zip(azimuth, heights, strict=True)
        ]
    )


def walk(rng: np.random.Generator, frames: int, object_radius: float) -> np.ndarray:
    """Walking towards the scene along a straight line, eye height 1.2-1.8 m, gaze ahead and slightly down."""
    heading = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(heading), 0.0, np.sin(heading)])
    side = np.cross(WORLD_UP, direction)
    start = -direction * object_radius * rng.uniform(2.6, 3.4) + side * rng.uniform(-1.0, 1.0)
    length = object_radius * rng.uniform(0.6, 1.1)
    eye = rng.uniform(1.2, 1.8)
    cameras = []
    for s in np.linspace(0, 1, frames):
        center = start + direction * length * s + np.array([0.0, eye, 0.0])
        cameras.append(look_at(center, center + direction * 4.0 + np.array([0.0, -eye * 0.8, 0.0])))
    return np.stack(cameras)


def _rodrigues(axis_angle: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(axis_angle)
    if angle < 1e-12:
        return np.eye(3)
    k = axis_angle / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def handheld(
    rng: np.random.Generator, base: np.ndarray, rotation_deg: float = 2.0, translation_m: float = 0.05
) -> np.ndarray:
    """Smooth shake on top of a trajectory: per axis, a sum of two slow random sinusoids."""
    frames = len(base)
    time = np.arange(frames, dtype=np.float64)
    shake = np.zeros((frames, 6))
    for dof in range(6):
        for _ in range(2):
            period = rng.uniform(6, 20)
            shake[:, dof] += np.sin(2 * np.pi * time / period + rng.uniform(0, 2 * np.pi)) / 2
    out = base.copy()
    for i in range(frames):
        delta_r = _rodrigues(np.radians(rotation_deg) * shake[i, :3])
        out[i, :, :3] = delta_r @ base[i, :, :3]
        out[i, :, 3] = delta_r @ base[i, :, 3] + translation_m * shake[i, 3:]
    return out


def make_trajectory(kind: str, rng: np.random.Generator, frames: int, object_radius: float) -> np.ndarray:
    """(frames, 3, 4) camera-from-world extrinsics of trajectory ``kind``."""
    if kind == "orbit":
        return orbit(rng, frames, object_radius)
    if kind == "walk":
        return walk(rng, frames, object_radius)
    if kind == "handheld":
        base = orbit(rng, frames, object_radius) if rng.random() < 0.5 else walk(rng, frames, object_radius)
        return handheld(rng, base)
    if kind == "loop_orbit":
        return loop_orbit(rng, frames, object_radius)
    if kind == "figure_eight":
        return figure_eight(rng, frames, object_radius)
    raise ValueError(f"unknown trajectory {kind!r}; valid: {', '.join(ALL_TRAJECTORIES)}")
