"""A synthetic video with exact ground truth: a camera walking through a textured room.

Used by the runtime-capacity bench (:mod:`edgescene.bench.runtime_capacity`) as the footage and
by its oracle model (:mod:`edgescene.bench.oracle`) as the truth it replays. Numpy only; rendered
by ray casting against axis-aligned boxes, so depth is exact.

The scene: a room ``[-4, 4] x [-1.5, 1.5] x [-4, 4]`` (metres; OpenCV axes, y down, so the floor is
y = +1.5) with two solid boxes inside. The camera walks a smooth arc around the room's centre at
eye height, looking outward and sideways, ``frames`` views in all (about 4 cm and 1 degree between
consecutive views, like a handheld walk at 30 frames/s sampled every few frames).

Each surface point's colour is a function of its world position (a multi-scale pattern), so
consecutive frames differ and the keyframe selector keeps them all; colours are uint8 RGB.

Conventions: extrinsics camera-from-world (3, 4), intrinsics (3, 3) pixels (pixel (u, v) = column,
row, no +0.5, as :func:`edgescene.core.geometry.unproject_depth`), depth along the camera z axis
(H, W) float64 metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROOM = (np.array([-4.0, -1.5, -4.0]), np.array([4.0, 1.5, 4.0]))
BOXES = (
    (np.array([-2.6, 0.3, 1.2]), np.array([-1.6, 1.5, 2.4])),
    (np.array([1.4, -0.2, -2.8]), np.array([2.6, 1.5, -1.8])),
)


@dataclass(frozen=True)
class SyntheticVideo:
    """Frames and their ground truth (see the module docstring for units and axes)."""

    rgb: np.ndarray  # (F, H, W, 3) uint8
    depth: np.ndarray  # (F, H, W) float32 metres, z along the camera axis
    extrinsics: np.ndarray  # (F, 3, 4) float64 camera-from-world
    intrinsics: np.ndarray  # (3, 3) float64, the same for every frame

    @property
    def frames(self) -> int:
        return len(self.rgb)

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.rgb.shape[1]), int(self.rgb.shape[2])


def _look_rotation(forward: np.ndarray) -> np.ndarray:
    """World-from-camera rotation whose z axis is ``forward`` and whose y axis points down (+y)."""
    z = forward / np.linalg.norm(forward)
    x = np.cross(np.array([0.0, 1.0, 0.0]), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def trajectory(frames: int, seed: int = 0) -> np.ndarray:
    """(F, 3, 4) camera-from-world extrinsics along the walk; ``seed`` varies its start and wobble."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, 2 * np.pi)
    step = np.radians(1.0)  # about 1 degree of the arc per frame
    extrinsics = np.zeros((frames, 3, 4))
    for i in range(frames):
        a = start + step * i
        centre = np.array([1.8 * np.cos(a), 0.15 * np.sin(3.1 * a), 1.8 * np.sin(a)])
        # look outward and ahead along the walk, with a slow sideways sway
        heading = np.array([np.cos(a + 0.9 + 0.2 * np.sin(2 * a)), 0.1 * np.sin(1.7 * a), np.sin(a + 0.9)])
        r_wc = _look_rotation(heading)
        extrinsics[i, :, :3] = r_wc.T
        extrinsics[i, :, 3] = -r_wc.T @ centre
    return extrinsics


def intrinsics_for(h: int, w: int, fov_deg: float = 70.0) -> np.ndarray:
    """A pinhole camera of horizontal field of view ``fov_deg``, square pixels, principal point at the centre."""
    f = (w / 2.0) / np.tan(np.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])


