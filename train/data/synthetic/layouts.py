"""Scene layouts beyond objects on a plane: rooms (indoors) and terrain (outdoors, hills and
mountains), so synthetic training data covers the places real footage is taken.

- ``objects`` (:func:`~edgescene.train.data.synthetic.scene.random_scene`): a ground plane to the
  horizon and 4-8 objects in a disc of 2.5 m; the sky above.
- ``room``: a closed hall with walls and a ceiling (:class:`Room`, seen from inside), a floor,
  posters on the walls and 3-6 objects in a disc of 1.5 m. No sky: every pixel has depth. The hall
  is large enough for every trajectory of :mod:`.trajectories` at ``object_radius`` 1.5 (orbits up
  to 3.6 m from the centre, walks from up to 6.1 m).
- ``terrain``: a height field (:class:`Terrain`) of gentle rolling ground (at most 0.4 m within
  10 m of the centre, where cameras go) and mountains from 10 m outwards, up to 8 m high, with the
  objects resting on the slope; the sky above.

World frame as in :mod:`.scene`: metres, y up, the scene centred on the origin. Every layout is a
pure function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgescene.train.data.synthetic.scene import (
    EPS,
    Box,
    Ground,
    Panel,
    Scene,
    draw_lighting,
    draw_textures,
    place_objects,
    random_scene,
)
from edgescene.train.data.synthetic.textures import TEXTURE_SIZE

LAYOUTS: tuple[str, ...] = ("objects", "room", "terrain")
MARCH_STEP = 1.02  # terrain ray marching: each sample 2 % farther than the last


@dataclass(frozen=True)
class Room(Box):
    """A box seen from inside: walls and ceiling, normals facing inwards. The floor is a
    :class:`Ground` at y = 0; the box's own bottom lies below it and is never seen."""

    def surface(self, points, dirs):
        normals, u, v = super().surface(points, dirs)
        return -normals, u, v


