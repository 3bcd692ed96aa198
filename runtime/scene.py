"""Cached per-keyframe predictions that re-render a point cloud under new display options.

The web app runs the model once; moving the confidence slider, switching the depth / point-map
branch, hiding cameras or filtering the background then only re-fuses what is kept here:

    cache = SceneCache.from_reconstruction(Reconstructor(model).run(open_frames("clip.mp4")))
    cache.save("job/predictions.npz")                                   # survives the process
    paths = cache.render("job/view", ViewOptions(conf_percentile=70, show_cameras=False))

Arrays (K keyframes, model input size H x W), map frame = first keyframe's camera frame,
OpenCV camera axes, VGGT's normalised scale:
  extrinsics (K, 3, 4) camera-from-world; intrinsics (K, 3, 3) model pixels;
  depth (K, H, W) float32 z-depth, map units; depth_conf (K, H, W) >= 1;
  images (K, H, W, 3) uint8; world_points (K, H, W, 3) float32 and world_points_conf (K, H, W)
  only when the model has the point-map head.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, TypedDict

import numpy as np

from edgescene.core.atomic import atomic_write
from edgescene.core.geometry import unproject_depth
from edgescene.runtime.fusion import confidence_mask, voxel_downsample
from edgescene.runtime.outputs import write_glb, write_ply

BRANCHES = ("depth", "points")


@dataclass(frozen=True)
class ViewOptions:
    """How a cached reconstruction is displayed (validated).

    conf_percentile: per keyframe, drop the points below this confidence percentile (0 keeps all).
    branch: ``depth`` (depth head unprojected with the cameras) or ``points`` (point-map head).
    filter_background: drop near-black and near-white pixels (sky, studio backdrops, padding).
    max_depth_ratio: drop points farther than this x the keyframe's median depth (None: keep).
    voxel_size: fusion grid in map units (None: 1/250 of the median depth); max_points: the
    displayed cloud's cap (the voxel doubles until it fits), keeps browsers' viewers responsive.
    """

    conf_percentile: float = 50.0
    branch: Literal["depth", "points"] = "depth"
    show_cameras: bool = True
    filter_background: bool = False
    max_depth_ratio: float | None = 3.0
    voxel_size: float | None = None
    max_points: int = 500_000

    def __post_init__(self) -> None:
        if not 0 <= float(self.conf_percentile) <= 100:
            raise ValueError(f"conf_percentile must be in [0, 100], got {self.conf_percentile}")
        if self.branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}, got {self.branch!r}")
        if self.max_depth_ratio is not None and not self.max_depth_ratio > 0:
            raise ValueError(f"max_depth_ratio must be > 0 or None, got {self.max_depth_ratio}")
        if self.voxel_size is not None and not self.voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0 or None, got {self.voxel_size}")
        if not (isinstance(self.max_points, int) and self.max_points >= 1):
            raise ValueError(f"max_points must be an integer >= 1, got {self.max_points!r}")


def background_mask(images: np.ndarray, dark: int = 16, bright: int = 240) -> np.ndarray | np.bool_:
    """True where a pixel is near-black (every channel < ``dark``) or near-white (every channel > ``bright``).

    images: (..., 3) uint8. Returns a bool array of images.shape[:-1] (a numpy bool for one (3,) pixel).
    """
    images = np.asarray(images)
    return (images < dark).all(-1) | (images > bright).all(-1)


class _PointArrays(TypedDict, total=False):
    world_points: np.ndarray
    world_points_conf: np.ndarray


class _CacheArrays(_PointArrays):
    """The arrays of a saved scene cache (NPZ keys), point-map ones only with that head."""

    extrinsics: np.ndarray
    intrinsics: np.ndarray
    depth: np.ndarray
    depth_conf: np.ndarray
    images: np.ndarray
    keyframes: np.ndarray


class SceneCache:
    """Per-keyframe predictions of one reconstruction (see the module doc for shapes)."""

    def __init__(
        self,
        extrinsics: np.ndarray,
        intrinsics: np.ndarray,
        depth: np.ndarray,
        depth_conf: np.ndarray,
        images: np.ndarray,
        world_points: np.ndarray | None = None,
        world_points_conf: np.ndarray | None = None,
        keyframes: list[dict] | None = None,
    ) -> None:
        self.extrinsics = np.asarray(extrinsics, np.float64)
        self.intrinsics = np.asarray(intrinsics, np.float64)
        self.depth = np.asarray(depth, np.float32)
        self.depth_conf = np.asarray(depth_conf, np.float32)
        self.images = np.asarray(images, np.uint8)
        self.world_points = None if world_points is None else np.asarray(world_points, np.float32)
        self.world_points_conf = None if world_points_conf is None else np.asarray(world_points_conf, np.float32)
        self.keyframes = list(keyframes or [{"index": i} for i in range(len(self.depth))])
        self._check()

    def _check(self) -> None:
        if self.depth.ndim != 3 or len(self.depth) == 0:
            raise ValueError(f"depth: expected (K, H, W) with K >= 1, got {self.depth.shape}")
        k, h, w = self.depth.shape
        expected: dict[str, tuple[np.ndarray, tuple[int, ...]]] = {
            "extrinsics": (self.extrinsics, (k, 3, 4)),
            "intrinsics": (self.intrinsics, (k, 3, 3)),
            "depth_conf": (self.depth_conf, (k, h, w)),
            "images": (self.images, (k, h, w, 3)),
        }
        if (self.world_points is None) != (self.world_points_conf is None):
            raise ValueError("world_points and world_points_conf come together (both or neither)")
        if self.world_points is not None and self.world_points_conf is not None:  # both, as checked above
            expected["world_points"] = (self.world_points, (k, h, w, 3))
            expected["world_points_conf"] = (self.world_points_conf, (k, h, w))
        for name, (array, shape) in expected.items():
            if array.shape != shape:
                raise ValueError(f"{name}: expected shape {shape}, got {array.shape}")
        if len(self.keyframes) != k:
            raise ValueError(f"keyframes: expected {k} records, got {len(self.keyframes)}")

    # -- construction and persistence --------------------------------------------------------
    @classmethod
    def from_reconstruction(cls, rec) -> SceneCache:
        """From :class:`edgescene.runtime.reconstruct.Reconstruction` (``Reconstructor.run``)."""
        if not rec.images or len(rec.images) != len(rec.depth):
            raise ValueError("the reconstruction carries no per-keyframe images: use Reconstructor.run")
        has_points = len(rec.world_points) == len(rec.depth) > 0
        return cls(
            rec.extrinsics,
            rec.intrinsics,
            np.stack(rec.depth),
            np.stack(rec.depth_conf),
            np.stack(rec.images),
            np.stack(rec.world_points) if has_points else None,
            np.stack(rec.world_points_conf) if has_points else None,
            rec.keyframes,
        )

    @property
    def branches(self) -> tuple[str, ...]:
        return BRANCHES if self.world_points is not None else ("depth",)

    def save(self, path: str | os.PathLike) -> Path:
        """One uncompressed NPZ (arrays + keyframe records as JSON), written atomically."""
        path = Path(path)
        arrays: _CacheArrays = {
            "extrinsics": self.extrinsics,
            "intrinsics": self.intrinsics,
            "depth": self.depth,
            "depth_conf": self.depth_conf,
            "images": self.images,
            "keyframes": np.array(json.dumps(self.keyframes, default=str)),
        }
        if self.world_points is not None:
            assert self.world_points_conf is not None  # _check: both or neither
            arrays["world_points"], arrays["world_points_conf"] = self.world_points, self.world_points_conf
        with atomic_write(path) as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SceneCache:
        with np.load(path, allow_pickle=False) as data:
            missing = {"extrinsics", "intrinsics", "depth", "depth_conf", "images", "keyframes"} - set(data.files)
            if missing:
                raise ValueError(f"{path}: not a scene cache (missing {sorted(missing)})")
            points = data["world_points"] if "world_points" in data.files else None
            points_conf = data["world_points_conf"] if "world_points_conf" in data.files else None
            return cls(
                data["extrinsics"],
                data["intrinsics"],
                data["depth"],
                data["depth_conf"],
                data["images"],
                points,
                points_conf,
                json.loads(str(data["keyframes"])),
            )

    # -- rendering -----------------------------------------------------------------------------
    def points(self, options: ViewOptions = ViewOptions()) -> tuple[np.ndarray, np.ndarray]:
        """The fused cloud under ``options``: (N, 3) float64 map frame and (N, 3) uint8 colours."""
        if options.branch not in self.branches:
            raise ValueError(
                f"branch {options.branch!r} is not available: this model has no point-map head "
                f"(available: {', '.join(self.branches)})"
            )
        if options.branch == "points":
            assert self.world_points is not None and self.world_points_conf is not None  # in self.branches
            world, conf = self.world_points.astype(np.float64), self.world_points_conf
        else:
            world, conf = (
                unproject_depth(self.depth.astype(np.float64), self.extrinsics, self.intrinsics),
                self.depth_conf,
            )
        keep = np.stack([confidence_mask(c, options.conf_percentile) for c in conf])
        keep &= np.isfinite(world).all(-1)
        if options.max_depth_ratio is not None:
            medians = np.array([np.median(d[d > 0]) if (d > 0).any() else np.inf for d in self.depth])
            keep &= self.depth <= options.max_depth_ratio * medians[:, None, None]
        if options.filter_background:
            keep &= ~background_mask(self.images)
        points, colors = world[keep], self.images[keep]
        if not len(points):
            return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
        positive = self.depth[self.depth > 0]
        voxel = options.voxel_size or (float(np.median(positive)) / 250.0 if positive.size else 1e-3)
        fused, fused_colors, _ = voxel_downsample(points, colors, voxel)
        while len(fused) > options.max_points:
            voxel *= 2
            fused, fused_colors, _ = voxel_downsample(points, colors, voxel)
        return fused, fused_colors

    def render(self, folder: str | os.PathLike, options: ViewOptions = ViewOptions()) -> dict[str, Path]:
        """Write ``scene.glb`` (with camera frusta if ``show_cameras``) and ``points.ply`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        points, colors = self.points(options)
        hw = self.depth.shape[1:]
        cameras = (
            [(self.intrinsics[i], self.extrinsics[i], hw) for i in range(len(self.depth))]
            if options.show_cameras
            else None
        )
        paths = {"glb": folder / "scene.glb", "ply": folder / "points.ply"}
        write_glb(paths["glb"], points, colors, cameras=cameras)
        write_ply(paths["ply"], points, colors)
        (folder / "view.json").write_text(json.dumps({**asdict(options), "points": int(len(points))}, indent=1))
        return paths

    def depth_images(self) -> list[np.ndarray]:
        """Per keyframe, the depth as a (H, W, 3) uint8 RGB image (turbo colour map, near = red, far = blue;
        each frame scaled between its 2nd and 98th depth percentile)."""
        import cv2

        out = []
        for depth in self.depth:
            valid = np.isfinite(depth) & (depth > 0)
            lo, hi = np.percentile(depth[valid], [2, 98]) if valid.any() else (0.0, 1.0)
            scaled = np.clip((depth - lo) / max(hi - lo, 1e-9), 0, 1)
            gray = np.where(valid, 255 - np.rint(scaled * 255), 0).astype(np.uint8)
            out.append(cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB))
        return out


__all__ = ["BRANCHES", "SceneCache", "ViewOptions", "background_mask"]
