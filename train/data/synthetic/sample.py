"""The bundled sample video: a short handheld orbit around a synthetic scene, with exact ground truth.

Files in ``edgescene/assets/sample/`` (installed with the package):

- ``sample.mp4``: H.264 (yuv420p), ``FRAMES`` frames of ``WIDTH`` x ``HEIGHT`` at ``FPS`` frames/s;
- ``sample_gt.npz``: ``intrinsics`` (3, 3) float64 (principal point at the image centre),
  ``extrinsics`` (S, 3, 4) float64 camera-from-world (OpenCV axes, y-up world, metres),
  ``depth`` (S, H, W) float16 in metres along the camera z axis, 0 where the ray sees the sky;
- ``sample.json``: how it was made (seed, sizes, trajectory) and the scene description.

Everything is deterministic: ``python -m edgescene.train.data.synthetic.sample --out DIR``
regenerates the same ground truth bit for bit (the video up to the encoder's lossy coding).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edgescene.train.data.synthetic.raycast import render
from edgescene.train.data.synthetic.scene import random_scene
from edgescene.train.data.synthetic.trajectories import handheld, orbit

SEED = 7
FRAMES = 32
WIDTH, HEIGHT = 256, 192
FPS = 10
FOV_DEG = 60.0
ASSET_DIR = Path(__file__).resolve().parents[3] / "edgescene" / "assets" / "sample"


def sample_asset_dir() -> Path:
    """Folder of the bundled sample (inside the installed package)."""
    from edgescene.assets import sample_dir

    return sample_dir()


def render_sample() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """-> frames (S, H, W, 3) uint8, depth (S, H, W) float32, intrinsics (3, 3), extrinsics (S, 3, 4), description."""
    scene = random_scene(SEED)
    rng = np.random.default_rng(SEED)
    extrinsics = handheld(rng, orbit(rng, FRAMES, scene.object_radius))
    focal = (WIDTH / 2) / np.tan(np.radians(FOV_DEG) / 2)
    intrinsics = np.array([[focal, 0, WIDTH / 2], [0, focal, HEIGHT / 2], [0, 0, 1]])
    rendered = [render(scene, intrinsics, e, HEIGHT, WIDTH) for e in extrinsics]
    description = {
        "seed": SEED,
        "frames": FRAMES,
        "width": WIDTH,
        "height": HEIGHT,
        "fps": FPS,
        "fov_deg": FOV_DEG,
        "trajectory": "handheld orbit",
        "scene": scene.describe(),
    }
    return (np.stack([r[0] for r in rendered]), np.stack([r[1] for r in rendered]), intrinsics, extrinsics, description)


def write_video(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """Encode RGB frames (S, H, W, 3) uint8 as H.264 MP4 with PyAV."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18", "preset": "slow"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_sample(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    frames, depth, intrinsics, extrinsics, description = render_sample()
    write_video(out_dir / "sample.mp4", frames)
    np.savez_compressed(
        out_dir / "sample_gt.npz", intrinsics=intrinsics, extrinsics=extrinsics, depth=depth.astype(np.float16)
    )
    (out_dir / "sample.json").write_text(json.dumps(description, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description="Regenerate the bundled sample video and its ground truth.")
    parser.add_argument("--out", type=Path, default=ASSET_DIR)
    write_sample(parser.parse_args().out)


if __name__ == "__main__":
    main()
