"""Reconstruction from images or video: the runtime's main job, as an API and as one folder.

    rec = Reconstructor("artifacts/vggt_onnx")          # an exported VGGT artifact (or a checkpoint)
    result = rec.run(open_frames("clip.mp4"))            # everything in memory: short inputs
    done = run(rec, frames, sink)                        # any iterable of frames into any Sink:
                                                         # done.stream (map, cameras), done.frames
    reconstruct_to_folder("long.mp4", "artifacts/vggt_onnx", "out/")   # the CLI's job

:func:`run` is the one assembly of the pipeline; everything else is a sink over it
(:mod:`edgescene.runtime.sinks`): the folder of the CLI and the service's jobs, memory for
:meth:`Reconstructor.run`, a live viewer, the service's websocket.

Frames go through keyframe selection (image difference, or DINOv3 features when a features
artifact is given), upstream VGGT's preprocessing (:func:`~edgescene.core.preprocess.choose_model_size`:
upstream's size rule, e.g. 294x518 for a 16:9 frame in crop mode, the whole frame; an exported
artifact that does not serve that size gets it padded into the smallest size it serves that
contains it, or fitted whole into its largest; :class:`~edgescene.runtime.prepare.FramePreparer`),
and :class:`~edgescene.runtime.stream.StreamingReconstruction`, the one stream. The report records, per keyframe, the
source size, orientation, resized size, crop / pad offsets and model input size. Outputs: a fused, confidence-filtered,
voxel-downsampled point cloud (PLY and GLB), per-keyframe depth and confidence (NPZ, model
resolution, map units), cameras (JSON: intrinsics in model and original pixels, camera-from-world
extrinsics; TUM trajectory) and a run report, written atomically into one folder.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np

from edgescene import __version__
from edgescene.core.artifact import ArtifactError
from edgescene.core.preprocess import Resize, choose_model_size, fit, prepare
from edgescene.core.sim3 import PositionPrior, Sim3
from edgescene.runtime.calibration import Calibration, load_calibration
from edgescene.runtime.crs import check_crs, enu_to_crs
from edgescene.runtime.frames import Frame, FrameSource, open_frames
from edgescene.runtime.fusion import resolve_backend
from edgescene.runtime.fusion import warm_up as fusion_warm_up
from edgescene.runtime.keyframes import FeatureSelector, ImageDifferenceSelector
from edgescene.runtime.loops import LoopConfig
from edgescene.runtime.metric import KnownPositions, check_input_kind, known_positions
from edgescene.runtime.outputs import (
    OutputFolder,
    redact_paths,
    write_cameras_json,
    write_glb,
    write_json,
    write_ply,
    write_tum,
)
from edgescene.runtime.pipeline import ReadAhead
from edgescene.runtime.positions import ScaleSource, parse_scale_source
from edgescene.runtime.prepare import FramePreparer, PreparedFrame
from edgescene.runtime.progress import Progress, ProgressBar, ProgressCallback, ProgressTracker
from edgescene.runtime.session import Device, Session, open_session
from edgescene.runtime.sinks import FolderSink, MemorySink, Sink, Tee, ViewerSink
from edgescene.runtime.stream import (
    KeyframeResult,
    PoseGraphSolver,
    StreamConfig,
    StreamingReconstruction,
    predictor_from_session,
    sustained_model_busy,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconstructConfig:
    """Options of a reconstruction (validated; reported back in the run report)."""

    window: int = 8
    overlap: int = 2
    mode: Literal["crop", "pad"] = "crop"
    branch: Literal["depth", "points"] = "depth"
    conf_percentile: float = 50.0
    voxel_size: float | None = None
    max_points: int | None = 2_000_000  # hard bound on the fused cloud (the voxel doubles past it)
    reserve_map: bool = False  # allocate the map for max_points up front (flat memory; ~100 B per point)
    max_depth_ratio: float | None = 3.0  # fuse points up to this x each frame's median depth
    fuse_stride: int | None = None  # pixel stride of fusion (None: from the map's voxel size; 1: every pixel)
    fuse_spacing: float = 1.0  # automatic fuse_stride: sample spacing at the median depth, in voxels
    align_points: int | None = 8192  # the most confident overlap samples a window's alignment uses
    fusion_backend: str = "auto"  # the point map's: "compiled" (numba) where installed, else "numpy"
    every_s: float | None = None
    max_frames: int | None = None
    keyframe_threshold: float = 4.0
    max_keyframe_gap: int = 8
    device: Device = "auto"
    features: str | None = None  # a DINOv3 features artifact for keyframes and revisits
    orientation: Literal["none", "exif"] = "none"  # "exif": apply EXIF orientation / video rotation
    long_side: int | None = None  # upstream's size rule at this long side (default: the model's; 518 for VGGT-1B)
    pipeline: bool = True  # reconstruct_to_folder: read ahead, model thread, write behind (same results)
    fast_attention: bool = False  # VGGT global attention with token merging (open_session's fast_attention)
    loop_closure: bool = False  # find revisits, optimise a Sim(3) pose graph, correct cameras, map and depth
    intrinsics: str | None = None  # a calibration JSON (runtime/calibration.py): known intrinsics replace the predicted
    scale_from: str | None = None  # gps:FILE | exif | poses:FILE | baseline:METRES[@A,B] (runtime/positions.py): metres
    gps_offset_s: float = 0.0  # added to each keyframe's time before matching a gps / poses track
    position_priors: bool = True  # with loop_closure and a scale source placing the map: its positions join the graph
    crs: str | None = None  # EPSG:NNNN: also write the cloud in this projected CRS (needs gps / exif; pyproj)

    def __post_init__(self) -> None:
        if self.mode not in ("crop", "pad"):
            raise ValueError(f"mode must be 'crop' or 'pad', got {self.mode!r}")
        if self.long_side is not None and (self.long_side < 14 or self.long_side % 14 and self.long_side % 16):
            raise ValueError(
                f"long_side must be a positive multiple of the patch size (14, or 16 for a DINOv3 "
                f"patch embedding), got {self.long_side}"
            )
        if self.orientation not in ("none", "exif"):
            raise ValueError(f"orientation must be 'none' or 'exif', got {self.orientation!r}")
        StreamConfig(
            window=self.window,
            overlap=self.overlap,
            branch=self.branch,
            conf_percentile=self.conf_percentile,
            max_points=self.max_points,
            reserve_map=self.reserve_map,
            fuse_stride=self.fuse_stride,
            fuse_spacing=self.fuse_spacing,
            align_points=self.align_points,
            fusion_backend=self.fusion_backend,
        )
        if self.keyframe_threshold < 0 or self.max_keyframe_gap < 1:
            raise ValueError("keyframe_threshold must be >= 0 and max_keyframe_gap >= 1")
        if self.scale_from is not None:
            parse_scale_source(self.scale_from, self.gps_offset_s)  # PositionError (a ValueError) names the problem
        elif self.gps_offset_s != 0.0:
            raise ValueError("gps_offset_s shifts a track given by scale_from (gps:FILE or poses:FILE): set scale_from")
        if self.crs is not None:
            kind = (self.scale_from or "").partition(":")[0]
            if kind not in ("gps", "exif"):
                raise ValueError(
                    f"--crs {self.crs} places the cloud on the Earth: it needs --scale-from gps:FILE or exif"
                )
            object.__setattr__(self, "crs", check_crs(self.crs))

    @property
    def scale_source(self) -> ScaleSource | None:
        return None if self.scale_from is None else parse_scale_source(self.scale_from, self.gps_offset_s)


@dataclass
class Reconstruction:
    """An in-memory result (``Reconstructor.run``)."""

    extrinsics: np.ndarray  # (K, 3, 4) camera-from-world, map frame (first keyframe = identity)
    intrinsics: np.ndarray  # (K, 3, 3) model pixels
    points: np.ndarray  # (N, 3) map frame
    colors: np.ndarray  # (N, 3) uint8
    keyframes: list[dict]  # per keyframe: index, source, timestamp_s
    depth: list[np.ndarray] = field(default_factory=list)  # (H, W) per keyframe, map units
    depth_conf: list[np.ndarray] = field(default_factory=list)
    report: dict = field(default_factory=dict)
    images: list[np.ndarray] = field(default_factory=list)  # (H, W, 3) uint8 per keyframe, model input size
    world_points: list[np.ndarray] = field(default_factory=list)  # (H, W, 3) map frame, point-map head (if any)
    world_points_conf: list[np.ndarray] = field(default_factory=list)


@dataclass(frozen=True)
class Run:
    """A reconstruction by :func:`run`: the stream (windows -> map and cameras, timings, loop closure)
    and the record of its input (frames seen, the model input size, notes, provenance, revisit hints)."""

    stream: StreamingReconstruction
    frames: FramePreparer
    calibration: Calibration | None = None  # the known intrinsics this run used, if any


class Reconstructor:
    """Reconstruction with one VGGT model. ``model``: artifact folder, checkpoint file, preset or Hub id
    (opened with :func:`~edgescene.runtime.session.open_session`), or a session already open."""

    def __init__(
        self,
        model: str | Path | Session,
        config: ReconstructConfig = ReconstructConfig(),
        calibration: Calibration | None = None,
        **session_options,
    ) -> None:
        self.config = config
        # known intrinsics: ``calibration`` (a server's parsed upload), else the file ``config.intrinsics``,
        # read before the model opens so that a bad file fails at once
        if calibration is None and config.intrinsics is not None:
            calibration = load_calibration(config.intrinsics)
        self.calibration = calibration
        # the compiled fusion loop loads (or compiles, once per machine) while the model opens
        jit = None
        if resolve_backend(config.fusion_backend) == "compiled":
            jit = threading.Thread(target=fusion_warm_up, name="edgescene-jit")
            jit.start()
        try:
            self._open(model, config, session_options)
        finally:
            if jit is not None:
                jit.join()

    def _open(self, model: str | Path | Session, config: ReconstructConfig, session_options: dict) -> None:
        if isinstance(model, (str, PathLike)):
            self.session: Session = open_session(
                model, device=config.device, fast_attention=config.fast_attention, **session_options
            )
        else:  # an open session (a server's shared one, a bench's oracle): used as it is
            if session_options:
                raise ValueError(f"session options {sorted(session_options)} apply only when opening a model by name")
            self.session = model
        artifact = self.session.artifact
        family = artifact.model.get("family")
        if family != "vggt":
            raise ArtifactError(
                f"{model}: a {family} artifact; reconstruction needs a VGGT model (DINOv3 artifacts go to --features)"
            )
        self.input_hw = (int(artifact.input_size["height"]), int(artifact.input_size["width"]))  # default size
        self.served_sizes = artifact.served_sizes()  # None: any multiple of the patch (PyTorch)
        # upstream's rule at the model's own scale (518 for VGGT-1B), or at the asked long side
        self.long_side = config.long_side or max(self.input_hw)
        self.patch = artifact.any_size_multiple  # PyTorch: the model's patch; exported: inferred from its sizes
        low, high = int(artifact.frames["min"]), int(artifact.frames["max"])
        if not low <= config.window <= high:
            raise ValueError(
                f"--window {config.window} is outside what {model} serves ({low}..{high} frames): "
                f"use --window {min(max(config.window, low), high)} or re-export with --frames-range"
            )
        self.stream_config = StreamConfig(
            window=config.window,
            overlap=config.overlap,
            branch=config.branch,
            conf_percentile=config.conf_percentile,
            voxel_size=config.voxel_size,
            max_points=config.max_points,
            max_depth_ratio=config.max_depth_ratio,
            reserve_map=config.reserve_map,
            fuse_stride=config.fuse_stride,
            fuse_spacing=config.fuse_spacing,
            align_points=config.align_points,
            fusion_backend=config.fusion_backend,
        )
        self.features = open_session(config.features, device=config.device) if config.features else None
        if self.features is not None and self.features.artifact.model.get("family") != "dinov3":
            raise ArtifactError(f"--features {config.features}: expected a DINOv3 features artifact")

    def _selector(self):
        features = self.features
        if features is None:
            return ImageDifferenceSelector(self.config.keyframe_threshold, self.config.max_keyframe_gap)
        size = features.artifact.input_size
        resize_cache: dict = {}

        def embed(rgb: np.ndarray) -> np.ndarray:
            key = rgb.shape[:2]
            if key not in resize_cache:
                resize_cache[key] = fit(key[0], key[1], int(size["height"]), int(size["width"]), "crop")
            return features({"images": prepare(rgb, resize_cache[key])[None]})["cls"][0]

        return FeatureSelector(embed, max_gap=self.config.max_keyframe_gap)

    def preparer(self, calibration: Calibration | None = None) -> FramePreparer:
        """A fresh keyframe selection and preprocessing for one input (:mod:`edgescene.runtime.prepare`),
        with ``calibration`` (else the reconstructor's own, if any)."""
        return FramePreparer(
            self._selector(),
            self.served_sizes,
            self.config.mode,
            self.long_side,
            self.patch,
            calibration if calibration is not None else self.calibration,
        )

    def check_frame_size(self, height: int, width: int) -> None:
        """ValueError (naming the size and what is served) when a frame of ``height x width`` cannot
        be fed to this model: what a server checks per frame before handing it to a running stream."""
        choose_model_size(height, width, self.config.mode, self.served_sizes, self.long_side, self.patch)

    def warm_up(self, calls: int = 2, hw: tuple[int, int] | None = None) -> float:
        """Run the model ``calls`` times on a blank window (``window`` frames), as a server does before
        its first request: the backend's memory arena and kernels reach their steady state here, so the
        first real window is neither slower nor smaller in memory than the rest. Returns the seconds spent.
        """
        if calls < 0:
            raise ValueError(f"calls must be >= 0, got {calls}")
        start = time.perf_counter()
        h, w = hw or self.input_hw
        blank = np.full((self.config.window, 3, h, w), 0.5, np.float32)
        for _ in range(calls):
            self.session({"images": blank})
        return time.perf_counter() - start

    def run(
        self,
        frames: Iterable[Frame | np.ndarray],
        solver: PoseGraphSolver | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Reconstruction:
        """Reconstruct everything in memory (for short inputs; use :func:`reconstruct_to_folder` for long ones).
        ``solver``: the pose-graph solver loop closure needs (``config.loop_closure``). ``on_progress``:
        :class:`~edgescene.runtime.progress.Progress` after every frame and stage, ``done`` once the
        result is assembled (fractions where ``frames`` knows its length: a frame source or a list)."""
        sink = MemorySink()
        expected = frames.expected_count() if isinstance(frames, FrameSource) else None
        if expected is None and isinstance(frames, (list, tuple)):
            expected = len(frames)
        tracker = ProgressTracker(on_progress, expected)
        done = run(self, frames, sink, pipeline=False, solver=solver, progress=tracker)
        results = sink.results
        extrinsics, intrinsics = done.stream.trajectory()
        points, colors = done.stream.cloud()
        result = Reconstruction(
            extrinsics=extrinsics,
            intrinsics=intrinsics,
            points=points,
            colors=colors,
            keyframes=[r.info.record() for r in results],
            depth=[r.depth for r in results],
            depth_conf=[r.depth_conf for r in results],
            report=_report(self, done),
            images=[_colours(r) for r in results],
            world_points=[p for p in (r.world_points for r in results) if p is not None],
            world_points_conf=[r.world_points_conf for r in results if r.world_points_conf is not None],
        )
        tracker.stage("done")
        return result


class NoFrames(ValueError):
    """The input gave no frame at all (an empty folder, a video without decodable frames)."""


def run(
    rec: Reconstructor,
    frames: Iterable[Frame | np.ndarray],
    sink: Sink | None = None,
    *,
    pipeline: bool | None = None,
    solver: PoseGraphSolver | None = None,
    progress: ProgressTracker | None = None,
    calibration: Calibration | None = None,
) -> Run:
    """Reconstruct ``frames`` with ``rec`` into ``sink``: the one assembly of the pipeline.

    ``calibration``: known intrinsics for this run only (a live client's), else ``rec.calibration``.

    Every entry point runs this: the CLI and service jobs (:func:`reconstruct_to_folder`, a
    :class:`~edgescene.runtime.sinks.FolderSink`), the Python API (:meth:`Reconstructor.run`, a
    :class:`~edgescene.runtime.sinks.MemorySink`), the live ``/stream`` (a sink that answers the
    client), the web app and the benches; they differ only in their sink.

    ``frames``: decoded frames (:func:`~edgescene.runtime.frames.open_frames`) or (H, W, 3) uint8
    RGB arrays, any iterable (a queue a server fills is one). ``pipeline`` (default
    ``rec.config.pipeline``): decoding, keyframe selection and preprocessing run on a read-ahead
    thread and the model on its own thread while the last window is aligned and fused (the results
    equal the sequential ones). ``solver``: loop closure's pose-graph solver. ``progress``: a
    :class:`~edgescene.runtime.progress.ProgressTracker` told of every input frame, window and stage
    (its callback is called after every input frame; an exception it raises cancels the run); the
    run's owner reports ``writing`` and ``done``. Returns the finished :class:`Run` (its stream: map,
    cameras, timings; its frames: what came in); raises :class:`NoFrames` (a ValueError) for no frames.
    """
    check_solver(rec.config, solver)
    sink = sink or Sink()
    pipelined = rec.config.pipeline if pipeline is None else pipeline
    preparer = rec.preparer(calibration)
    stream = StreamingReconstruction(
        predictor_from_session(rec.session),
        rec.stream_config,
        sink=sink.keyframe,
        pipelined=pipelined,
        loops=LoopConfig() if rec.config.loop_closure else None,
    )
    current = Run(stream, preparer, calibration if calibration is not None else rec.calibration)
    sink.start(current)

    def prepared_frames() -> Iterator[tuple[int, PreparedFrame | None]]:
        """Decode, keyframe selection and preprocessing (on the read-ahead thread when pipelined)."""
        decoded = iter(frames)
        while True:
            decode_start = time.perf_counter()
            frame = next(decoded, None)
            if frame is None:
                return
            prepared = preparer.prepare(frame, decode_s=time.perf_counter() - decode_start)
            yield preparer.frames_seen, prepared

    source = ReadAhead(prepared_frames(), depth=2 * rec.config.window) if pipelined else prepared_frames()
    tracker = progress or ProgressTracker(None)
    reported = 0  # windows the sink has been told about
    try:
        for seen, prepared in source:
            if prepared is not None:
                if not tracker.kept:  # the first keyframe: the size frames are fed at is chosen
                    tracker.started(describe_model(rec), preparer.model_hw or rec.input_hw)
                tracker.keyframe(seen)
                state = stream.push(prepared.image, prepared.colors, prepared.info, prepared.stages)
                if state is not None:
                    reported = state.windows
                    tracker.window(state.keyframes, state.windows)
                    sink.window(current)
            tracker.frame(seen)
        if preparer.frames_seen == 0:
            raise NoFrames("no frames to reconstruct")
        tracker.stage("finishing")
        stream.finish(preparer.leftover_stages())
        tracker.window(stream.state.keyframes, stream.state.windows)
        if stream.state.windows > reported:  # the last (partial or in-flight) windows joined at finish
            sink.window(current)
        sink.flush()
        scale_source = rec.config.scale_source
        # the keyframes' known positions, read once (a track file, or every keyframe photo's EXIF):
        # the keyframes do not change after finish(), only where loop closure puts their cameras
        positions = keyframe_positions(stream, scale_source) if scale_source is not None else None
        if solver is not None and rec.config.loop_closure:
            tracker.stage("closing loops")
            priors: list[PositionPrior] = []
            if positions is not None and rec.config.position_priors:
                priors, first_fit = position_priors(stream, positions)
            if priors:  # the known positions join the graph: drift bends toward them, loops or not
                solve: PoseGraphSolver = functools.partial(solver, priors=priors, map_to_metric=first_fit)  # type: ignore[call-arg]
                stream.close_loops(solve, without_loops=True)
            else:
                stream.close_loops(solver)
            if positions is not None and stream.loop_closure is not None:
                stream.loop_closure["position_priors"] = len(priors)
            sink.loops_closed(current)
        if positions is not None:
            tracker.stage("metric scale")
            fit = positions.fit(stream.camera_centers())
            stream.apply_similarity(fit.map_to_metric)
            stream.metric = fit.report()
            sink.rescaled(current, fit.map_to_metric)
        sink.finish(current)
    finally:
        if isinstance(source, ReadAhead):
            source.close()
        stream.close()
        sink.close()
    return current


def describe_model(rec: Reconstructor) -> str:
    """ "vggt-tiny (onnx fp32) on onnxruntime/cpu": the model line every surface shows."""
    artifact = rec.session.artifact
    name = artifact.model.get("preset") or artifact.model.get("family") or "model"
    return f"{name} ({artifact.format} {artifact.precision}) on {rec.session.backend}/{rec.session.device}"


def check_solver(config: ReconstructConfig, solver: PoseGraphSolver | None) -> None:
    """Loop closure needs a pose-graph solver; the runtime has none of its own (it stays lean)."""
    if config.loop_closure and solver is None:
        raise ValueError(
            "loop_closure=True needs a pose-graph solver: pass solver=edgescene.mapping.pose_graph.solve "
            "(pip install 'edgescene[mapping]', GTSAM); the CLI's --loop-closure does this"
        )
    if solver is not None and not callable(solver):
        raise ValueError(f"solver must be callable (nodes, edges) -> (nodes, info), got {type(solver).__name__}")


def _resize(result: KeyframeResult) -> Resize:
    resize = result.info.resize
    assert resize is not None  # FramePreparer.prepare records every keyframe's resize
    return resize


def _colours(result: KeyframeResult) -> np.ndarray:
    rgb = result.rgb
    assert rgb is not None  # the stream hands every keyframe's colours to its sink
    return rgb


REAL_MODEL = "for real footage use VGGT-1B (docs/models.md)"  # report.json's words: no surface's advice
CLI_REAL_MODEL = "for real footage use VGGT-1B: --model facebook/VGGT-1B (docs/models.md)"


def model_notes(model: dict, real_model: str = REAL_MODEL) -> list[str]:
    """One-line warnings about the model that ran (``artifact.model``): a demo model trained on
    synthetic scenes only, or random weights. Kept in report.json in words every surface can show;
    each surface passes ``real_model``, its own way to reach VGGT-1B (the CLI :data:`CLI_REAL_MODEL`)."""
    notes = []
    if model.get("source") == "random-init":
        notes.append(
            f"{model.get('preset')} ran with RANDOM weights (--random-weights): its output is noise, "
            "for tests and timing only"
        )
    if model.get("demo"):
        notes.append(f"{model.get('preset')} is a demo model, {model['demo']}; {real_model}")
    fast = model.get("fast_attention")
    if fast:
        notes.append(
            f"fast attention on (token merging in the global attention, stride {fast.get('stride')}, "
            f"ratio {fast.get('ratio')}): faster at many frames, close to but not exactly VGGT's output"
        )
    return notes


def metric_note(metric: dict) -> str:
    """One line on where a run's metres came from (report.json's ``metric``), paths redacted: the
    source, the kind of fit, the positions kept and their residual."""
    rmse = metric.get("residual_rmse_m")
    return (
        f"in metres from {redact_paths(metric['scale_source'])} ({metric['mode']} fit, {metric['inliers']} of "
        f"{metric['positions_used']} positions kept" + ("" if rmse is None else f", RMSE {rmse:.3g} m") + ")"
    )


def _preprocessing(rec: Reconstructor, frames: FramePreparer) -> dict:
    return {
        "rule": "upstream VGGT load_and_preprocess_images (Pillow bicubic, sizes rounded to 14)",
        "mode": rec.config.mode,
        "orientation": rec.config.orientation,
        "model_input_hw": list(frames.model_hw) if frames.model_hw else None,
        "served_sizes": rec.session.artifact.describe_sizes(),
        "notes": frames.notes,
        "frames": frames.provenance,
    }


def _report(rec: Reconstructor, done: Run) -> dict:
    artifact = rec.session.artifact
    core = done.stream
    windows = core.window_timings()
    steady = sustained_model_busy(windows)
    return {
        "edgescene": __version__,
        "frames_seen": done.frames.frames_seen,
        "keyframes": len(core.extrinsics),
        "windows": core.state.windows,
        "points": len(core.map) if core.map is not None else 0,
        "map_voxel_size": core.map.voxel_size if core.map is not None else None,  # final (after any coarsening)
        "backend": {
            "name": rec.session.backend,
            "device": rec.session.device,
            **({"address": str(rec.session.address)} if hasattr(rec.session, "address") else {}),
        },
        "model": {
            "format": artifact.format,
            "precision": artifact.precision,
            **artifact.model,
            "input_size": artifact.input_size,
            "served_sizes": artifact.describe_sizes(),
        },
        "model_notes": model_notes(artifact.model),
        "preprocessing": _preprocessing(rec, done.frames),
        "config": asdict(rec.config),
        "fusion_backend": core.map.backend if core.map is not None else resolve_backend(rec.config.fusion_backend),
        "timings_s": {k: round(v, 4) for k, v in core.timings.items()},
        "window_timings_s": [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in windows
        ],
        # the model's busy fraction from the second window to the third-to-last (None under 5 windows):
        # near 1, the model sets a long video's pace; well below, the runtime around it does
        "model_busy_steady_state": round(steady, 3) if steady is not None else None,
        "alignments": [asdict(a) for a in core.alignments],
        "intrinsics": _intrinsics_report(done.calibration, core),
        "revisits": done.frames.revisits,
        **({"loop_closure": core.loop_closure} if core.loop_closure is not None else {}),
        "units": "metres" if core.metric is not None else "the model's (up to scale)",
        **({"metric": core.metric} if core.metric is not None else {}),
    }


def position_priors(
    stream: StreamingReconstruction, positions: KnownPositions
) -> tuple[list[PositionPrior], Sim3 | None]:
    """The scale source's positions as pose-graph priors, and the first fit of the chained cameras
    to them (the graph's starting map-to-metric similarity); none for a scale-only source. Each
    position the fit kept pulls the window of the keyframe nearest it in time, within the fit's
    robust spread (the positions' noise and the chain's drift together: a conservative weight), at
    least 0.1 % of their extent."""
    centres = stream.camera_centers()
    fit = positions.fit(centres)
    if fit.mode != "full":
        return [], None
    kept = np.array(fit.inliers)
    targets = positions.targets[kept]
    extent = float(np.max(np.linalg.norm(targets[:, None] - targets[None], axis=-1)))
    sigma_m = max(1.4826 * float(np.median(fit.inlier_residuals)), 1e-3 * extent)
    points = positions.points(centres)[kept]
    priors = []
    for row, point, target in zip(kept, points, targets, strict=True):
        w = stream.keyframe_windows[positions.nearest_keyframe[row]]
        local = stream.window_nodes[w].inverse().apply(point[None])[0]
        priors.append(PositionPrior(w, local, target, sigma_m))
    return priors, fit.map_to_metric


def keyframe_positions(stream: StreamingReconstruction, source: ScaleSource) -> KnownPositions:
    """``source``'s positions of ``stream``'s keyframes (its files read here, once)."""
    infos = stream.infos
    kind = "video" if any(i.timestamp_s is not None for i in infos) else "image(s)"
    return known_positions(source, infos, kind)


def _intrinsics_report(calibration: Calibration | None, core: StreamingReconstruction) -> dict:
    """Which intrinsics the outputs use and, when given, how far the model's guess was from them."""
    if calibration is None:
        return {"source": "predicted"}
    ratios = core.focal_ratios
    return {
        "source": "given",
        **calibration.describe(),
        "focal_ratio_per_window": [round(r, 5) for r in ratios],
        "focal_ratio_median": round(float(np.median(ratios)), 5) if ratios else None,
        "note": "the model's focal length over the given one (geometric mean of fx and fy, in model pixels), "
        "per window: near 1 the model's field of view agrees with the calibration; far from it, either the "
        "model misjudges this footage or the calibration belongs to another camera, zoom or image size",
    }


def reconstruct_to_folder(
    source,
    model: str | Path | Session,
    out: str | Path,
    config: ReconstructConfig = ReconstructConfig(),
    overwrite: bool = False,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
    hide_paths: bool = False,
    on_window: Callable[[dict], None] | None = None,
    solver: PoseGraphSolver | None = None,
) -> dict:
    """Reconstruct ``source`` (image, folder or list of images, video) into the folder ``out``.

    ``hide_paths``: file and folder paths in cameras.json and report.json (frame sources, the input,
    the model's source) are reduced to their names (:func:`edgescene.runtime.outputs.redact_paths`):
    what a service writes for a client never names the server's folders.

    Nothing appears at ``out`` unless the whole run succeeds (it is built in a staging folder).
    ``progress``: a terminal bar on stderr (:class:`~edgescene.runtime.progress.ProgressBar`).
    ``on_progress(p)`` gets a :class:`~edgescene.runtime.progress.Progress` while the model opens,
    after every input frame and at each stage, the last (``done``, fraction 1.0) once the folder is in
    place (a job's progress; an exception it raises cancels the run). ``on_window(update)`` is called on the caller's
    thread each time a window joins the map (a live viewer): ``update`` holds ``points`` (N, 3),
    ``colors`` (N, 3) uint8, ``weights`` (N,), ``extrinsics`` (K, 3, 4), ``intrinsics`` (K, 3, 3),
    ``image_hw`` and ``thumbnails`` (one small uint8 image per keyframe, None for all but the last
    ``LIVE_THUMBNAILS``). ``solver``: the pose-graph solver of loop closure (``config.loop_closure``;
    :func:`edgescene.mapping.pose_graph.solve`): after the last window the cameras, the map and the
    depth files move with their window's correction, and ``on_window`` gets the corrected scene.
    Returns the run report (also written as ``report.json``).
    """
    check_solver(config, solver)
    bar = ProgressBar() if progress else None
    callbacks = [c for c in (bar, on_progress) if c is not None]

    def tell(p: Progress) -> None:
        for callback in callbacks:
            callback(p)

    try:
        with OutputFolder(out, overwrite=overwrite) as folder:
            frames = open_frames(
                source, every_s=config.every_s, max_frames=config.max_frames, orientation=config.orientation
            )
            if config.scale_source is not None:  # before the model opens: a source this input cannot use
                check_input_kind(config.scale_source, "video" if frames.kind == "video" else "image(s)")
            tracker = ProgressTracker(tell, frames.expected_count())
            report = _reconstruct_into(folder, source, frames, model, config, tracker, hide_paths, on_window, solver)
        tracker.stage("done")
    finally:
        if bar is not None:
            bar.close()
    return report


def _reconstruct_into(
    folder: OutputFolder,
    source,
    frames: FrameSource,
    model: str | Path | Session,
    config: ReconstructConfig,
    tracker: ProgressTracker,
    hide_paths: bool,
    on_window: Callable[[dict], None] | None,
    solver: PoseGraphSolver | None,
) -> dict:
    """:func:`reconstruct_to_folder`'s run, into the staging ``folder``; returns the report."""
    start = time.perf_counter()
    tracker.opening()
    rec = Reconstructor(model, config)
    opened = time.perf_counter()
    depth_files = FolderSink(folder, write_behind=config.pipeline, depth=2 * config.window)
    sink: Sink = depth_files if on_window is None else Tee(depth_files, ViewerSink(on_window))
    try:
        done = run(rec, frames, sink, solver=solver, progress=tracker)
    except NoFrames as exc:
        raise NoFrames(f"{source}: {exc}") from exc
    kept = depth_files.kept
    extrinsics, intrinsics = done.stream.trajectory()
    records = [k.info.record() for k in kept]
    if hide_paths:
        records = redact_paths(records)
    source_intrinsics = np.stack([_resize(k).to_source_intrinsics(k.intrinsics) for k in kept])
    tracker.stage("writing")
    write_start = time.perf_counter()
    points, colors = done.stream.cloud()
    model_hw = done.frames.model_hw or rec.input_hw
    cameras = [(intrinsics[i], extrinsics[i], model_hw) for i in range(len(kept))]
    intrinsics_source = "given" if rec.calibration is not None else "predicted"
    write_cameras_json(folder.path("cameras.json"), records, intrinsics, extrinsics, model_hw, intrinsics_source)
    write_json(
        folder.path("cameras_source.json"),
        {
            "intrinsics_source": intrinsics_source,
            "note": "intrinsics in the original image's pixels (before resizing to the model input); "
            "'frames' says how each image reached the model (edgescene.core.preprocess.Resize: "
            "u = scale_x * x + offset_x, v = scale_y * y + offset_y)",
            "intrinsics": source_intrinsics.tolist(),
            "image_size": [[_resize(k).src_h, _resize(k).src_w] for k in kept],
            "frames": [dict(k.info.provenance) for k in kept],
        },
    )
    timestamps = np.array([r["timestamp_s"] if r["timestamp_s"] is not None else float(r["index"]) for r in records])
    write_tum(folder.path("trajectory.tum"), timestamps, extrinsics)
    # the two files of the whole cloud at once (numpy and file writes release the GIL): the scene on
    # a thread while the points are written here (the small files before them, so that their fsyncs
    # do not wait behind the large files' data in the file system's journal)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgescene-outputs") as outputs:
        scene = outputs.submit(write_glb, folder.path("scene.glb"), points, colors, cameras=cameras)
        write_ply(folder.path("points.ply"), points, colors)
        scene.result()
    report = _report(rec, done)
    if config.crs is not None and "metric" in report:
        o = report["metric"]["enu_origin"]
        write_ply(
            folder.path("points_crs.ply"),
            enu_to_crs(points, (o["lat"], o["lon"], o["alt"]), config.crs),
            colors,
            double=True,
        )
        report["metric"]["crs"] = {
            "epsg": config.crs,
            "file": "points_crs.ply",
            "axes": "easting, northing (the CRS's metres), WGS84 ellipsoidal height (m); float64",
        }
    t = report["timings_s"]
    t["outputs_s"] = round(time.perf_counter() - write_start, 4)  # points.ply, scene.glb, cameras, trajectory
    t["write_s"] = round(t["write_s"] + t["outputs_s"], 4)
    t["open_s"] = round(opened - start, 4)  # opening the model (not part of total_s)
    t["total_s"] = round(time.perf_counter() - opened, 4)  # wall time: first frame to last output
    t["total_over_model"] = round(t["total_s"] / t["model_s"], 3) if t["model_s"] else None
    report["input"] = frames.describe()
    report["outputs"] = [
        "points.ply",
        "scene.glb",
        "cameras.json",
        "cameras_source.json",
        "trajectory.tum",
        "depth/*.npz",
        "report.json",
        *(["points_crs.ply"] if "crs" in report.get("metric", {}) else []),
    ]
    if hide_paths:
        report = redact_paths(report)
    write_json(folder.path("report.json"), report)
    return report