@dataclass(frozen=True)
class Terrain:
    """The height field ``y = h(x, z)``: rolling waves plus Gaussian mountains.

    ``waves``: rows (amplitude, kx, kz, phase): ``a sin(kx x + kz z + phase)``;
    ``mountains``: rows (height, cx, cz, sigma): ``height exp(-|p - c|^2 / (2 sigma^2))``.
    Rays are marched from 5 cm to ``far`` in steps that cannot pass the field (from its slope bound),
    but at least 2 % of the distance (:data:`MARCH_STEP`: a crest thinner than that, seen at grazing
    angle, can be missed), and the first crossing is refined by bisection to 1e-9 m: a surface point
    is the same from every view."""

    texture: int
    waves: tuple[tuple[float, float, float, float], ...]
    mountains: tuple[tuple[float, float, float, float], ...]
    metres_per_tile: float = 2.0
    far: float = 80.0

    @property
    def texels_per_metre(self) -> float:
        return TEXTURE_SIZE / self.metres_per_tile

    def height(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        h = np.zeros(np.broadcast(x, z).shape)
        for a, kx, kz, phase in self.waves:
            h += a * np.sin(kx * x + kz * z + phase)
        for height, cx, cz, sigma in self.mountains:
            h += height * np.exp(-((x - cx) ** 2 + (z - cz) ** 2) / (2 * sigma**2))
        return h

    def gradient(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dh/dx, dh/dz) at (x, z)."""
        gx, gz = np.zeros(np.broadcast(x, z).shape), np.zeros(np.broadcast(x, z).shape)
        for a, kx, kz, phase in self.waves:
            c = a * np.cos(kx * x + kz * z + phase)
            gx += c * kx
            gz += c * kz
        for height, cx, cz, sigma in self.mountains:
            e = height * np.exp(-((x - cx) ** 2 + (z - cz) ** 2) / (2 * sigma**2)) / sigma**2
            gx -= e * (x - cx)
            gz -= e * (z - cz)
        return gx, gz

    @property
    def slope(self) -> float:
        """An upper bound of |grad h|: the field never rises faster than this per metre."""
        waves = sum(abs(a) * np.hypot(kx, kz) for a, kx, kz, _ in self.waves)
        return float(waves + sum(abs(h) / sigma * np.exp(-0.5) for h, _, _, sigma in self.mountains))

    def _above(self, origin: np.ndarray, dirs: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Height of ``origin + t * dirs`` over the field; dirs (N, 3), t (N,)."""
        points = origin + t[:, None] * dirs
        return points[:, 1] - self.height(points[:, 0], points[:, 2])

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """March each ray by the larger of a safe step (its height over the field divided by how fast
        it can close in: ``|d_y| + slope * |d_xz|``) and :data:`MARCH_STEP`; bisect the first
        crossing."""
        t_hit = np.full(len(dirs), np.inf)
        if origin[1] <= self.height(origin[0], origin[2]):
            return t_hit  # the camera is under the ground: it sees nothing of it
        closing = np.abs(dirs[:, 1]) + self.slope * np.hypot(dirs[:, 0], dirs[:, 2])
        pending = np.arange(len(dirs))
        t = np.full(len(dirs), 0.05)
        above = self._above(origin, dirs, t)
        while len(pending):
            t_next = t[pending] + np.maximum(above / closing[pending], (MARCH_STEP - 1) * t[pending])
            above_next = self._above(origin, dirs[pending], t_next)
            crossed = above_next <= 0
            rows = pending[crossed]
            low, high = t[rows], t_next[crossed]
            for _ in range(40):  # bisection: the crossing lies in (low, high]
                mid = (low + high) / 2
                below = self._above(origin, dirs[rows], mid) <= 0
                high = np.where(below, mid, high)
                low = np.where(below, low, mid)
            t_hit[rows] = high
            t[pending] = t_next
            keep = ~crossed & (t_next < self.far)
            pending, above = pending[keep], above_next[keep]
        return np.where(t_hit > EPS, t_hit, np.inf)

    def surface(self, points, dirs):
        gx, gz = self.gradient(points[:, 0], points[:, 2])
        normals = np.stack([-gx, np.ones_like(gx), -gz], axis=1)
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        scale = TEXTURE_SIZE / self.metres_per_tile
        return normals, points[:, 0] * scale, points[:, 2] * scale


def room_scene(seed: int, textures: str = "procedural") -> Scene:
    """A hall of 12.6-15 m x 12.6-15 m, 2.8-3.6 m high, with 2-4 posters and 3-6 objects."""
    rng = np.random.default_rng([seed, 17])
    object_radius = 1.5
    count = int(rng.integers(3, 7))
    posters = int(rng.integers(2, 5))
    texture_list = draw_textures(rng, seed, 2 + posters + count, textures)
    half_x, half_z = (float(v) for v in object_radius * rng.uniform(4.2, 5.0, 2))
    height = float(rng.uniform(2.8, 3.6))
    primitives: list = [
        Ground(texture=0, metres_per_tile=float(rng.uniform(0.8, 2.0))),
        Room(
            (0.0, (height - 0.5) / 2, 0.0), (half_x, (height + 0.5) / 2, half_z), 0.0, 1, float(rng.uniform(1.0, 3.0))
        ),
    ]
    for i in range(posters):
        wall = int(rng.integers(4))  # +x, -x, +z, -z
        along = float(rng.uniform(-0.6, 0.6))
        width, tall = float(rng.uniform(0.8, 2.5)), float(rng.uniform(0.6, 1.6))
        centre_y = float(rng.uniform(tall / 2 + 0.3, height - tall / 2 - 0.1))
        if wall < 2:
            x, z, yaw = (half_x - 0.01) * (1 if wall == 0 else -1), along * half_z, np.pi / 2
        else:
            x, z, yaw = along * half_x, (half_z - 0.01) * (1 if wall == 2 else -1), 0.0
        primitives.append(Panel((x, centre_y, z), width, tall, yaw, 2 + i))
    primitives += place_objects(rng, count, object_radius, first_texture=2 + posters)
    lighting = draw_lighting(rng)
    lighting["ambient"] = float(rng.uniform(0.45, 0.65))  # indoors: mostly diffuse light
    return Scene(
        seed=seed, primitives=primitives, textures=texture_list, object_radius=object_radius, layout="room", **lighting
    )


def terrain_scene(seed: int, textures: str = "procedural") -> Scene:
    """Rolling ground and 4-8 mountains around 4-8 objects in a disc of 2.5 m."""
    rng = np.random.default_rng([seed, 29])
    object_radius = 2.5
    count = int(rng.integers(4, 9))
    texture_list = draw_textures(rng, seed, count + 1, textures)
    waves = []
    for _ in range(2):
        wavelength, direction = rng.uniform(3.0, 8.0), rng.uniform(0, 2 * np.pi)
        k = 2 * np.pi / wavelength
        waves.append(
            (
                float(rng.uniform(0.05, 0.15)),
                float(k * np.cos(direction)),
                float(k * np.sin(direction)),
                float(rng.uniform(0, 2 * np.pi)),
            )
        )
    mountains = []
    for _ in range(int(rng.integers(4, 9))):
        sigma = float(rng.uniform(2.5, 6.0))
        distance, bearing = 10.0 + 3.0 * sigma + float(rng.uniform(0.0, 10.0)), rng.uniform(0, 2 * np.pi)
        mountains.append(
            (float(rng.uniform(2.0, 8.0)), float(distance * np.cos(bearing)), float(distance * np.sin(bearing)), sigma)
        )
    terrain = Terrain(0, tuple(waves), tuple(mountains), metres_per_tile=float(rng.uniform(1.0, 3.0)))
    primitives: list = [terrain]

    def footing(x: np.ndarray, z: np.ndarray) -> np.ndarray:  # the lowest ground under a footprint: no floating
        offsets = ((0.0, 0.0), (0.5, 0.0), (-0.5, 0.0), (0.0, 0.5), (0.0, -0.5))
        return np.min([terrain.height(x + dx, z + dz) for dx, dz in offsets], axis=0)

    primitives += place_objects(rng, count, object_radius, first_texture=1, base_height=footing)
    return Scene(
        seed=seed,
        primitives=primitives,
        textures=texture_list,
        object_radius=object_radius,
        layout="terrain",
        **draw_lighting(rng),
    )


def build_scene(seed: int, layout: str = "objects", textures: str = "procedural") -> Scene:
    """The scene of ``seed`` in ``layout`` (:data:`LAYOUTS`) with ``textures``."""
    if layout == "objects":
        return random_scene(seed, textures=textures)
    if layout == "room":
        return room_scene(seed, textures)
    if layout == "terrain":
        return terrain_scene(seed, textures)
    raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
