"""Procedural scenes for the synthetic test bed: a textured ground plane, boxes, spheres and
upright textured panels, lit by one directional light plus ambient light.

World frame: metres, y up, the ground is the plane y = 0 and objects rest on it inside a disc of
radius ``object_radius`` around the origin. Every primitive answers two questions for a bundle of
rays ``origin + t * dirs``: where does it hit (``intersect`` -> t, inf on a miss) and with which
normal and texture coordinates (``surface``). Shading is Lambertian and textures are filtered
by distance (mipmaps), so a surface point has nearly the same colour from every view: the property
the multi-view consistency test relies on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from edgescene.train.data.synthetic.textures import TEXTURE_SIZE, build_mipmaps, natural_texture, random_texture

EPS = 1e-6


def yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation about the world y axis by ``yaw`` radians."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclass(frozen=True)
class Ground:
    texture: int
    metres_per_tile: float = 2.0

    @property
    def texels_per_metre(self) -> float:
        return TEXTURE_SIZE / self.metres_per_tile

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        t = np.full(len(dirs), np.inf)
        down = dirs[:, 1] < -EPS
        t[down] = -origin[1] / dirs[down, 1]
        return np.where(t > EPS, t, np.inf)

    def surface(self, points: np.ndarray, dirs: np.ndarray):
        normals = np.broadcast_to(np.array([0.0, 1.0, 0.0]), points.shape)
        scale = TEXTURE_SIZE / self.metres_per_tile
        return normals, points[:, 0] * scale, points[:, 2] * scale


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float
    texture: int

    @property
    def texels_per_metre(self) -> float:
        return TEXTURE_SIZE / (np.pi * self.radius)

    def intersect(self, origin, dirs):
        oc = origin - np.asarray(self.center)
        a = np.einsum("ij,ij->i", dirs, dirs)
        b = 2.0 * dirs @ oc
        c = oc @ oc - self.radius**2
        disc = b * b - 4 * a * c
        sqrt = np.sqrt(np.maximum(disc, 0.0))
        t_near, t_far = (-b - sqrt) / (2 * a), (-b + sqrt) / (2 * a)
        t = np.where(t_near > EPS, t_near, t_far)
        return np.where((disc >= 0) & (t > EPS), t, np.inf)

    def surface(self, points, dirs):
        normals = (points - np.asarray(self.center)) / self.radius
        lon = np.arctan2(normals[:, 2], normals[:, 0])
        lat = np.arcsin(np.clip(normals[:, 1], -1, 1))
        return normals, lon / (2 * np.pi) * 2 * TEXTURE_SIZE, (lat / np.pi + 0.5) * TEXTURE_SIZE


@dataclass(frozen=True)
class Box:
    center: tuple[float, float, float]
    half_extents: tuple[float, float, float]
    yaw: float
    texture: int
    metres_per_tile: float = 1.0

    @property
    def texels_per_metre(self) -> float:
        return TEXTURE_SIZE / self.metres_per_tile

    def _local(self, origin, dirs):
        rot = yaw_matrix(self.yaw)
        return rot.T @ (origin - np.asarray(self.center)), dirs @ rot  # dirs @ rot == (rot.T @ d.T).T

    def intersect(self, origin, dirs):
        o, d = self._local(origin, dirs)
        e = np.asarray(self.half_extents)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
            t1, t2 = (-e - o) * inv, (e - o) * inv
        t_min = np.minimum(t1, t2).max(axis=1)
        t_max = np.maximum(t1, t2).min(axis=1)
        t = np.where(t_min > EPS, t_min, t_max)
        return np.where((t_max >= t_min) & (t > EPS), t, np.inf)

    def surface(self, points, dirs):
        rot = yaw_matrix(self.yaw)
        local = (points - np.asarray(self.center)) @ rot
        scaled = local / np.asarray(self.half_extents)
        axis = np.abs(scaled).argmax(axis=1)
        normal_local = np.zeros_like(local)
        normal_local[np.arange(len(local)), axis] = np.sign(scaled[np.arange(len(local)), axis])
        others = np.array([[1, 2], [0, 2], [0, 1]])[axis]
        rows = np.arange(len(local))
        scale = TEXTURE_SIZE / self.metres_per_tile
        u = local[rows, others[:, 0]] * scale + 37.0 * axis
        v = local[rows, others[:, 1]] * scale
        return normal_local @ rot.T, u, v


@dataclass(frozen=True)
class Panel:
    """An upright two-sided rectangle (a wall, a poster) facing yaw-rotated +z."""

    center: tuple[float, float, float]
    width: float
    height: float
    yaw: float
    texture: int

    @property
    def texels_per_metre(self) -> float:
        return TEXTURE_SIZE / np.sqrt(self.width * self.height)

    def intersect(self, origin, dirs):
        rot = yaw_matrix(self.yaw)
        normal = rot[:, 2]
        denom = dirs @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((np.asarray(self.center) - origin) @ normal) / denom
        local = (origin[None] + t[:, None] * dirs - np.asarray(self.center)) @ rot
        inside = (np.abs(local[:, 0]) <= self.width / 2) & (np.abs(local[:, 1]) <= self.height / 2)
        return np.where((np.abs(denom) > EPS) & (t > EPS) & inside, t, np.inf)

    def surface(self, points, dirs):
        rot = yaw_matrix(self.yaw)
        normal = rot[:, 2]
        facing = np.where((dirs @ normal)[:, None] < 0, normal, -normal)
        local = (points - np.asarray(self.center)) @ rot
        return facing, (local[:, 0] / self.width + 0.5) * TEXTURE_SIZE, (0.5 - local[:, 1] / self.height) * TEXTURE_SIZE


@dataclass
class Scene:
    """Primitives, their textures and the lighting. ``seed`` regenerates everything."""

    seed: int
    primitives: list
    textures: list[list[np.ndarray]] = field(repr=False)  # mipmap pyramid per texture
    light_dir: np.ndarray  # unit vector towards the light
    light_color: np.ndarray
    ambient: float
    sky_horizon: np.ndarray
    sky_zenith: np.ndarray
    object_radius: float
    layout: str = "objects"  # objects | room | terrain (layouts.LAYOUTS)

    def describe(self) -> dict:
        """A JSON-able description (textures are summarised by count; they come from the seed)."""
        return {
            "seed": self.seed,
            "layout": self.layout,
            "primitives": [{"type": type(p).__name__, **asdict(p)} for p in self.primitives],
            "num_textures": len(self.textures),
            "light_dir": self.light_dir.tolist(),
            "light_color": self.light_color.tolist(),
            "ambient": self.ambient,
            "object_radius": self.object_radius,
        }


TEXTURE_STYLES = ("procedural", "natural", "mixed")


def draw_textures(rng: np.random.Generator, seed: int, count: int, textures: str) -> list[list[np.ndarray]]:
    """``count`` mipmapped textures in style ``textures`` (:data:`TEXTURE_STYLES`). The procedural
    ones are always drawn from ``rng``, so its stream is the same in every style; the photographs
    come from a generator of their own, seeded by ``seed``."""
    if textures not in TEXTURE_STYLES:
        raise ValueError(f"textures must be one of {', '.join(TEXTURE_STYLES)}, got {textures!r}")
    images = [random_texture(rng) for _ in range(count)]
    if textures != "procedural":
        photo_rng = np.random.default_rng([seed, 1])
        images = [
            natural_texture(photo_rng) if textures == "natural" or photo_rng.random() < 0.5 else image
            for image in images
        ]
    return [build_mipmaps(image) for image in images]


def place_objects(
    rng: np.random.Generator,
    count: int,
    object_radius: float,
    first_texture: int,
    base_height=None,
) -> list:
    """``count`` boxes, spheres and panels (sizes 0.25-0.8 m) resting on the ground inside a disc of
    ``object_radius`` around the origin, not overlapping; object i uses texture ``first_texture + i``.
    ``base_height(x, z)``: the ground's height under an object (default: the plane y = 0)."""
    primitives: list = []
    placed: list[tuple[float, float, float]] = []  # (x, z, footprint radius)
    for i in range(count):
        kind = rng.choice(["box", "sphere", "panel"], p=[0.45, 0.3, 0.25])
        size = float(rng.uniform(0.25, 0.8))
        for _ in range(50):  # rejection sampling: objects do not overlap
            r = object_radius * np.sqrt(rng.random())
            angle = rng.uniform(0, 2 * np.pi)
            x, z = r * np.cos(angle), r * np.sin(angle)
            if all(np.hypot(x - px, z - pz) > size + pr + 0.1 for px, pz, pr in placed):
                break
        placed.append((x, z, size))
        base = 0.0 if base_height is None else float(base_height(np.array([x]), np.array([z]))[0])
        yaw = float(rng.uniform(0, np.pi))
        texture = first_texture + i
        if kind == "box":
            half = (size * rng.uniform(0.6, 1.0), size * rng.uniform(0.5, 1.6), size * rng.uniform(0.6, 1.0))
            primitives.append(Box((x, base + half[1], z), tuple(float(h) for h in half), yaw, texture))
        elif kind == "sphere":
            primitives.append(Sphere((x, base + size, z), size, texture))
        else:
            height = float(size * rng.uniform(1.5, 3.0))
            primitives.append(Panel((x, base + height / 2, z), float(2 * size), height, yaw, texture))
    return primitives