def _slab(origin: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit ray parameters (N,) of rays ``origin + t dirs`` through the box [lo, hi]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dirs
        t0 = (lo - origin) * inv
        t1 = (hi - origin) * inv
    near = np.nanmax(np.minimum(t0, t1), axis=1)
    far = np.nanmin(np.maximum(t0, t1), axis=1)
    return near, far


def _pattern(points: np.ndarray) -> np.ndarray:
    """(N, 3) world points -> (N, 3) uint8 colours: smooth colour ramps plus fine stripes."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    fine = np.sin(9.0 * x + 2.0 * y) * np.sin(11.0 * z - 3.0 * y)
    coarse = np.sin(1.3 * x) * np.cos(0.9 * z)
    r = 128 + 70 * fine + 40 * coarse
    g = 128 + 60 * np.sin(5.0 * (x + z) + 4.0 * y) + 30 * coarse
    b = 128 + 50 * np.cos(7.0 * y + 3.0 * x) - 40 * coarse
    return np.clip(np.stack([r, g, b], axis=1), 0, 255).astype(np.uint8)


def render(extrinsics: np.ndarray, intrinsics: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One view: (H, W, 3) uint8 colours and (H, W) float32 z-depth of the room from ``extrinsics``."""
    h, w = hw
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    cam = np.stack([(u - intrinsics[0, 2]) / intrinsics[0, 0], (v - intrinsics[1, 2]) / intrinsics[1, 1]], axis=-1)
    rays_cam = np.concatenate([cam, np.ones((h, w, 1))], axis=-1).reshape(-1, 3)  # z = 1: t is z-depth
    r_cw, t_cw = extrinsics[:, :3], extrinsics[:, 3]
    origin = -r_cw.T @ t_cw
    dirs = rays_cam @ r_cw  # world directions, R^T d
    _, t_room = _slab(origin, dirs, *ROOM)  # inside the room: the exit is the wall hit
    t = t_room
    for lo, hi in BOXES:
        near, far = _slab(origin, dirs, lo, hi)
        hit = (near <= far) & (near > 1e-6) & (near < t)
        t = np.where(hit, near, t)
    points = origin + t[:, None] * dirs
    return _pattern(points).reshape(h, w, 3), t.reshape(h, w).astype(np.float32)


def make_video(frames: int, hw: tuple[int, int], seed: int = 0) -> SyntheticVideo:
    """Render ``frames`` views at ``hw`` (H, W) along the walk of ``seed``."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    h, w = hw
    if h < 8 or w < 8:
        raise ValueError(f"hw must be at least 8x8, got {hw}")
    extrinsics = trajectory(frames, seed)
    intrinsics = intrinsics_for(h, w)
    rgb = np.zeros((frames, h, w, 3), np.uint8)
    depth = np.zeros((frames, h, w), np.float32)
    for i in range(frames):
        rgb[i], depth[i] = render(extrinsics[i], intrinsics, hw)
    return SyntheticVideo(rgb, depth, extrinsics, intrinsics)


def surface_samples(video: SyntheticVideo, spacing: float) -> np.ndarray:
    """(M, 3) points of the true surfaces seen by the video, about ``spacing`` metres apart (one per
    voxel of that size: the reference an evaluation measures a fused cloud against)."""
    from edgescene.core.geometry import unproject_depth

    chunks = []
    for i in range(video.frames):
        pts = unproject_depth(video.depth[i : i + 1], video.extrinsics[i : i + 1], video.intrinsics[None])
        pts = pts.reshape(-1, 3).astype(np.float64)
        _, first = np.unique(_voxel_ids(pts, spacing), return_index=True)
        chunks.append(pts[first])
    pts = np.concatenate(chunks)
    _, first = np.unique(_voxel_ids(pts, spacing), return_index=True)
    return pts[np.sort(first)]


def _voxel_ids(points: np.ndarray, spacing: float) -> np.ndarray:
    """One int64 per voxel of ``spacing`` (the room spans far fewer than 2**20 voxels per axis)."""
    k = np.floor(points / spacing).astype(np.int64) + (1 << 20)
    return (k[:, 0] << 42) | (k[:, 1] << 21) | k[:, 2]


__all__ = ["SyntheticVideo", "intrinsics_for", "make_video", "render", "surface_samples", "trajectory"]
