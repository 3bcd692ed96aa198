"""Streaming reconstruction in bounded memory: overlapping windows of keyframes, chained by Sim(3).

VGGT predicts each window in its own frame (its first camera is the identity) at its own
normalised scale. Windows of ``window`` keyframes share ``overlap`` keyframes with the previous
one; the shared frames' per-pixel points (predicted twice) give the similarity that maps the new
window onto the map built so far, fitted by robust (Cauchy-weighted) Umeyama on
confidence-weighted pixel correspondences. The first window fixes the scale, and the first
keyframe's camera frame is the map frame (its extrinsics are exactly the identity).

The work per window follows what is kept, not the pixel count: alignment reads a bounded sample of
the carried frames, fusion unprojects only the pixels it fuses (straight into the map frame, on a
voxel-sized pixel stride near the camera: :class:`StreamConfig`), and the point-map head's points
are moved into the map only when a sink reads them (:class:`KeyframeResult`).

Memory stays constant as the video grows: the stream keeps the map (voxel grid, bounded by the
scene's extent: points beyond ``max_depth_ratio`` x the frame's median depth are not fused, and
``max_points`` is a hard cap), the cameras (a 3x4 and a 3x3 per keyframe) and only the last ``overlap``
keyframes' points; per-frame depth goes to a ``sink`` (disk) as soon as it is final.

Loop closure (``loops=LoopConfig()``): each window's placement in the map is kept as a Sim(3)
node (13 floats) and each keyframe as a place for :class:`~edgescene.runtime.loops.LoopDetector`
(its ORB keypoints' 3D points, ~25 KB); a verified revisit adds a loop edge between two windows.
:meth:`StreamingReconstruction.close_loops` hands nodes and edges to a pose-graph solver and moves
every camera and every map voxel with its window's correction (the map's voxels are tagged with
the window that created them), so the frames need not be kept.

Conventions: OpenCV camera axes, extrinsics camera-from-world (3, 4), intrinsics in model pixels,
depth along the camera z axis in map units.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal

import numpy as np

from edgescene.core import order_statistics
from edgescene.core.geometry import decode_pose, inverse_se3, robust_umeyama_sim3, unproject_depth
from edgescene.core.preprocess import Resize
from edgescene.core.sim3 import Edge, Sim3, move_camera
from edgescene.runtime import fusion_compiled
from edgescene.runtime.fusion import PointMap, confidence_threshold, resolve_backend
from edgescene.runtime.loops import LoopConfig, LoopDetector

# A pose-graph solver: (initial nodes map_from_window, edges) -> (optimised nodes, what it did);
# edgescene.mapping.pose_graph.solve is one (GTSAM)
PoseGraphSolver = Callable[[list[Sim3], list[Edge]], tuple[list[Sim3], dict]]


@dataclass
class WindowPrediction:
    """A model's output for one window of S frames, in the window's own frame and scale."""

    extrinsics: np.ndarray  # (S, 3, 4) camera-from-world, frame 0 ~ identity
    intrinsics: np.ndarray  # (S, 3, 3) model pixels
    depth: np.ndarray  # (S, H, W)
    depth_conf: np.ndarray  # (S, H, W)
    world_points: np.ndarray | None = None  # (S, H, W, 3), point-map branch
    world_points_conf: np.ndarray | None = None
    depth_points: np.ndarray | None = None  # (S, H, W, 3): depth unprojected by the model (its output depth_points)


Predictor = Callable[[np.ndarray], WindowPrediction]


def predictor_from_session(session) -> Predictor:
    """Wrap a VGGT session (IO of ``edgescene export``) as a Predictor: decodes the pose encoding."""

    def predict(images: np.ndarray) -> WindowPrediction:
        out = session({"images": images})
        extrinsics, intrinsics = decode_pose(out["pose_enc"].astype(np.float64), images.shape[-2:])
        return WindowPrediction(
            extrinsics,
            intrinsics,
            out["depth"],
            out["depth_conf"],
            out.get("world_points"),
            out.get("world_points_conf"),
            out.get("depth_points"),
        )

    return predict


INPUT_STAGES = ("decode_s", "keyframes_s", "preprocess_s")  # a keyframe's, measured before it reaches the stream
STAGES = (*INPUT_STAGES, "model_s", "align_s", "fusion_s", "loops_s", "write_s")  # every stage a run times


@dataclass(frozen=True)
class StreamConfig:
    """``window`` keyframes per model call, ``overlap`` of them shared with the previous call.

    ``fuse_stride``: pixel stride of the points fused into the map (None: the largest stride at which
    neighbouring samples at the frame's median depth stay within ``fuse_spacing`` voxels, so a frame
    costs about what its voxels cost). Pixels nearer than the depth where that stride's samples would
    be more than ``fuse_spacing`` voxels apart are taken on the stride grid, whose phase moves from
    keyframe to keyframe (over stride^2 keyframes every pixel is used); farther pixels are all taken,
    so far surfaces keep their coverage. 1 fuses every pixel. ``align_points``: at most this many
    (the most confident) of the carried frames' stride-``align_stride`` samples fit each window's
    similarity. The confidence percentile and the median depth of the ratio filter are taken from
    every other pixel in each direction (a quarter of them).
    """

    window: int = 8
    overlap: int = 2
    branch: Literal["depth", "points"] = "depth"
    conf_percentile: float = 50.0
    voxel_size: float | None = None  # None: 1/250 of the first window's median depth
    max_points: int | None = 2_000_000
    reserve_map: bool = False  # allocate the map for max_points up front: flat memory for a long stream
    max_depth_ratio: float | None = 3.0  # fuse only points closer than this x the frame's median depth
    align_stride: int = 4  # pixel stride of the correspondences used for alignment
    align_points: int | None = 8192  # None: every stride sample
    fuse_stride: int | None = None  # None: automatic (see above); 1: every pixel
    fuse_spacing: float = 1.0  # automatic stride: sample spacing at the median depth, in voxels
    fusion_backend: str = "auto"  # PointMap's: "compiled" (numba) where installed, else "numpy"

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(
                f"window must be >= 2 (got {self.window}): consecutive windows share `overlap` >= 1 frames, "
                "which is how each is aligned to the map"
            )
        if not 1 <= self.overlap < self.window:
            raise ValueError(f"overlap must be in [1, window-1] (got overlap={self.overlap}, window={self.window})")
        if self.reserve_map and self.max_points is None:
            raise ValueError("reserve_map needs max_points (the bound to reserve memory for)")
        if self.branch not in ("depth", "points"):
            raise ValueError(f"branch must be 'depth' or 'points', got {self.branch!r}")
        if not 0 <= self.conf_percentile <= 100:
            raise ValueError(f"conf_percentile must be in [0, 100], got {self.conf_percentile}")
        if self.align_stride < 1:
            raise ValueError(f"align_stride must be >= 1, got {self.align_stride}")
        if self.align_points is not None and self.align_points < 16:
            raise ValueError(f"align_points must be None or >= 16 (a similarity needs spread), got {self.align_points}")
        if self.fuse_stride is not None and not 1 <= self.fuse_stride <= 16:
            raise ValueError(f"fuse_stride must be None (automatic) or in 1..16, got {self.fuse_stride}")
        if not self.fuse_spacing > 0:
            raise ValueError(f"fuse_spacing must be > 0 voxels, got {self.fuse_spacing}")
        resolve_backend(self.fusion_backend)  # an unknown name, or "compiled" without numba, fails here


@dataclass(frozen=True)
class FrameInfo:
    """Where a keyframe came from: what the stream carries from the input to the outputs.

    ``index``: the frame's number in its source (-1 unknown); ``revisit_of``: a keyframe this frame
    is believed to revisit (a DINOv3 hint that loop closure verifies); ``resize`` and ``provenance``:
    how its pixels reached the model (:class:`~edgescene.core.preprocess.Resize`, its ``describe()``);
    ``intrinsics``: the camera's known (3, 3) intrinsics in model pixels (``reconstruct --intrinsics``,
    :mod:`edgescene.runtime.calibration`), used in place of the model's prediction; None: predicted.
    """

    index: int = -1
    source: str | None = None
    timestamp_s: float | None = None
    reason: str = ""
    revisit_of: int | None = None
    resize: Resize | None = None
    provenance: Mapping[str, Any] = field(default_factory=dict)
    intrinsics: np.ndarray | None = None

    def record(self) -> dict:
        """The keyframe as cameras.json lists it: index, source, timestamp_s."""
        return {"index": self.index, "source": self.source, "timestamp_s": self.timestamp_s}


@dataclass(frozen=True)
class KeyframeResult:
    """Final estimate of one keyframe, in map coordinates, handed to the sink once.

    ``world_points`` (the point-map head's estimate, (H, W, 3) float32, map frame) is computed on
    first access from the window's own points and ``placement``: a sink that does not use it pays
    nothing for it.
    """

    keyframe: int  # keyframe number (0, 1, ...)
    window: int  # the window that placed it
    info: FrameInfo
    extrinsics: np.ndarray  # (3, 4) camera-from-map
    intrinsics: np.ndarray  # (3, 3) model pixels
    depth: np.ndarray  # (H, W) map units
    depth_conf: np.ndarray  # (H, W)
    rgb: np.ndarray | None = None  # (H, W, 3) uint8, the model input's colours
    placement: Sim3 = field(default_factory=Sim3.identity)  # map_from_window of its window
    window_points: np.ndarray | None = None  # (H, W, 3) point-map head, the window's frame
    world_points_conf: np.ndarray | None = None  # (H, W)

    @cached_property
    def world_points(self) -> np.ndarray | None:
        if self.window_points is None:
            return None
        return self.placement.apply(self.window_points.astype(np.float64)).astype(np.float32)

    def cameras_only(self) -> KeyframeResult:
        """The same keyframe without its pixel arrays (what a sink keeps once depth is on disk)."""
        empty = np.empty(0, np.float32)
        return KeyframeResult(
            self.keyframe, self.window, self.info, self.extrinsics, self.intrinsics, empty, empty, None, self.placement
        )


@dataclass
class WindowAlignment:
    index: int
    frames: list[int]
    scale: float
    inlier_fraction: float
    residual: float


def sustained_model_busy(windows: list[dict]) -> float | None:
    """The fraction of the wall time the model was busy in a run's steady state, from its window
    timings (:meth:`StreamingReconstruction.window_timings`, or ``window_timings_s`` in report.json:
    each window's ``model_at_s`` and ``model_s``): from the start of the second
    window to the end of the third-to-last, so neither the first window's fill nor the last windows'
    drain (and the outputs written after) count. With a model whose time per window is fixed (the
    oracle) it is the pipeline's sustained throughput against the model alone. None for fewer than
    five windows."""
    if len(windows) < 5:
        return None
    middle = windows[1:-2]
    busy = sum(w["model_s"] for w in middle)
    wall = middle[-1]["model_at_s"] + middle[-1]["model_s"] - middle[0]["model_at_s"]
    return busy / wall if wall > 0 else None


def _finite_median(values: np.ndarray) -> float:
    """The median of the finite values (a float32 map's, as float32: what numpy compares it at);
    nan when none is finite. One nan pixel must not make the whole frame's median nan."""
    finite = values[np.isfinite(values)].ravel()
    return float(order_statistics.median(finite)) if finite.size else float("nan")  # np.median's value


@dataclass(frozen=True)
class _Selection:
    """The pixels of a frame that are fused: ``conf >= threshold``, ``depth <= max_depth`` and, with a
    ``stride`` > 1, on the grid (row % stride == phase_row, col % stride == phase_col) or deeper than
    ``cut``. Thresholds are float32 values (as numpy compares them with the float32 maps)."""

    threshold: float
    max_depth: float
    cut: float
    stride: int
    phase_row: int
    phase_col: int


@dataclass(frozen=True)
class _Pending:
    image: np.ndarray
    rgb: np.ndarray
    info: FrameInfo


@dataclass
class StreamState:
    keyframes: int
    windows: int
    points: int
    last_alignment: WindowAlignment | None = None


class StreamingReconstruction:
    """Push keyframes one by one; every ``window - overlap`` new keyframes the model runs once.

    ``push(image, rgb, info, stages)``: image (3, H, W) float32 in [0, 1] (model input), rgb (H, W, 3)
    uint8 (colours of the points), info (a :class:`FrameInfo`, carried to the outputs), stages (the
    seconds its decoding, keyframe selection and preprocessing took, counted with the window it
    joins). Returns the running state after a window was integrated, else None. ``finish()`` runs
    the last, partial window.

    ``timings`` sums each stage's busy seconds over the stream and ``window_timings()`` gives them per
    window, with ``model_at_s``, when the model began the window (seconds since the stream was made: a
    timeline that shows whether the model waited); a sink that writes files adds its seconds to
    ``write_s[window]``. After ``finish()``,
    ``close_loops(solver)`` corrects cameras and map (``loop_closure`` keeps its report).

    ``pipelined=True`` runs the model on its own thread: when window k+1 is full it is sent to the
    model and window k is aligned, fused and handed to the sink meanwhile, so the state returned
    lags one window behind and at most two windows are held. The arithmetic is the same, in the
    same order, so the results equal the sequential mode's bit for bit. Call ``finish()`` or
    ``close()`` to stop the thread.
    """

    def __init__(
        self,
        predictor: Predictor,
        config: StreamConfig = StreamConfig(),
        sink: Callable[[KeyframeResult], None] | None = None,
        pipelined: bool = False,
        loops: LoopConfig | None = None,
    ) -> None:
        self.predictor = predictor
        self.pipelined = pipelined
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: deque[tuple[list[_Pending], int, Any, dict]] = deque()  # submitted, not integrated
        self._submitted = 0
        self._window_rows: list[dict] = []  # per integrated window: frames and each stage's seconds
        self._filling = dict.fromkeys(INPUT_STAGES, 0.0)  # input seconds of the keyframes not yet sent
        self.write_s: defaultdict[int, float] = defaultdict(float)  # window -> seconds a sink spent writing it
        self.loop_closure: dict | None = None  # close_loops's report
        self._started = time.perf_counter()
        self._scratch_buffers: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.map: PointMap | None = None
        if config.reserve_map:  # the bound's memory is taken now, before the first frame
            self.map = PointMap(
                voxel_size=1.0, max_points=config.max_points, reserve=True, backend=config.fusion_backend
            )
        self.config = config
        self.sink = sink
        self.extrinsics: list[np.ndarray] = []  # per keyframe, map frame
        self.intrinsics: list[np.ndarray] = []
        self.infos: list[FrameInfo] = []  # per keyframe
        self.alignments: list[WindowAlignment] = []
        self._pending: list[_Pending] = []
        self._overlap: list[_Pending] = []  # frames carried into the next window
        self._overlap_points: np.ndarray | None = None  # (K, n) map-frame points of carried frames, align samples
        self._overlap_conf: np.ndarray | None = None  # (K, n)
        self._keyframes = 0
        self._windows = 0
        self.window_nodes: list[Sim3] = []  # per integrated window: map_from_window
        self.keyframe_windows: list[int] = []  # per keyframe: the window that placed it
        self.loop_detector = LoopDetector(loops) if loops is not None else None
        self._loop_executor: ThreadPoolExecutor | None = None  # pipelined: revisit detection off the caller's thread
        self._loop_jobs: deque[Future] = deque()
        self.corrections: list[Sim3] | None = None  # per window, after close_loops applied a solution
        # per window with given intrinsics: the model's focal length over the given one (geometric
        # mean of fx and fy, median over the window's frames): a free check of the calibration
        self.focal_ratios: list[float] = []
        self.metric: dict | None = None  # the metric fit's report once apply_similarity put the map in metres

    @property
    def state(self) -> StreamState:
        return StreamState(
            len(self.extrinsics),
            self._windows,
            len(self.map) if self.map is not None else 0,
            self.alignments[-1] if self.alignments else None,
        )

    def push(
        self,
        image: np.ndarray,
        rgb: np.ndarray,
        info: FrameInfo | None = None,
        stages: Mapping[str, float] | None = None,
    ) -> StreamState | None:
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be (3, H, W) float32 in [0, 1], got {image.shape}")
        if info is not None and not isinstance(info, FrameInfo):
            raise TypeError(f"info must be a FrameInfo, got {type(info).__name__}")
        self._pending.append(_Pending(image, rgb, info or FrameInfo(index=self._keyframes + len(self._pending))))
        self._add_inputs(stages)
        if len(self._overlap) + len(self._pending) >= self.config.window:
            self._submit_window()
            # pipelined: integrate the previous window while this one runs on the model thread
            if self._integrate_ready(keep=1 if self.pipelined else 0):
                return self.state
        return None

    def finish(self, stages: Mapping[str, float] | None = None) -> StreamState:
        """Run the last, partial window and integrate every window still in flight. ``stages``: input
        seconds of frames after the last keyframe (counted with the last window)."""
        self._add_inputs(stages)
        try:
            if self._pending:
                self._submit_window()
            self._integrate_ready(keep=0)
            if self._window_rows:  # inputs no window took (frames after the last keyframe): the last one's
                for stage, value in self._filling.items():
                    self._window_rows[-1][stage] += value
                self._filling = dict.fromkeys(INPUT_STAGES, 0.0)
            self._drain_loop_jobs(keep=0)
        finally:
            self.close()
        return self.state

    def close(self) -> None:
        """Stop the model thread (pipelined mode); windows not yet integrated are dropped."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._in_flight.clear()
        if self._loop_executor is not None:
            self._loop_executor.shutdown(wait=True, cancel_futures=True)
            self._loop_executor = None
        self._loop_jobs.clear()

    @property
    def timings(self) -> dict[str, float]:
        """Busy seconds per stage over the whole stream (threads overlap, so they may sum past the wall time)."""
        total = dict.fromkeys(STAGES, 0.0)
        for row in self.window_timings():
            for stage in STAGES:
                total[stage] += row.get(stage, 0.0)
        for stage, value in self._filling.items():  # keyframes not yet in a window
            total[stage] += value
        return total

    def window_timings(self) -> list[dict]:
        """Per integrated window: its frames and each stage's seconds (decoding, keyframe selection and
        preprocessing of the frames it added; the model; alignment; fusion; loops; writing its keyframes)."""
        return [{**row, "write_s": self.write_s.get(row["window"], 0.0)} for row in self._window_rows]

    def depth_scale(self, keyframe: int) -> float:
        """What loop closure multiplied keyframe ``keyframe``'s depth by (1 without a correction)."""
        if self.corrections is None:
            return 1.0
        return float(self.corrections[self.keyframe_windows[keyframe]].s)

    def _add_inputs(self, stages: Mapping[str, float] | None) -> None:
        for stage, value in (stages or {}).items():
            if stage not in INPUT_STAGES:
                raise ValueError(f"stages: expected keys among {INPUT_STAGES}, got {stage!r}")
            self._filling[stage] += value

    def _drain_loop_jobs(self, keep: int) -> None:
        """Wait until at most ``keep`` revisit-detection jobs are pending (re-raises their errors)."""
        while len(self._loop_jobs) > keep:
            self._loop_jobs.popleft().result()

    def _detect_revisits(self, places: list[tuple], timing: dict) -> None:
        start = time.perf_counter()
        detector = self.loop_detector
        assert detector is not None  # only scheduled when the stream detects loops
        for place in places:
            detector.add(*place)
        timing["loops_s"] = time.perf_counter() - start

    # -- internals ---------------------------------------------------------------------------
    def _submit_window(self) -> None:
        """Send the window's images to the model (now, or on the model thread when pipelined)."""
        frames = self._overlap + self._pending
        images = np.stack([f.image for f in frames]).astype(np.float32)
        n_old = len(self._overlap)
        k = self.config.overlap
        self._overlap = frames[-k:] if k else []
        self._pending = []
        timing: dict = {"window": self._submitted, "frames": len(frames), "new_frames": len(frames) - n_old}
        timing.update(self._filling)
        self._filling = dict.fromkeys(INPUT_STAGES, 0.0)
        self._submitted += 1
        if not self.pipelined:
            self._in_flight.append((frames, n_old, self._timed_predict(images, timing), timing))
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgescene-model")
        self._in_flight.append((frames, n_old, self._executor.submit(self._timed_predict, images, timing), timing))

    def _timed_predict(self, images: np.ndarray, timing: dict) -> WindowPrediction:
        start = time.perf_counter()
        timing["model_at_s"] = start - self._started  # when the model began this window: a timeline
        pred = self.predictor(images)
        timing["model_s"] = time.perf_counter() - start
        return pred

    def _integrate_ready(self, keep: int) -> bool:
        """Integrate windows in order until at most ``keep`` remain in flight; True if any was."""
        done = False
        while len(self._in_flight) > keep:
            frames, n_old, pred, timing = self._in_flight.popleft()
            if isinstance(pred, Future):
                pred = pred.result()  # re-raises the model's exception here
            self._integrate(frames, n_old, pred, timing)
            done = True
        return done

    def _integrate(self, frames: list[_Pending], n_old: int, pred: WindowPrediction, timing: dict) -> None:
        """Align the window to the map, fuse its new frames, hand them to the sink.

        The work follows what is kept, not the pixels: alignment reads the carried frames at a
        bounded sample of pixels, fusion unprojects only the pixels it fuses (straight into the map
        frame), and the point-map head's points are moved into the map only if a sink asks.
        """
        start = time.perf_counter()
        cfg = self.config
        pred = self._given_intrinsics(pred, frames)
        conf = pred.world_points_conf if cfg.branch == "points" else pred.depth_conf
        if cfg.branch == "points" and pred.world_points is None:
            raise ValueError("branch='points' needs a model that outputs world_points")
        if conf is None:
            raise ValueError("branch='points' needs a model that outputs world_points_conf")
        if pred.world_points is not None and pred.world_points_conf is None:
            raise ValueError("a prediction with world_points needs world_points_conf")
        if self._windows == 0:
            # The map frame is the first keyframe's camera frame exactly (VGGT's is only close to it).
            first = pred.extrinsics[0].astype(np.float64)
            placement = Sim3(1.0, first[:, :3], first[:, 3])
            voxel = max(cfg.voxel_size or float(np.median(pred.depth[pred.depth > 0])) / 250.0, 1e-9)
            if self.map is None:
                self.map = PointMap(voxel_size=voxel, max_points=cfg.max_points, backend=cfg.fusion_backend)
            else:  # reserved at construction, still empty: its grid is set by the first window
                self.map.voxel_size = voxel
        else:
            placement = self._align(pred, conf, frames[:n_old], n_old)
        self.window_nodes.append(placement)
        aligned = time.perf_counter()
        fused: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        # the compiled path: the map compiled, depth unprojected here (not the point-map head's
        # points nor depth_points unprojected by the model, which the numpy path moves into the map)
        compiled_map = (
            self.map
            if self.map is not None
            and self.map.backend == "compiled"
            and cfg.branch == "depth"
            and pred.depth_points is None
            and pred.depth.dtype == np.float32
            and conf.dtype == np.float32
            else None
        )
        sink_s = 0.0
        for i in range(n_old, len(frames)):
            extr, intr = self._to_map(pred.extrinsics[i], pred.intrinsics[i], placement)
            self.extrinsics.append(extr)
            self.intrinsics.append(intr)
            self.infos.append(frames[i].info)
            self.keyframe_windows.append(self._windows)
            sel = self._selection(pred, conf, i, intr, placement.s)
            if compiled_map is not None:  # select, unproject and merge in compiled loops: frame by frame, same bits
                points, colors, weights = self._scratch(pred.depth[i].size)
                n = fusion_compiled.select_depth_points(
                    pred.depth[i], conf[i], frames[i].rgb, sel.threshold, sel.max_depth, sel.stride,
                    sel.phase_row, sel.phase_col, sel.cut, placement.s, intr, extr, points, colors, weights,
                )  # fmt: skip
                compiled_map.add(points[:n], colors[:n], weights[:n], tag=self._windows)
            else:
                pixels = self._fused_pixels(conf[i], pred.depth[i], sel)
                points = self._map_points(pred, i, pixels, extr, intr, placement)
                fused.append((points, frames[i].rgb.reshape(-1, 3)[pixels], conf[i].reshape(-1)[pixels]))
            if self.sink is not None:
                result = KeyframeResult(
                    self._keyframes,
                    timing["window"],
                    frames[i].info,
                    extr,
                    intr,
                    (placement.s * pred.depth[i]).astype(np.float32),
                    pred.depth_conf[i],
                    frames[i].rgb,
                    placement,
                    pred.world_points[i] if pred.world_points is not None else None,
                    pred.world_points_conf[i] if pred.world_points_conf is not None else None,
                )
                sink_start = time.perf_counter()
                self.sink(result)
                sink_s += time.perf_counter() - sink_start  # the sink's own work (writing) is not fusion
            self._keyframes += 1
        if fused and self.map is not None:  # one merge per window: the voxel hash is probed once for all
            xyz, rgb, weights = (np.concatenate(part) for part in zip(*fused, strict=True))
            self.map.add(xyz, rgb, weights, tag=self._windows)
        fused_at = time.perf_counter()
        if self.loop_detector is not None:
            window_points = self._window_points(pred)
            first = self._keyframes - (len(frames) - n_old)
            places = [
                (first + i - n_old, self._windows, frames[i].rgb, window_points[i], conf[i],
                 inverse_se3(pred.extrinsics[i])[:, 3], frames[i].info.revisit_of)
                for i in range(n_old, len(frames))
            ]  # fmt: skip
            if self.pipelined:  # on its own thread, in order; at most 2 windows' points wait for it
                if self._loop_executor is None:
                    self._loop_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgescene-loops")
                self._drain_loop_jobs(keep=1)
                self._loop_jobs.append(self._loop_executor.submit(self._detect_revisits, places, timing))
            else:
                self._detect_revisits(places, timing)
        k = cfg.overlap
        carried = range(len(frames) - k, len(frames))
        self._overlap_points = np.stack([placement.apply(self._align_samples(pred, j)) for j in carried])
        self._overlap_conf = np.stack([self._sample(conf[j]) for j in carried])
        self._windows += 1
        timing["align_s"] = aligned - start
        timing["fusion_s"] = fused_at - aligned - sink_s
        self._window_rows.append(timing)

    def _given_intrinsics(self, pred: WindowPrediction, frames: list[_Pending]) -> WindowPrediction:
        """The prediction with the frames' known intrinsics in place of the predicted ones (unchanged
        when none is known). Depth stays the model's; the points unprojected inside the model (with its
        own field of view) are dropped, so every point is unprojected here through the given camera."""
        given = [f.info.intrinsics for f in frames]
        known = sum(k is not None for k in given)
        if known == 0:
            return pred
        if known != len(given):
            raise ValueError(
                f"window {self._windows}: {known} of its {len(given)} frames have known intrinsics: give them for "
                "every frame (one camera for all, or an entry per image)"
            )
        k = np.stack([np.asarray(g, np.float64) for g in given])
        if k.shape != pred.intrinsics.shape:
            raise ValueError(f"given intrinsics {k.shape} do not match the window's cameras {pred.intrinsics.shape}")
        predicted = np.sqrt(pred.intrinsics[:, 0, 0] * pred.intrinsics[:, 1, 1])
        self.focal_ratios.append(float(np.median(predicted / np.sqrt(k[:, 0, 0] * k[:, 1, 1]))))
        return replace(pred, intrinsics=k, depth_points=None)

    def _scratch(self, pixels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Buffers the compiled selection fills for one frame of ``pixels`` pixels: points (pixels, 3)
        float64, colours (pixels, 3) uint8, weights (pixels,) float64; made once, reused frame to frame."""
        if self._scratch_buffers is None or len(self._scratch_buffers[2]) < pixels:
            self._scratch_buffers = (np.empty((pixels, 3)), np.empty((pixels, 3), np.uint8), np.empty(pixels))
        return self._scratch_buffers

    # -- what is kept: the pixels fused and the samples aligned ---------------------------------
    def _selection(
        self, pred: WindowPrediction, conf: np.ndarray, i: int, intr: np.ndarray, scale: float
    ) -> _Selection:
        """Which of frame ``i``'s pixels to fuse: the confident ones, not too far, on a pixel grid of
        the stride the map's voxels call for (its phase moves keyframe by keyframe)."""
        cfg = self.config
        depth = pred.depth[i]
        stride = cfg.fuse_stride
        voxel = 0.0
        if stride is None:
            assert self.map is not None  # made by the first window
            median = _finite_median(depth[::4, ::4])  # a sample's median: the stride is a coarse choice
            spacing = median / float(max(intr[0, 0], intr[1, 1]))  # between neighbouring pixels, window units
            voxel = self.map.voxel_size / scale  # window units
            ratio = cfg.fuse_spacing * voxel / spacing if spacing > 0 else 1.0
            stride = int(np.clip(np.floor(ratio), 1, 16)) if np.isfinite(ratio) else 1
        elif stride > 1:
            assert self.map is not None
            voxel = self.map.voxel_size / scale
        c, d = conf[i], depth
        sample = (slice(None, None, 2), slice(None, None, 2))  # thresholds from a quarter of the pixels
        threshold = confidence_threshold(c[sample], cfg.conf_percentile)
        max_depth = np.inf
        if cfg.max_depth_ratio is not None:  # far ground / horizon: few pixels, unbounded extent
            max_depth = cfg.max_depth_ratio * _finite_median(d[sample])
        # nearer than ``cut``, every stride-th pixel still meets the spacing; beyond it, every one
        cut = cfg.fuse_spacing * voxel * float(max(intr[0, 0], intr[1, 1])) / stride if stride > 1 else np.inf
        phase = self._keyframes % (stride * stride)
        # numpy compares float32 maps with a Python float at float32: the thresholds as float32 values
        thresholds = (float(np.float32(threshold)), float(np.float32(max_depth)), float(np.float32(cut)))
        return _Selection(*thresholds, stride, phase // stride, phase % stride)

    @staticmethod
    def _fused_pixels(conf: np.ndarray, depth: np.ndarray, sel: _Selection) -> np.ndarray:
        """Flat indices (into H x W, ascending) of the pixels ``sel`` keeps of one frame's (H, W) maps."""
        keep = (conf >= sel.threshold) & (depth <= sel.max_depth)
        if sel.stride > 1:
            grid = np.zeros(conf.shape, dtype=bool)
            grid[sel.phase_row :: sel.stride, sel.phase_col :: sel.stride] = True
            keep &= grid | (depth > sel.cut)
        return np.flatnonzero(keep)

    def _map_points(
        self, pred: WindowPrediction, i: int, pixels: np.ndarray, extr: np.ndarray, intr: np.ndarray, placement: Sim3
    ) -> np.ndarray:
        """(n, 3) float64 map-frame points of frame ``i`` at flat ``pixels``."""
        if self.config.branch == "points":
            assert pred.world_points is not None  # checked in _integrate
            return placement.apply(pred.world_points[i].reshape(-1, 3)[pixels].astype(np.float64))
        if pred.depth_points is not None:  # unprojected where the model ran (GPU, or inside the exported graph)
            return placement.apply(pred.depth_points[i].reshape(-1, 3)[pixels].astype(np.float64))
        w = pred.depth.shape[2]
        d = placement.s * pred.depth[i].reshape(-1)[pixels].astype(np.float64)  # map units
        u, v = (pixels % w).astype(np.float64), (pixels // w).astype(np.float64)
        # R^T (X_cam - t), term by term in a fixed order (not a matmul, whose summation order BLAS
        # chooses), so the compiled selection (fusion_compiled.select_depth_points) gives the same bits
        a = (u - intr[0, 2]) * d / intr[0, 0] - extr[0, 3]
        b = (v - intr[1, 2]) * d / intr[1, 1] - extr[1, 3]
        e = d - extr[2, 3]
        points = np.empty((len(pixels), 3))
        with np.errstate(invalid="ignore", over="ignore"):  # inf depth: a non-finite point the map drops
            for j in range(3):
                points[:, j] = a * extr[0, j] + b * extr[1, j] + e * extr[2, j]
        return points

    def _sample(self, image: np.ndarray) -> np.ndarray:
        """The alignment's pixel sample of an (H, W, ...) array, flattened to (n, ...)."""
        stride = self.config.align_stride
        sub = image[::stride, ::stride]
        return sub.reshape(-1, *image.shape[2:])

    def _align_samples(self, pred: WindowPrediction, i: int) -> np.ndarray:
        """(n, 3) float64 window-frame points of frame ``i`` at the alignment's pixel sample."""
        if self.config.branch == "points":
            assert pred.world_points is not None
            return self._sample(pred.world_points[i]).astype(np.float64)
        if pred.depth_points is not None:
            return self._sample(pred.depth_points[i]).astype(np.float64)
        stride = self.config.align_stride
        depth = pred.depth[i : i + 1, ::stride, ::stride].astype(np.float64)
        intr = np.array(pred.intrinsics[i : i + 1], np.float64)
        intr[:, :2] /= stride  # the sampled grid is an image of its own: pixel (u, v) is (stride u, stride v)
        return unproject_depth(depth, pred.extrinsics[i : i + 1], intr).reshape(-1, 3)

    def _window_points(self, pred: WindowPrediction) -> np.ndarray:
        """(S, H, W, 3) float64 window-frame points of every pixel (loop detection's places only)."""
        if self.config.branch == "points":
            assert pred.world_points is not None
            return pred.world_points.astype(np.float64)
        if pred.depth_points is not None:
            return pred.depth_points.astype(np.float64)
        return unproject_depth(pred.depth.astype(np.float64), pred.extrinsics, pred.intrinsics)

    def _align(self, pred: WindowPrediction, conf: np.ndarray, carried: list[_Pending], n_old: int) -> Sim3:
        """Similarity mapping this window's frame onto the map, from the carried-over frames: a
        robust, confidence-weighted fit on at most ``align_points`` of their samples."""
        overlap_points, overlap_conf = self._overlap_points, self._overlap_conf
        if overlap_points is None or overlap_conf is None:
            raise RuntimeError("windows without overlap cannot be aligned (StreamConfig overlap=0)")
        src = np.concatenate([self._align_samples(pred, j) for j in range(n_old)])
        dst = overlap_points.reshape(-1, 3)
        weights = np.sqrt(np.concatenate([self._sample(conf[j]) for j in range(n_old)]) * overlap_conf.reshape(-1))
        valid = np.isfinite(src).all(1) & np.isfinite(dst).all(1) & (weights > 0)
        src, dst, weights = src[valid], dst[valid], weights[valid].astype(np.float64)
        limit = self.config.align_points
        if limit is not None and len(weights) > limit:  # the most confident samples
            top = np.sort(np.argpartition(-weights, limit - 1)[:limit])
            src, dst, weights = src[top], dst[top], weights[top]
        scale, rotation, translation, robust = robust_umeyama_sim3(src, dst, weights)
        placement = Sim3(float(scale), np.asarray(rotation, np.float64), np.asarray(translation, np.float64))
        residual = np.linalg.norm(placement.apply(src) - dst, axis=1)
        self.alignments.append(
            WindowAlignment(
                index=self._windows,
                frames=[f.info.index for f in carried],
                scale=float(scale),
                inlier_fraction=float((robust > 0.5 * robust.max()).mean()) if robust.size else 0.0,
                residual=float(np.median(residual)) if residual.size else float("nan"),
            )
        )
        return placement

    @staticmethod
    def _to_map(extr: np.ndarray, intr: np.ndarray, placement: Sim3) -> tuple[np.ndarray, np.ndarray]:
        """Camera-from-window -> camera-from-map for p_map = s R p_window + t (map units are s x window units)."""
        r_cam = extr[:, :3] @ placement.R.T
        t_cam = placement.s * extr[:, 3] - r_cam @ placement.t
        return np.concatenate([r_cam, t_cam[:, None]], axis=1), np.asarray(intr, np.float64)

    def pose_graph(self) -> tuple[list[Sim3], list[Edge]]:
        """The windows as nodes (map_from_window) and the edges between them: one sequential edge per
        overlap alignment (exactly what the chain did) and the loop edges found so far."""
        nodes = list(self.window_nodes)
        edges = [Edge(w - 1, w, nodes[w - 1].inverse() @ nodes[w]) for w in range(1, len(nodes))]
        if self.loop_detector is not None:
            edges += self.loop_detector.edges()
        return nodes, edges

    def close_loops(self, solve: PoseGraphSolver, without_loops: bool = False) -> dict:
        """After :meth:`finish`: optimise the pose graph of the windows with ``solve`` and move every
        camera and map voxel with its window's correction (:meth:`_solve_loops`). Returns the report,
        also kept as ``loop_closure`` (with the seconds it took). ``without_loops``: optimise even when
        no revisit was found (the solver carries other factors: position priors)."""
        start = time.perf_counter()
        report = self._solve_loops(solve, without_loops)
        report["seconds"] = round(time.perf_counter() - start, 4)
        self.loop_closure = report
        return report

    def _solve_loops(self, solve: PoseGraphSolver, without_loops: bool = False) -> dict:
        """Optimise the pose graph with ``solve`` and move every camera and map voxel with its
        window's correction ``after_w @ before_w^{-1}`` (window 0 stays). Call after :meth:`finish`.
        Returns what was done (for the run report); without a loop edge nothing changes."""
        if self.loop_detector is None:
            raise RuntimeError("this stream was made without loop detection (StreamingReconstruction(loops=...))")
        if self._in_flight or self._pending or self._loop_jobs:
            raise RuntimeError("close_loops runs after finish(): windows are still waiting to be integrated")
        nodes, edges = self.pose_graph()
        detector = self.loop_detector
        report: dict = {
            "loops": [m.to_json() for m in detector.matches],
            "windows": len(nodes),
            "applied": False,
            "candidates_checked": detector.candidates_checked,
            "detector_bytes": detector.nbytes,
        }
        if (not detector.matches and not without_loops) or len(nodes) < 2:
            report["note"] = "no revisit verified: nothing to correct"
            return report
        after, info = solve(nodes, edges)
        if len(after) != len(nodes):
            raise ValueError(f"the pose-graph solver returned {len(after)} nodes for {len(nodes)} windows")
        corrections = [a @ b.inverse() for a, b in zip(after, nodes, strict=True)]
        for k, w in enumerate(self.keyframe_windows):
            self.extrinsics[k] = move_camera(self.extrinsics[k], corrections[w])
        if self.map is not None:
            self.map.transform_tags(dict(enumerate(corrections)))
        self.window_nodes = list(after)
        self.corrections = corrections
        shift = [float(np.linalg.norm(c.apply(b.t) - b.t)) for c, b in zip(corrections, nodes, strict=True)]
        report.update(
            applied=True,
            solver=info,
            max_correction={
                "translation": round(max(shift), 6),  # how far a window's origin moved, map units
                "rotation_deg": round(max(c.angle_deg() for c in corrections), 4),
                "scale": round(max(abs(np.log(c.s)) for c in corrections), 6),  # |log s|
            },
        )
        return report

    def apply_similarity(self, c: Sim3) -> None:
        """Move the whole reconstruction by ``p -> s R p + t`` (into metres, after :meth:`finish` and any
        loop closure): every camera, the map (its voxel size scaled with it) and the window nodes. Depth
        in the sinks scales by ``c.s``; the caller tells them (``Sink.rescaled``)."""
        if self._in_flight or self._pending or self._loop_jobs:
            raise RuntimeError("apply_similarity runs after finish(): windows are still waiting to be integrated")
        self.extrinsics = [move_camera(e, c) for e in self.extrinsics]
        if self.map is not None and len(self.map):
            self.map.transform(c.s, c.R, c.t)
        self.window_nodes = [c @ n for n in self.window_nodes]

    def trajectory(self) -> tuple[np.ndarray, np.ndarray]:
        """(K, 3, 4) extrinsics and (K, 3, 3) intrinsics of every keyframe so far, map frame."""
        if not self.extrinsics:
            return np.zeros((0, 3, 4)), np.zeros((0, 3, 3))
        return np.stack(self.extrinsics), np.stack(self.intrinsics)

    def cloud(self) -> tuple[np.ndarray, np.ndarray]:
        """The fused map's (N, 3) float32 points and (N, 3) uint8 colours (empty before the first window)."""
        if self.map is None:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        return self.map.cloud()

    def camera_centers(self) -> np.ndarray:
        extr, _ = self.trajectory()
        return inverse_se3(extr)[:, :, 3] if len(extr) else np.zeros((0, 3))


__all__ = [
    "INPUT_STAGES",
    "STAGES",
    "FrameInfo",
    "KeyframeResult",
    "PoseGraphSolver",
    "Predictor",
    "StreamConfig",
    "StreamState",
    "StreamingReconstruction",
    "WindowAlignment",
    "WindowPrediction",
    "predictor_from_session",
    "sustained_model_busy",
]
