"""What a real camera does to the picture, applied to rendered frames: exposure drift, vignetting,
blur and sensor noise. The geometry (depth, intrinsics, extrinsics) is left as it is: every effect
is photometric. Lens distortion would change the geometry and is not applied here.

Drawn once per sequence from ``rng`` (the strengths), then per frame (exposure walks smoothly, blur
and noise vary), so a sequence looks like one camera's footage:

- exposure: a gain ``exp(w_i)``, ``w`` a random walk of step N(0, 0.04) from N(0, 0.15), clipped to
  [-0.5, 0.5];
- vignetting: ``1 - k r^2`` with ``r`` the distance from the centre over the half-diagonal,
  ``k`` in [0, 0.45];
- blur: a Gaussian of sigma in [0, ``max_blur``] per frame, ``max_blur`` in [0, 1.2] pixels;
- noise: Gaussian of sigma in [0, 0.025] (of the full range), then rounding to 8 bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CameraEffects:
    """One sequence's strengths (see the module docstring)."""

    exposure_start: float
    vignetting: float
    max_blur: float
    noise: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> CameraEffects:
        return cls(
            exposure_start=float(np.clip(rng.normal(0.0, 0.15), -0.5, 0.5)),
            vignetting=float(rng.uniform(0.0, 0.45)),
            max_blur=float(rng.uniform(0.0, 1.2)),
            noise=float(rng.uniform(0.0, 0.025)),
        )


def apply_camera_effects(frames: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, CameraEffects]:
    """frames (S, H, W, 3) uint8 -> the same frames as a camera would have taken them, and the
    strengths drawn."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (S, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    effects = CameraEffects.draw(rng)
    s, h, w = frames.shape[:3]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - (w - 1) / 2) ** 2 + (yy - (h - 1) / 2) ** 2) / (((w - 1) / 2) ** 2 + ((h - 1) / 2) ** 2)
    vignette = (1.0 - effects.vignetting * r2)[..., None]
    exposure = effects.exposure_start
    out = np.empty_like(frames)
    for i in range(s):
        exposure = float(np.clip(exposure + rng.normal(0.0, 0.04), -0.5, 0.5)) if i else exposure
        image = frames[i].astype(np.float32) / 255.0 * np.exp(exposure) * vignette
        sigma = float(rng.uniform(0.0, effects.max_blur))
        if sigma > 0.05:
            image = cv2.GaussianBlur(image, (0, 0), sigma)
        image = image + rng.normal(0.0, effects.noise, image.shape).astype(np.float32)
        out[i] = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return out, effects
