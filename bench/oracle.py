"""An oracle model: a session that answers a window of frames with their ground truth, plus noise.

It stands in for VGGT where the bench measures the runtime and not the model
(:mod:`edgescene.bench.runtime_capacity`). It speaks the runtime's session interface
(:class:`edgescene.runtime.session.Session`: ``{"images": (S, 3, H, W) float32 in [0, 1]}`` in;
``pose_enc`` (S, 9), ``depth`` (S, H, W), ``depth_conf`` (S, H, W), ``world_points`` (S, H, W, 3),
``world_points_conf`` (S, H, W) out), so :class:`edgescene.runtime.reconstruct.Reconstructor`
runs it exactly as it runs an exported model.

What it answers, per window, like VGGT: everything in the window's first camera frame (that camera
is exactly the identity), at a window-specific scale (VGGT normalises each window's scale; here
``exp(N(0, 0.3))``), so the runtime must align windows to each other as it does with the real
model. Noise, drawn from a generator seeded by (seed, the window's frames), so the same window gets
the same answer in every run and in every implementation being compared:

- depth: multiplicative Gaussian noise whose standard deviation falls with the confidence
  (``depth_noise`` x 0.25..1.75), plus 2 % outlier pixels (x 0.7..1.3) with low confidence;
- confidence: ``1 + 10 u`` (u in [0, 1)), higher where the depth is better, as VGGT's;
- cameras: every frame but the first gets a rotation error of ``rotation_noise_deg`` (random axis)
  and a translation error of ``translation_noise`` metres (times the window's scale) per axis.

Frames are recognised by their pixels: each image the runtime sends is matched to the rendered
frame whose 16 x 16 grey thumbnail is nearest, which must be clearly nearer than any other (a
lossy video codec changes pixels by far less than one step of the walk does); the bench renders
frames at the model's input size, so preprocessing leaves their geometry as it is.

``latency_ms`` per frame makes each call sleep ``latency_ms x S`` (releasing the GIL, like a GPU
model that leaves the CPU free); the arithmetic is cached per window, so with a warm cache a
call costs its sleep and a copy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edgescene.bench.synthetic_scene import SyntheticVideo
from edgescene.core.artifact import Artifact, TensorSpec
from edgescene.core.geometry import encode_pose, inverse_se3, unproject_depth

WINDOW_SCALE_SIGMA = 0.3  # log-normal spread of each window's normalised scale
OUTLIER_FRACTION = 0.02


@dataclass(frozen=True)
class OracleNoise:
    """Noise of the oracle's answers (see the module docstring); all >= 0."""

    depth_noise: float = 0.01  # relative depth error (standard deviation) at average confidence
    rotation_noise_deg: float = 0.15
    translation_noise: float = 0.005  # metres (per axis, standard deviation)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("depth_noise", "rotation_noise_deg", "translation_noise"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


FINGERPRINT = 16  # thumbnail side
MATCH_MARGIN = 0.5  # the nearest frame's distance must be below this x the second nearest's


def fingerprint(image: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (256,) float64: the grey image's 16 x 16 block means (H, W >= 16;
    the last H % 16 rows and W % 16 columns are left out)."""
    grey = np.asarray(image, np.float64).mean(axis=0)
    bh, bw = grey.shape[0] // FINGERPRINT, grey.shape[1] // FINGERPRINT
    blocks = grey[: bh * FINGERPRINT, : bw * FINGERPRINT].reshape(FINGERPRINT, bh, FINGERPRINT, bw)
    return blocks.mean(axis=(1, 3)).reshape(-1)


def _rotation(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues: (3,) axis times angle (radians) -> (3, 3)."""
    angle = float(np.linalg.norm(axis_angle))
    if angle == 0:
        return np.eye(3)
    k = axis_angle / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


class StandInSession:
    """The runtime's session interface (:class:`edgescene.runtime.session.Session`) for a bench's
    stand-in model: a VGGT artifact description of ``hw`` input frames and the named outputs
    (``[(name, dtype, trailing dims)]``, each with a leading ``frames`` axis and ``(H, W)``); a
    subclass computes the answers in ``__call__``."""

    backend = "oracle"
    device = "cpu"

    def __init__(
        self,
        hw: tuple[int, int],
        preset: str,
        outputs: list[tuple[str, str, list]],
        max_frames: int,
        any_size_multiple: int | None = None,
    ) -> None:
        h, w = hw
        self.hw = (h, w)
        self.artifact = Artifact(
            format="oracle",
            precision="fp64",
            backend="onnxruntime",
            model={"family": "vggt", "preset": preset, "source": "synthetic ground truth"},
            files={},
            inputs=[TensorSpec("images", ["frames", 3, h, w], "float32")],
            outputs=[TensorSpec(name, ["frames", *dims], dtype) for name, dtype, dims in outputs],
            input_size={"height": h, "width": w},
            frames={"min": 1, "opt": 8, "max": max_frames},
            normalization={"input_range": [0, 1], "in_graph": True},
            any_size_multiple=any_size_multiple,
            accepted=True,
        )

    def input_spec(self) -> list[TensorSpec]:
        return self.artifact.inputs

    def output_spec(self) -> list[TensorSpec]:
        return self.artifact.outputs

    def close(self) -> None:
        pass


