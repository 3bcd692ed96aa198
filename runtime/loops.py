"""Loop detection for the stream: which keyframes see a place seen long ago, and how the two windows relate.

Long videos drift: each window is chained to the last by a similarity fitted on their shared
frames, so small errors add up. When the camera comes back to a place, a similarity between the
window that saw it first and the window that sees it now (a *loop edge*) lets a pose graph spread
the accumulated error over the whole loop (VGGT-Long, Pi-Long and DA3-Streaming do this over
chunks). This module finds those edges with numpy and OpenCV only; the pose graph itself is
solved by a plugged-in solver (:func:`edgescene.mapping.pose_graph.solve`, GTSAM).

For each keyframe, as its window is integrated, :class:`LoopDetector` keeps a *place*:

- a global descriptor for retrieval: the grayscale model input shrunk to 32 pixels wide, zero mean
  and unit norm, so the dot product of two is their normalised cross-correlation (the tiny-image
  descriptor of place-recognition baselines such as SeqSLAM; no learned model needed);
- up to ``max_features`` ORB keypoints (pixel (u, v) in model pixels) with their binary
  descriptors, and each keypoint's 3D point in its window's own frame (the depth head unprojected
  by the predicted camera, as fused) with its confidence.

A new keyframe is compared with the places of windows at least ``min_window_gap`` windows older:
the ``candidates`` most similar above ``retrieval_similarity`` (with a DINOv3 features artifact,
the keyframe it flagged as a revisit comes first), then verified geometrically:

1. ORB matching (Hamming, Lowe's ratio test ``ratio``), then a fundamental matrix by RANSAC
   (1 pixel) keeps the matches consistent with two views of one rigid scene;
2. their 3D points give a similarity ``window_b -> window_a`` by robust (Cauchy-weighted)
   Umeyama; matches whose residual is under ``max_residual`` x the points' median distance from
   their camera are inliers.

A candidate with at least ``min_inliers`` inliers (and half the matches) becomes a
:class:`LoopMatch`; at most one edge is kept per pair of windows (the one with most inliers).

Memory: a place costs about 60 bytes per keypoint plus 1.5 KB (about 25 KB a keyframe at the
default 400 features), against 600 KB for one 518x392 frame's colours: the detector grows with
the number of keyframes, as the camera list does, never with their pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edgescene.core.geometry import robust_umeyama_sim3
from edgescene.core.sim3 import Edge, Sim3

__all__ = ["LoopConfig", "LoopDetector", "LoopMatch", "Place", "global_descriptor"]

DESCRIPTOR_WIDTH = 32


@dataclass(frozen=True)
class LoopConfig:
    """How revisits are found and verified (see the module docstring)."""

    min_window_gap: int = 3  # a candidate's window is at least this many windows older
    retrieval_similarity: float = 0.8  # tiny-image normalised cross-correlation, in [-1, 1]
    candidates: int = 3  # verified per keyframe (most similar first)
    max_features: int = 400  # ORB keypoints per keyframe
    ratio: float = 0.8  # Lowe's ratio test
    min_inliers: int = 25  # matches that agree with one similarity
    max_residual: float = 0.05  # inlier residual, as a fraction of the points' median depth
    sigma_rotation: float = 0.02  # loop edge standard deviations (rad, window units, log-scale)
    sigma_translation: float = 0.02
    sigma_log_scale: float = 0.02
    max_places: int = 4096  # past it, every second one of the older half is forgotten (bounded memory)

    def __post_init__(self) -> None:
        if self.min_window_gap < 2:
            raise ValueError(
                f"min_window_gap must be >= 2 (got {self.min_window_gap}): neighbouring windows already "
                "share frames, a loop edge between them adds nothing"
            )
        if not -1.0 <= self.retrieval_similarity <= 1.0:
            raise ValueError(f"retrieval_similarity must be in [-1, 1], got {self.retrieval_similarity}")
        if self.candidates < 1 or self.max_features < 8:
            raise ValueError(
                f"candidates must be >= 1 and max_features >= 8, got {self.candidates}, {self.max_features}"
            )
        if not 0 < self.ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")
        if self.min_inliers < 4:
            raise ValueError(f"min_inliers must be >= 4 (a similarity needs 3 points), got {self.min_inliers}")
        if not self.max_residual > 0:
            raise ValueError(f"max_residual must be > 0, got {self.max_residual}")
        if min(self.sigma_rotation, self.sigma_translation, self.sigma_log_scale) <= 0:
            raise ValueError("loop edge standard deviations must be > 0")
        if self.max_places < 16:
            raise ValueError(f"max_places must be >= 16, got {self.max_places}")


@dataclass
class Place:
    """One keyframe as a loop-closure candidate (see the module docstring for the fields)."""

    keyframe: int
    window: int
    uv: np.ndarray  # (N, 2) float32 keypoints, model pixels (u column, v row)
    descriptors: np.ndarray  # (N, 32) uint8 ORB
    xyz: np.ndarray  # (N, 3) float32, the keypoints' points in the window's frame
    depth: float  # median distance of those points from the keyframe's camera (window units)

    @property
    def nbytes(self) -> int:
        return int(self.uv.nbytes + self.descriptors.nbytes + self.xyz.nbytes)


@dataclass(frozen=True)
class LoopMatch:
    """A verified revisit: keyframe ``b`` (window ``window_b``, now) sees what ``a`` (``window_a``) saw.

    ``relative`` maps window b's coordinates into window a's (``T_a^{-1} T_b``)."""

    keyframe_a: int
    keyframe_b: int
    window_a: int
    window_b: int
    relative: Sim3
    similarity: float  # retrieval descriptor correlation
    matches: int  # ORB matches that passed the ratio test and the fundamental matrix
    inliers: int  # of those, agreeing with ``relative``
    residual: float  # median inlier residual / median depth (dimensionless)

    def edge(self, config: LoopConfig) -> Edge:
        return Edge(
            self.window_a,
            self.window_b,
            self.relative,
            config.sigma_rotation,
            config.sigma_translation,
            config.sigma_log_scale,
            kind="loop",
        )

    def to_json(self) -> dict:
        return {
            "keyframes": [self.keyframe_a, self.keyframe_b],
            "windows": [self.window_a, self.window_b],
            "similarity": round(self.similarity, 4),
            "matches": self.matches,
            "inliers": self.inliers,
            "residual": round(self.residual, 5),
            "scale": round(float(self.relative.s), 5),
            "rotation_deg": round(self.relative.angle_deg(), 3),
        }


def global_descriptor(rgb: np.ndarray) -> np.ndarray:
    """(D,) float32 unit vector of an (H, W, 3) uint8 image (32 pixels wide grayscale, zero mean)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    height = max(2, round(gray.shape[0] * DESCRIPTOR_WIDTH / gray.shape[1]))
    tiny = cv2.resize(gray, (DESCRIPTOR_WIDTH, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    tiny -= tiny.mean()
    norm = float(np.linalg.norm(tiny))
    return (tiny / norm if norm > 0 else tiny).reshape(-1)


class LoopDetector:
    """Keeps a :class:`Place` per keyframe and checks each new keyframe against the old ones."""

    def __init__(self, config: LoopConfig = LoopConfig()) -> None:
        self.config = config
        self.places: list[Place] = []
        self._bank = np.zeros((0, 0), np.float16)  # one retrieval row (D,) per place, grown by doubling
        self._windows = np.zeros(0, np.int64)  # each place's window (non-decreasing: places come in order)
        self._by_keyframe: dict[int, int] = {}
        self.matches: list[LoopMatch] = []  # the best per pair of windows, in the order found
        self._pairs: dict[tuple[int, int], int] = {}  # (window_a, window_b) -> index into matches
        self.candidates_checked = 0
        self._orb: dict[int, cv2.ORB] = {}

    @property
    def nbytes(self) -> int:
        """Bytes held for the places (keypoints, descriptors, points, retrieval vectors)."""
        return sum(p.nbytes for p in self.places) + self._descriptors.nbytes

    @property
    def _descriptors(self) -> np.ndarray:
        """(places, D) float16 retrieval descriptors, one row per place."""
        return self._bank[: len(self.places)]

    def add(
        self,
        keyframe: int,
        window: int,
        rgb: np.ndarray,
        points: np.ndarray,
        conf: np.ndarray,
        camera_center: np.ndarray,
        hint: int | None = None,
    ) -> LoopMatch | None:
        """Remember keyframe ``keyframe`` (placed by ``window``) and look for its revisit.

        rgb (H, W, 3) uint8 model input; points (H, W, 3) in the window's frame; conf (H, W);
        camera_center (3,) in the window's frame; hint: a keyframe the caller believes this one
        revisits (DINOv3). Returns the match this keyframe made, if any (also kept in ``matches``).
        """
        if rgb.shape[:2] != points.shape[:2] or points.shape[-1] != 3 or conf.shape != points.shape[:2]:
            raise ValueError(f"rgb {rgb.shape}, points {points.shape} and conf {conf.shape} must share (H, W)")
        descriptor = global_descriptor(rgb)
        place = self._place(keyframe, window, rgb, points, conf, camera_center)
        match = self._search(place, descriptor, hint)
        self._remember(place, descriptor)
        if len(self.places) > self.config.max_places:
            self._thin()
        if match is not None:
            pair = (match.window_a, match.window_b)
            if pair not in self._pairs:
                self._pairs[pair] = len(self.matches)
                self.matches.append(match)
            elif self.matches[self._pairs[pair]].inliers < match.inliers:
                self.matches[self._pairs[pair]] = match
        return match

    def edges(self) -> list[Edge]:
        return [m.edge(self.config) for m in self.matches]

    # -- internals ---------------------------------------------------------------------------
    def _remember(self, place: Place, descriptor: np.ndarray) -> None:
        n = len(self.places)
        if n == len(self._bank):  # full (or first): double the rows, keep what is there
            rows = max(64, 2 * n)
            width = len(descriptor) if n == 0 else self._bank.shape[1]
            bank = np.zeros((rows, width), np.float16)
            if n:
                bank[:n] = self._bank[:n]
            windows = np.zeros(rows, np.int64)
            windows[:n] = self._windows[:n]
            self._bank, self._windows = bank, windows
        # a frame of another size (the model input is fixed per stream, so only by mistake) gets no retrieval row
        self._bank[n] = descriptor if len(descriptor) == self._bank.shape[1] else 0
        self._windows[n] = place.window
        self._by_keyframe[place.keyframe] = n
        self.places.append(place)

    def _thin(self) -> None:
        """Forget every second place of the older half: memory stays under ``max_places`` places while
        old stretches of the video stay covered (more sparsely, as they age)."""
        half = len(self.places) // 2
        keep = [i for i in range(len(self.places)) if i >= half or i % 2 == 0]
        self._bank[: len(keep)] = self._bank[keep]
        self._windows[: len(keep)] = self._windows[keep]
        self.places = [self.places[i] for i in keep]
        self._by_keyframe = {p.keyframe: i for i, p in enumerate(self.places)}

    def _detector(self, hw: tuple[int, int]):
        patch = 31 if min(hw) >= 300 else 15  # small inputs (the demo model's 126x168): a smaller border
        if patch not in self._orb:
            self._orb[patch] = cv2.ORB.create(
                nfeatures=self.config.max_features, edgeThreshold=patch, patchSize=patch, fastThreshold=10
            )
        return self._orb[patch]

    def _place(self, keyframe, window, rgb, points, conf, camera_center) -> Place:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        keypoints, descriptors = self._detector(gray.shape).detectAndCompute(gray, None)
        empty = Place(keyframe, window, np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8),
                      np.zeros((0, 3), np.float32), 0.0)  # fmt: skip
        if descriptors is None or not keypoints:
            return empty
        uv = np.array([k.pt for k in keypoints], np.float32)
        xyz, good = _sample_points(points, conf, uv, camera_center)
        if good.sum() < self.config.min_inliers:
            return empty
        distance = np.linalg.norm(xyz[good] - np.asarray(camera_center, np.float32), axis=1)
        return Place(keyframe, window, uv[good], descriptors[good], xyz[good], float(np.median(distance)))

    def _search(self, place: Place, descriptor: np.ndarray, hint: int | None) -> LoopMatch | None:
        # places come in window order: the old enough ones are a prefix
        limit = place.window - self.config.min_window_gap
        old = int(np.searchsorted(self._windows[: len(self.places)], limit, side="right"))
        if not old or len(place.uv) < self.config.min_inliers:
            return None
        width = self._bank.shape[1]
        sims = self._bank[:old].astype(np.float32) @ descriptor if len(descriptor) == width else np.zeros(old)
        order = np.argsort(-sims)[: self.config.candidates]
        chosen = [(int(k), float(sims[k])) for k in order if sims[k] >= self.config.retrieval_similarity]
        if hint is not None and hint in self._by_keyframe:
            i = self._by_keyframe[hint]
            if self.places[i].window <= place.window - self.config.min_window_gap and i not in [c[0] for c in chosen]:
                chosen.insert(0, (i, float(sims[i])))
        best: LoopMatch | None = None
        for i, similarity in chosen:
            known = self._pairs.get((self.places[i].window, place.window))
            if known is not None and self.matches[known].inliers >= 2 * self.config.min_inliers:
                continue  # these two windows are already tied firmly: spare the matching
            self.candidates_checked += 1
            match = self._verify(self.places[i], place, similarity)
            if match is not None and (best is None or match.inliers > best.inliers):
                best = match
        return best

    def _verify(self, a: Place, b: Place, similarity: float) -> LoopMatch | None:
        """Matches between places a (old) and b (new) and the similarity window_b -> window_a."""
        cfg = self.config
        if len(a.uv) < cfg.min_inliers:
            return None
        pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(b.descriptors, a.descriptors, k=2)
        good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < cfg.ratio * m[1].distance]
        if len(good) < cfg.min_inliers:
            return None
        ib = np.array([m.queryIdx for m in good])
        ia = np.array([m.trainIdx for m in good])
        _, mask = cv2.findFundamentalMat(b.uv[ib], a.uv[ia], cv2.FM_RANSAC, 1.0, 0.999)
        if mask is None or mask.shape[0] != len(good):
            return None
        keep = mask.reshape(-1).astype(bool)
        if keep.sum() < cfg.min_inliers:
            return None
        src, dst = b.xyz[ib[keep]].astype(np.float64), a.xyz[ia[keep]].astype(np.float64)
        try:
            s, R, t, _ = robust_umeyama_sim3(src, dst)
        except ValueError:  # degenerate (collinear) points
            return None
        residual = np.linalg.norm(s * src @ R.T + t - dst, axis=1) / max(a.depth, 1e-12)
        inliers = residual <= cfg.max_residual
        if inliers.sum() < max(cfg.min_inliers, keep.sum() // 2):
            return None
        relative = _refit(src[inliers], dst[inliers], _sim3(s, R, t))
        return LoopMatch(
            keyframe_a=a.keyframe,
            keyframe_b=b.keyframe,
            window_a=a.window,
            window_b=b.window,
            relative=relative,
            similarity=similarity,
            matches=int(keep.sum()),
            inliers=int(inliers.sum()),
            residual=float(np.median(residual[inliers])),
        )


def _sample_points(
    points: np.ndarray, conf: np.ndarray, uv: np.ndarray, camera_center: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The (N, 3) points at sub-pixel keypoints ``uv`` (bilinear; pixel centres at integer (u, v)) and
    which are usable: finite, confident, and not on a depth edge (where the bilinear point and the
    nearest pixel's point differ by more than 2 % of their distance from the camera)."""
    grid = points.astype(np.float32)
    map_x = uv[:, :1].astype(np.float32)
    map_y = uv[:, 1:].astype(np.float32)
    xyz = cv2.remap(grid, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(-1, 3)
    cols = np.clip(np.rint(uv[:, 0]).astype(int), 0, grid.shape[1] - 1)
    rows = np.clip(np.rint(uv[:, 1]).astype(int), 0, grid.shape[0] - 1)
    nearest = grid[rows, cols]
    finite = np.isfinite(xyz).all(1) & np.isfinite(nearest).all(1)
    size = np.linalg.norm(np.where(finite[:, None], nearest - np.asarray(camera_center, np.float32), 0.0), axis=1)
    with np.errstate(invalid="ignore"):
        smooth = np.linalg.norm(np.where(finite[:, None], xyz - nearest, np.inf), axis=1) <= 0.02 * size
    return xyz.astype(np.float32), finite & smooth & (conf[rows, cols] > 0)


def _sim3(s, R, t) -> Sim3:
    return Sim3(float(s), np.asarray(R, np.float64), np.asarray(t, np.float64))


def _refit(src: np.ndarray, dst: np.ndarray, fallback: Sim3) -> Sim3:
    """Robust Umeyama on the inliers alone (the fallback when they are degenerate)."""
    try:
        s, R, t, _ = robust_umeyama_sim3(src, dst)
    except ValueError:
        return fallback
    return _sim3(s, R, t)