def draw_lighting(rng: np.random.Generator) -> dict:
    """A sun (direction 30-75 degrees up, slightly tinted), ambient light and a sky gradient."""
    elevation = rng.uniform(np.radians(30), np.radians(75))
    azimuth = rng.uniform(0, 2 * np.pi)
    light_dir = np.array([np.cos(elevation) * np.cos(azimuth), np.sin(elevation), np.cos(elevation) * np.sin(azimuth)])
    light_color = np.clip(1.0 + rng.normal(0, 0.08, 3), 0.8, 1.15)
    return {
        "light_dir": light_dir,
        "light_color": light_color,
        "ambient": float(rng.uniform(0.25, 0.45)),
        "sky_horizon": rng.uniform([0.7, 0.75, 0.8], [0.95, 0.95, 1.0]),
        "sky_zenith": rng.uniform([0.2, 0.35, 0.6], [0.45, 0.6, 0.9]),
    }


def random_scene(
    seed: int, num_objects: tuple[int, int] = (4, 8), object_radius: float = 2.5, textures: str = "procedural"
) -> Scene:
    """A deterministic random scene of the "objects" layout: ground + boxes, spheres and panels
    resting on it (rooms and terrain: :mod:`edgescene.train.data.synthetic.layouts`).

    ``textures``: "procedural" (patterns), "natural" (photograph crops, :func:`natural_texture`) or
    "mixed" (each surface either, evenly). The geometry, light and sky of a seed are the same in
    every style: the photographs are drawn from a generator of their own."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(num_objects[0], num_objects[1] + 1))
    textures_mip = draw_textures(rng, seed, count + 1, textures)
    primitives: list = [Ground(texture=0, metres_per_tile=float(rng.uniform(1.0, 3.0)))]
    primitives += place_objects(rng, count, object_radius, first_texture=1)
    return Scene(
        seed=seed, primitives=primitives, textures=textures_mip, object_radius=object_radius, **draw_lighting(rng)
    )
