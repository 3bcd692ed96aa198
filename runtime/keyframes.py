"""Keyframe selection: which frames of a video the model sees.

- :class:`ImageDifferenceSelector` (default, no extra model): a frame becomes a keyframe when its
  64-pixel-wide grayscale thumbnail differs from the last keyframe's by more than ``threshold``
  (mean absolute difference, 0..255), or when ``max_gap`` frames went by without one.
- :class:`FeatureSelector` (with a DINOv3 ``features`` artifact): the same decision on the cosine
  similarity of DINOv3 embeddings (normalised CLS token), which ignores lighting flicker and
  noise; it also flags *revisits* (a frame very similar to a keyframe seen long ago, a loop
  closure candidate), reported in the run report.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Decision:
    keep: bool
    reason: str
    revisit_of: int | None = None  # keyframe number this frame looks like, if a revisit
    similarity: float | None = None


def thumbnail(rgb: np.ndarray, width: int = 64) -> np.ndarray:
    """(h, 64) float32 grayscale thumbnail of an (H, W, 3) uint8 RGB image."""
    height = max(1, round(rgb.shape[0] * width / rgb.shape[1]))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)


class ImageDifferenceSelector:
    def __init__(self, threshold: float = 6.0, max_gap: int = 10) -> None:
        if threshold < 0 or max_gap < 1:
            raise ValueError(f"threshold must be >= 0 and max_gap >= 1, got {threshold}, {max_gap}")
        self.threshold = threshold
        self.max_gap = max_gap
        self._last: np.ndarray | None = None
        self._since = 0

    def __call__(self, rgb: np.ndarray) -> Decision:
        thumb = thumbnail(rgb)
        if self._last is None:
            self._last, self._since = thumb, 0
            return Decision(True, "first frame")
        self._since += 1
        if thumb.shape != self._last.shape:
            self._last, self._since = thumb, 0
            return Decision(True, "frame size changed")
        difference = float(np.abs(thumb - self._last).mean())
        if difference > self.threshold or self._since >= self.max_gap:
            self._last, self._since = thumb, 0
            return Decision(True, f"difference {difference:.1f}" if difference > self.threshold else "max gap")
        return Decision(False, f"difference {difference:.1f} <= {self.threshold}")


class FeatureSelector:
    """``embed(rgb) -> (D,)`` gives an embedding (e.g. a DINOv3 artifact's CLS token)."""

    def __init__(
        self,
        embed,
        similarity: float = 0.92,
        max_gap: int = 10,
        revisit_similarity: float = 0.95,
        revisit_min_age: int = 20,
    ) -> None:
        self.embed = embed
        self.similarity = similarity
        self.max_gap = max_gap
        self.revisit_similarity = revisit_similarity
        self.revisit_min_age = revisit_min_age
        self._bank: list[np.ndarray] = []  # one unit vector per keyframe (D floats: a few KB each)
        self._since = 0

    def __call__(self, rgb: np.ndarray) -> Decision:
        e = np.asarray(self.embed(rgb), np.float64).reshape(-1)
        e = e / max(float(np.linalg.norm(e)), 1e-12)
        if not self._bank:
            self._bank.append(e)
            return Decision(True, "first frame", similarity=1.0)
        self._since += 1
        sim = float(e @ self._bank[-1])
        if sim >= self.similarity and self._since < self.max_gap:
            return Decision(False, f"similarity {sim:.3f}", similarity=sim)
        revisit = None
        old = self._bank[: max(0, len(self._bank) - self.revisit_min_age)]
        if old:
            sims = np.stack(old) @ e
            best = int(sims.argmax())
            if sims[best] >= self.revisit_similarity:
                revisit = best
        self._bank.append(e)
        self._since = 0
        return Decision(True, f"similarity {sim:.3f}" if sim < self.similarity else "max gap", revisit, sim)
