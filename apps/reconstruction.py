"""The web app's reconstruction: run the model once, keep its predictions, re-render on demand.

``reconstruct(...)`` checks the uploaded files against the chosen input mode, runs
:class:`edgescene.runtime.reconstruct.Reconstructor` over them, saves a
:class:`edgescene.runtime.scene.SceneCache` in a fresh folder and renders it.
``rerender(folder, options)`` re-renders that cache under new display options (confidence
percentile, branch, cameras, background filter) without running the model.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgescene.apps.models_catalog import default_window
from edgescene.apps.uploads import check_kinds, kind_of
from edgescene.runtime.frames import open_frames
from edgescene.runtime.progress import ProgressCallback, ProgressTracker
from edgescene.runtime.reconstruct import ReconstructConfig, Reconstructor, metric_note, model_notes
from edgescene.runtime.scene import SceneCache, ViewOptions
from edgescene.runtime.session import open_session

MODES = {"single image": "images", "several images": "images", "video": "video"}
CACHE_NAME = "predictions.npz"


@dataclass
class Rendered:
    folder: Path
    glb: Path
    ply: Path
    depth_images: list  # (H, W, 3) uint8 per keyframe; empty on a re-render (they do not change)
    points: int
    keyframes: int
    seconds: float
    model_run: bool
    branches: tuple[str, ...]
    notes: tuple[str, ...] = ()  # one line each: demo / random-weight model, how frames were fitted


def check_inputs(paths: Sequence[str | Path], mode: str) -> list[Path]:
    """The files, checked by name and content against ``mode`` (ValueError naming what to upload)."""
    if mode not in MODES:
        raise ValueError(f"input mode must be one of {', '.join(MODES)}, got {mode!r}")
    paths = [Path(p) for p in paths or []]
    if not paths:
        raise ValueError(f"no files: upload {'a video' if mode == 'video' else 'one or more images'} first")
    kinds = []
    for p in paths:
        with open(p, "rb") as f:
            kinds.append(kind_of(p.name, f.read(16)))
    kind = check_kinds(kinds)
    if kind != MODES[mode]:
        raise ValueError(
            f"input mode '{mode}' needs {'one video' if mode == 'video' else 'images'}, "
            f"but the upload is {'a video' if kind == 'video' else 'images'}; switch the mode"
        )
    if mode == "single image" and len(paths) != 1:
        raise ValueError(f"'single image' takes exactly one image, got {len(paths)}; choose 'several images'")
    return paths


# how a user of the web app reaches VGGT-1B (the demo model's note), in the app's words
APP_REAL_MODEL = (
    "for real footage use VGGT-1B: download facebook/VGGT-1B in Model setup, then choose it in the model list"
)
DEFAULT_MAX_FRAMES = 120  # the web app holds a run in memory: a 320-frame video peaked at 2.2 GB
KEEP_RECONSTRUCTIONS = 10  # finished reconstructions kept in the workspace (the oldest are deleted)


def _prune(out_root: Path, keep: int) -> None:
    runs = sorted((p for p in out_root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in runs[: max(0, len(runs) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def reconstruct(
    paths: Sequence[str | Path],
    mode: str,
    model: str | Path,
    out_root: str | Path,
    every_s: float | None = None,
    max_frames: int | None = None,
    window: int | None = None,
    options: ViewOptions = ViewOptions(),
    on_progress: ProgressCallback | None = None,
    loop_closure: bool = False,
    intrinsics: str | Path | None = None,
    scale_from: str | None = None,
) -> Rendered:
    """Run the model over the inputs once, cache its predictions in a new folder and render them.

    ``max_frames`` None takes :data:`DEFAULT_MAX_FRAMES` (the run is held in memory); only the
    :data:`KEEP_RECONSTRUCTIONS` newest reconstructions stay in ``out_root``. ``window`` None: 8
    frames a model call, fewer where the model serves fewer
    (:func:`~edgescene.apps.models_catalog.default_window`). ``on_progress``: the
    run's :class:`~edgescene.runtime.progress.Progress` (``done`` before the scene is rendered).
    ``intrinsics``: a calibration JSON (known intrinsics); ``scale_from``: the runtime's scale source
    (``exif``, ``baseline:M``, ``gps:FILE``, ``poses:FILE``): the scene in metres.
    """
    paths = check_inputs(paths, mode)
    max_frames = max_frames or DEFAULT_MAX_FRAMES
    start = time.perf_counter()
    source = paths[0] if mode != "several images" else paths
    frames = open_frames(source, every_s=every_s if mode == "video" else None, max_frames=max_frames)
    ProgressTracker(on_progress, frames.expected_count()).opening()  # the model opens outside the run
    session = open_session(model, device=ReconstructConfig().device)
    if window is None:  # the app has no window control: 8 frames, or what the model serves at most
        window = default_window(session.artifact.frames)
    rec = Reconstructor(
        session,
        ReconstructConfig(
            window=window,
            overlap=min(2, window - 1),
            branch=options.branch,
            conf_percentile=options.conf_percentile,
            loop_closure=loop_closure,
            intrinsics=None if intrinsics is None else str(intrinsics),
            scale_from=scale_from,
        ),
    )
    solver = None
    if loop_closure:
        if importlib.util.find_spec("gtsam") is None:  # now, rather than after the model ran
            raise ImportError("loop closure needs GTSAM: pip install 'edgescene[mapping]'")
        from edgescene.mapping.pose_graph import solve as solver
    result = rec.run(frames, solver=solver, on_progress=on_progress)
    folder = Path(out_root) / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    _prune(Path(out_root), KEEP_RECONSTRUCTIONS)
    cache = SceneCache.from_reconstruction(result)
    cache.save(folder / CACHE_NAME)
    rendered = _render(cache, folder, options, start, model_run=True)
    notes = tuple(model_notes(result.report["model"], APP_REAL_MODEL)) + tuple(result.report["preprocessing"]["notes"])
    lc = result.report.get("loop_closure")
    if lc is not None:
        found = f"loop closure: {len(lc['loops'])} loop edge(s) over {lc['windows']} windows"
        notes += (f"{found}; cameras and points corrected" if lc["applied"] else f"{found}; {lc.get('note')}",)
    if result.report["intrinsics"]["source"] == "given":
        ratio = result.report["intrinsics"]["focal_ratio_median"]
        notes += (f"intrinsics given by the calibration (the model's focal length was {ratio:.3f}x it)",)
    if result.report.get("metric") is not None:
        notes += (metric_note(result.report["metric"]),)
    return dataclasses.replace(rendered, notes=notes)


def rerender(folder: str | Path, options: ViewOptions) -> Rendered:
    """Re-render a cached reconstruction under ``options`` (the model does not run)."""
    folder = Path(folder)
    cache_path = folder / CACHE_NAME
    if not cache_path.is_file():
        raise ValueError("nothing to re-render yet: run a reconstruction first")
    start = time.perf_counter()
    return _render(SceneCache.load(cache_path), folder, options, start, model_run=False)


def _render(cache: SceneCache, folder: Path, options: ViewOptions, start: float, model_run: bool) -> Rendered:
    view = folder / f"view-{uuid.uuid4().hex[:8]}"  # a new name per render: browsers cache by URL
    paths = cache.render(view, options)
    for old in folder.glob("view-*"):
        if old != view:
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
    points = int(json.loads((view / "view.json").read_text())["points"])
    depth_images = cache.depth_images() if model_run else []  # unchanged by display options: made once
    return Rendered(
        folder=folder,
        glb=paths["glb"],
        ply=paths["ply"],
        depth_images=depth_images,
        points=points,
        keyframes=len(cache.depth),
        seconds=time.perf_counter() - start,
        model_run=model_run,
        branches=cache.branches,
    )


__all__ = ["MODES", "Rendered", "check_inputs", "reconstruct", "rerender"]
