"""Synthetic multi-view datasets on disk, in the manifest format of :mod:`edgescene.core.manifest`.

``generate_dataset(SynthConfig(out_dir=...))`` writes, per scene ``scene_XXXX``::

    scene_XXXX/rgb/NNNN.png      8-bit RGB frames
    scene_XXXX/depth/NNNN.npy    float32 depth (metres along the camera z axis, 0 = sky)
    scene_XXXX/scene.json        the scene description, intrinsics and extrinsics (and distortion)

and one ``manifest.json`` whose entries carry ``camera`` (intrinsics, camera-from-world
extrinsics and, with ``lens_distortion``, OpenCV's distortion coefficients) and ``depth`` for every
frame, grouped by ``sequence``. Scene i uses seed ``config.seed * 100003 + i``: any scene can be
regenerated alone, bit for bit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from edgescene import __version__
from edgescene.core.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from edgescene.core.lens import LensDistortion
from edgescene.core.manifest import MANIFEST_NAME, Entry, Manifest, write_manifest
from edgescene.train.data.synthetic.camera_effects import apply_camera_effects
from edgescene.train.data.synthetic.layouts import LAYOUTS, build_scene
from edgescene.train.data.synthetic.raycast import render
from edgescene.train.data.synthetic.scene import TEXTURE_STYLES, Scene
from edgescene.train.data.synthetic.trajectories import ALL_TRAJECTORIES, TRAJECTORIES, make_trajectory


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Sizes in pixels; ``fov_deg`` is the horizontal field of view range."""

    out_dir: str
    scenes: int = 8
    frames: int = 24
    width: int = 256
    height: int = 192
    trajectories: tuple[str, ...] = TRAJECTORIES
    layouts: tuple[str, ...] = ("objects",)  # objects | room | terrain (layouts.LAYOUTS)
    seed: int = 0
    fov_deg: tuple[float, float] = (50.0, 75.0)
    textures: str = "procedural"  # procedural | natural | mixed (scene.TEXTURE_STYLES)
    camera_effects: bool = False  # exposure drift, vignetting, blur, noise (camera_effects.py)
    lens_distortion: bool = False  # radial + tangential distortion per sequence (draw_lens_distortion)
    workers: int = 1
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name in ("scenes", "frames", "width", "height", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width < 16 or self.height < 16:
            raise ValueError(f"width and height must be >= 16, got {self.width}x{self.height}")
        bad = [t for t in self.trajectories if t not in ALL_TRAJECTORIES]
        if bad or not self.trajectories:
            raise ValueError(f"unknown trajectories {bad}; valid: {', '.join(ALL_TRAJECTORIES)}")
        bad = [layout for layout in self.layouts if layout not in LAYOUTS]
        if bad or not self.layouts:
            raise ValueError(f"unknown layouts {bad}; valid: {', '.join(LAYOUTS)}")
        if self.textures not in TEXTURE_STYLES:
            raise ValueError(f"textures must be one of {', '.join(TEXTURE_STYLES)}, got {self.textures!r}")
        low, high = self.fov_deg
        if not 10 <= low <= high <= 150:
            raise ValueError(f"fov_deg must satisfy 10 <= low <= high <= 150, got {self.fov_deg}")


@dataclass(frozen=True)
class SceneSequence:
    """One rendered sequence: frames (S, H, W, 3) uint8, depth (S, H, W) float32, cameras."""

    scene: Scene
    trajectory: str
    intrinsics: np.ndarray  # (3, 3), shared by all frames
    extrinsics: np.ndarray  # (S, 3, 4) camera-from-world
    frames: np.ndarray
    depth: np.ndarray
    distortion: LensDistortion | None = None  # the lens the frames were taken through (None: pinhole)


def draw_lens_distortion(rng: np.random.Generator) -> LensDistortion:
    """A plausible lens: k1 in [-0.2, 0.05] (mostly barrel), k2 in [-0.02, 0.05], p1, p2 ~ N(0, 5e-4)
    clipped to 2e-3. Monotonic over the widest field of view rendered (75 degrees, corners r^2 < 1)."""
    return LensDistortion(
        k1=float(rng.uniform(-0.2, 0.05)),
        k2=float(rng.uniform(-0.02, 0.05)),
        p1=float(np.clip(rng.normal(0.0, 5e-4), -2e-3, 2e-3)),
        p2=float(np.clip(rng.normal(0.0, 5e-4), -2e-3, 2e-3)),
    )


def scene_seed(base_seed: int, index: int) -> int:
    return base_seed * 100003 + index


def render_sequence(
    seed: int,
    trajectory: str,
    frames: int,
    width: int,
    height: int,
    fov_deg: tuple[float, float] = (50.0, 75.0),
    textures: str = "procedural",
    camera_effects: bool = False,
    layout: str = "objects",
    lens_distortion: bool = False,
) -> SceneSequence:
    """Render one deterministic sequence of a random scene along a random trajectory (``textures``:
    :data:`~edgescene.train.data.synthetic.scene.TEXTURE_STYLES`; ``camera_effects``: the frames as a
    camera would take them, :func:`~edgescene.train.data.synthetic.camera_effects.apply_camera_effects`,
    from a generator of their own: the geometry of a seed is the same either way; ``layout``:
    :data:`~edgescene.train.data.synthetic.layouts.LAYOUTS`; ``lens_distortion``: through a lens of
    :func:`draw_lens_distortion`, from a generator of its own, so the cameras stay the seed's)."""
    scene = build_scene(seed, layout, textures)
    rng = np.random.default_rng(seed + 7919)
    fov = np.radians(rng.uniform(*fov_deg))
    focal = (width / 2) / np.tan(fov / 2)
    intrinsics = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
    extrinsics = make_trajectory(trajectory, rng, frames, scene.object_radius)
    distortion = draw_lens_distortion(np.random.default_rng([seed, 3])) if lens_distortion else None
    rendered = [render(scene, intrinsics, e, height, width, distortion=distortion) for e in extrinsics]
    images = np.stack([r[0] for r in rendered])
    if camera_effects:
        images, _ = apply_camera_effects(images, np.random.default_rng([seed, 2]))
    depth = np.stack([r[1] for r in rendered])
    return SceneSequence(scene, trajectory, intrinsics, extrinsics, images, depth, distortion)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    atomic_write_bytes(path, png)


def _write_scene(args: tuple[SynthConfig, int]) -> list[dict]:
    config, index = args
    seed = scene_seed(config.seed, index)
    trajectory = config.trajectories[index % len(config.trajectories)]
    # Layouts change every len(trajectories) scenes, so every layout meets every trajectory.
    layout = config.layouts[(index // len(config.trajectories)) % len(config.layouts)]
    seq = render_sequence(
        seed,
        trajectory,
        config.frames,
        config.width,
        config.height,
        config.fov_deg,
        textures=config.textures,
        camera_effects=config.camera_effects,
        layout=layout,
        lens_distortion=config.lens_distortion,
    )
    lens = {} if seq.distortion is None else {"distortion": seq.distortion.as_list()}
    folder = Path(config.out_dir) / f"scene_{index:04d}"
    (folder / "rgb").mkdir(parents=True, exist_ok=True)
    (folder / "depth").mkdir(exist_ok=True)
    entries = []
    for i in range(config.frames):
        rgb_rel, depth_rel = f"{folder.name}/rgb/{i:04d}.png", f"{folder.name}/depth/{i:04d}.npy"
        _write_png(Path(config.out_dir) / rgb_rel, seq.frames[i])
        with atomic_write(Path(config.out_dir) / depth_rel) as f:
            np.save(f, seq.depth[i])
        entries.append(
            asdict(
                Entry(
                    id=f"{folder.name}#f{i:04d}",
                    path=rgb_rel,
                    source=f"synthetic:{seed}",
                    modality="synthetic",
                    width=config.width,
                    height=config.height,
                    channels=3,
                    bit_depth=8,
                    original_width=config.width,
                    original_height=config.height,
                    sequence=folder.name,
                    frame_index=i,
                    metadata={"trajectory": trajectory, "layout": layout, "seed": seed},
                    camera={"intrinsics": seq.intrinsics.tolist(), "extrinsics": seq.extrinsics[i].tolist(), **lens},
                    depth=depth_rel,
                )
            )
        )
    description = {
        **seq.scene.describe(),
        "trajectory": trajectory,
        "intrinsics": seq.intrinsics.tolist(),
        "extrinsics": seq.extrinsics.tolist(),
        **lens,
        "width": config.width,
        "height": config.height,
    }
    atomic_write_text(folder / "scene.json", json.dumps(description, indent=1))
    return entries


@dataclass(frozen=True)
class SynthSummary:
    scenes: int
    frames: int
    seconds: float
    manifest: str

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    def format(self) -> str:
        return (
            f"synth: {self.scenes} scenes, {self.frames} frames in {self.seconds:.1f} s "
            f"({self.frames_per_second:.1f} frames/s); manifest {self.manifest}"
        )


def generate_dataset(config: SynthConfig, progress: Callable[[int, int], None] | None = None) -> SynthSummary:
    """Render ``config.scenes`` sequences into ``config.out_dir``. Refuses to overwrite an existing
    dataset unless ``config.overwrite``."""
    out = Path(config.out_dir)
    if (out / MANIFEST_NAME).exists() and not config.overwrite:
        raise FileExistsError(
            f"{out} already holds a dataset ({MANIFEST_NAME}); choose another folder or pass --overwrite"
        )
    start = time.perf_counter()
    jobs = [(config, i) for i in range(config.scenes)]
    entries: list[dict] = []
    if config.workers > 1:
        with ProcessPoolExecutor(config.workers) as pool:
            for done, scene_entries in enumerate(pool.map(_write_scene, jobs), start=1):
                entries += scene_entries
                if progress:
                    progress(done, config.scenes)
    else:
        for done, job in enumerate(jobs, start=1):
            entries += _write_scene(job)
            if progress:
                progress(done, config.scenes)
    options = {k: v for k, v in asdict(config).items() if k not in ("out_dir", "workers", "overwrite")}
    manifest = Manifest(
        created_by=f"edgescene {__version__} synth", options=options, entries=[Entry(**e) for e in entries]
    )
    path = write_manifest(manifest, out)
    return SynthSummary(config.scenes, len(entries), time.perf_counter() - start, str(path))