class OracleSession(StandInSession):
    """A VGGT-shaped session over a :class:`SyntheticVideo` (see the module docstring)."""

    def __init__(
        self, video: SyntheticVideo, noise: OracleNoise = OracleNoise(), latency_ms: float = 0.0, max_frames: int = 32
    ) -> None:
        if latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {latency_ms}")
        h, w = video.hw
        super().__init__(
            video.hw,
            "oracle",
            [
                ("pose_enc", "float32", [9]),
                ("depth", "float32", [h, w]),
                ("depth_conf", "float32", [h, w]),
                ("world_points", "float32", [h, w, 3]),
                ("world_points_conf", "float32", [h, w]),
            ],
            max_frames,
        )
        self.video = video
        self.noise = noise
        self.latency_ms = float(latency_ms)
        self._prints = np.stack([fingerprint(video.rgb[i].transpose(2, 0, 1) / 255.0) for i in range(video.frames)])
        self._cache: dict[tuple[int, ...], dict[str, np.ndarray]] = {}
        self.calls: list[tuple[int, ...]] = []  # the windows asked for, in order

    def close(self) -> None:
        self._cache.clear()

    def frames_of(self, images: np.ndarray) -> tuple[int, ...]:
        """The video's frame numbers of a window of model inputs (S, 3, H, W) in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != self.video.hw:
            raise ValueError(f"images: expected (S, 3, {self.video.hw[0]}, {self.video.hw[1]}), got {images.shape}")
        frames = []
        for image in images:
            distance = np.linalg.norm(self._prints - fingerprint(image), axis=1)
            nearest, second = np.argsort(distance)[:2] if len(distance) > 1 else (0, 0)
            if len(distance) > 1 and not distance[nearest] < MATCH_MARGIN * distance[second]:
                raise ValueError(
                    "the oracle got a frame that matches none of its video's frames: feed the rendered "
                    "frames at the model's input size (losslessly, or through a high-quality codec)"
                )
            frames.append(int(nearest))
        return tuple(frames)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        frames = self.frames_of(np.asarray(feeds["images"]))
        self.calls.append(frames)
        if frames not in self._cache:
            self._cache[frames] = self._answer(frames)
        out = {k: v.copy() for k, v in self._cache[frames].items()}
        remaining = self.latency_ms * len(frames) / 1000.0 - (time.perf_counter() - start)
        if remaining > 0:
            time.sleep(remaining)
        return out

    def _answer(self, frames: tuple[int, ...]) -> dict[str, np.ndarray]:
        video, noise = self.video, self.noise
        rng = np.random.default_rng([noise.seed, *frames])
        scale = float(np.exp(rng.normal(0.0, WINDOW_SCALE_SIGMA)))
        first = np.vstack([video.extrinsics[frames[0]], [0, 0, 0, 1]])
        world_from_first = inverse_se3(first)
        s, (h, w) = len(frames), video.hw
        extrinsics = np.zeros((s, 3, 4))
        for j, f in enumerate(frames):
            rel = video.extrinsics[f] @ world_from_first  # camera j from the first camera, metres
            rel[:, 3] *= scale
            if j > 0:
                rel[:, :3] = (
                    _rotation(rng.normal(size=3) / np.sqrt(3) * np.radians(noise.rotation_noise_deg)) @ rel[:, :3]
                )
                rel[:, 3] += rng.normal(0.0, noise.translation_noise, 3) * scale
            extrinsics[j] = rel
        quality = rng.random((s, h, w))
        conf = (1.0 + 10.0 * quality).astype(np.float32)
        sigma = noise.depth_noise * (0.25 + 1.5 * (1.0 - quality))
        factor = 1.0 + sigma * rng.standard_normal((s, h, w))
        outliers = rng.random((s, h, w)) < OUTLIER_FRACTION
        factor[outliers] = rng.uniform(0.7, 1.3, int(outliers.sum()))
        conf[outliers] = 1.0 + rng.random(int(outliers.sum())).astype(np.float32)
        depth = (scale * video.depth[list(frames)] * factor).astype(np.float32)
        intrinsics = np.broadcast_to(video.intrinsics, (s, 3, 3))
        points = unproject_depth(depth, extrinsics, intrinsics).astype(np.float32)
        return {
            "pose_enc": encode_pose(extrinsics, intrinsics, (h, w)).astype(np.float32),
            "depth": depth,
            "depth_conf": conf,
            "world_points": points,
            "world_points_conf": conf.copy(),
        }


__all__ = ["OracleNoise", "OracleSession", "StandInSession", "fingerprint"]
