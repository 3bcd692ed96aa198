"""COLMAP sparse model of a reconstruction folder, built with pycolmap's own Reconstruction API.

``export_colmap(RECON_DIR)`` reads what ``edgescene reconstruct`` wrote (cameras.json,
cameras_source.json, points.ply, depth/*.npz, report.json) and writes::

    RECON_DIR/colmap/images/00000.jpg ...          the keyframes at their source resolution
    RECON_DIR/colmap/sparse/0/{cameras,images,points3D}.bin
    RECON_DIR/colmap/export.json                   what was written, reprojection errors

- one PINHOLE camera per keyframe, intrinsics in source pixels (cameras_source.json);
- one image per keyframe, ``cam_from_world`` equal to cameras.json's extrinsics;
- one 3D point per point of the fused map (points.ply) measured by at least ``min_track``
  keyframes, with its colour and its 2D observations: in each keyframe, the pixel whose depth,
  unprojected with that keyframe's camera, falls in the point's voxel (the measurements the map was
  fused from, see :func:`observations`), so bundle adjustment and splatting tools (gsplat,
  nerfstudio) accept the model and BA has real residuals to reduce.

Pixel conventions: edgescene puts pixel centres at integer coordinates (column u, row v, no +0.5);
COLMAP puts the centre of the top-left pixel at (0.5, 0.5). Principal points and observations are
shifted by +0.5 on the way out. Keyframe images are decoded again from the input the run read
(cameras.json ``frames[i].source``: ``video#fNNNNNN`` or an image path) unless ``source`` names it.

``bundle_adjust=True`` refines poses and points with :func:`pycolmap.bundle_adjustment` over these
observations (intrinsics fixed, Cauchy loss of 1 px), drops the points it leaves above
``max_error_px`` (as COLMAP's own filtering does) and reports the mean reprojection error before
and after.
Needs the ``mapping`` extra (pycolmap).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgescene.core.preprocess import Resize
from edgescene.runtime.outputs import read_ply

COLMAP_DIR = "colmap"
INSTALL_HINT = "pip install 'edgescene[mapping]' (pycolmap)"
VIDEO_SOURCE = re.compile(r"^(?P<path>.+)#f(?P<index>\d+)$")


@dataclass
class ColmapExport:
    """What was written, and how well the model explains its observations."""

    folder: str  # the colmap folder (images/ and sparse/0/)
    images: int
    points3D: int
    observations: int
    mean_track_length: float
    reprojection_error_px: float  # mean, after bundle adjustment when it ran
    reprojection_error_before_px: float | None = None  # before bundle adjustment
    bundle_adjusted: bool = False
    points3D_removed: int = 0  # after bundle adjustment: error above max_error_px

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _import_pycolmap():
    try:
        import pycolmap
    except ImportError as exc:
        raise ImportError(f"the COLMAP export needs pycolmap: {INSTALL_HINT} ({exc})") from exc
    return pycolmap


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {path.parent} a folder written by `edgescene reconstruct`?")
    return json.loads(path.read_text())


def keyframe_images(frames: list[dict], source: str | Path | None, orientation: str) -> list[np.ndarray]:
    """The keyframes' source pixels (H, W, 3) uint8, decoded again from the run's input (or ``source``).

    ``frames``: cameras.json ``frames`` (``source`` is ``VIDEO#fNNNNNN`` or an image path). ``source``
    replaces the recorded input: a video for video frames, a folder holding the images by name."""
    from edgescene.runtime.frames import open_frames

    wanted: dict[str, list[tuple[int | None, int]]] = {}  # input path -> [(video frame index or None, keyframe)]
    for k, record in enumerate(frames):
        match = VIDEO_SOURCE.match(str(record["source"]))
        path, index = (match["path"], int(match["index"])) if match else (str(record["source"]), None)
        if source is not None:
            path = str(source) if match else str(Path(source) / Path(path).name)
        wanted.setdefault(path, []).append((index, k))
    images: list[np.ndarray | None] = [None] * len(frames)
    for path, picks in wanted.items():
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"the reconstruction's input {path} is not there to take the keyframe images from; pass the "
                "video, or the folder of images, it was made from (edgescene colmap OUT_DIR --input SOURCE)"
            )
        by_index = {index: k for index, k in picks}
        for decoded in open_frames(path, orientation=orientation):
            found = by_index.get(decoded.index if picks[0][0] is not None else None)
            if found is not None:
                images[found] = decoded.rgb
            if all(images[k] is not None for _, k in picks):
                break
    missing = [k for k, image in enumerate(images) if image is None]
    if missing:
        raise ValueError(f"keyframes {missing[:5]} were not found in the input; was it changed since the run?")
    return [image for image in images if image is not None]


def _voxel_ids(keys: np.ndarray, lo: np.ndarray, span: np.ndarray) -> np.ndarray:
    """(M, 3) integer voxel keys -> (M,) int64 ids, unique within the box ``lo`` .. ``lo + span``."""
    k = keys - lo
    return (k[:, 0] * span[1] + k[:, 1]) * span[2] + k[:, 2]


def observations(
    points: np.ndarray,
    voxel_size: float,
    extrinsics: np.ndarray,
    intrinsics: np.ndarray,
    depth: np.ndarray,
    resize: Resize,
) -> tuple[np.ndarray, np.ndarray]:
    """Which fused points one keyframe measured, and at which of its pixels.

    points (N, 3): the fused map (each a voxel's mean, so inside its voxel of ``voxel_size``);
    extrinsics (3, 4) camera-from-world, intrinsics (3, 3) and depth (H, W) at the model resolution.
    Every pixel's depth is unprojected; a pixel whose point falls in a voxel of the map observes that
    voxel's point there (the first such pixel when several do). These are the measurements the map
    was fused from, so their reprojection error is what bundle adjustment reduces. Returns (indices
    into points, (M, 2) source-pixel (x, y), edgescene convention: pixel centres at integers)."""
    from edgescene.core.geometry import unproject_depth

    h, w = depth.shape
    world = unproject_depth(depth[None].astype(np.float64), extrinsics[None], intrinsics[None])[0].reshape(-1, 3)
    valid = np.flatnonzero((depth.reshape(-1) > 0) & np.isfinite(world).all(axis=1))
    map_keys = np.floor(points / voxel_size).astype(np.int64)
    pixel_keys = np.floor(world[valid] / voxel_size).astype(np.int64)
    lo = np.minimum(map_keys.min(axis=0), pixel_keys.min(axis=0)) if len(pixel_keys) else map_keys.min(axis=0)
    hi = np.maximum(map_keys.max(axis=0), pixel_keys.max(axis=0)) if len(pixel_keys) else map_keys.max(axis=0)
    span = hi - lo + 1
    if float(np.prod(span.astype(np.float64))) >= 2.0**62:  # far outliers: keep the map's own box
        inside = np.all((pixel_keys >= map_keys.min(axis=0)) & (pixel_keys <= map_keys.max(axis=0)), axis=1)
        valid, pixel_keys = valid[inside], pixel_keys[inside]
        lo, span = map_keys.min(axis=0), map_keys.max(axis=0) - map_keys.min(axis=0) + 1
    map_ids = _voxel_ids(map_keys, lo, span)
    order = np.argsort(map_ids, kind="stable")
    sorted_ids = map_ids[order]
    ids = _voxel_ids(pixel_keys, lo, span)
    pos = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
    hit = sorted_ids[pos] == ids
    point_index, pixel = order[pos[hit]], valid[hit]
    point_index, first = np.unique(point_index, return_index=True)  # one observation per point and keyframe
    pixel = pixel[first]
    u, v = (pixel % w).astype(np.float64), (pixel // w).astype(np.float64)
    x = (u - resize.offset_x) / resize.scale_x
    y = (v - resize.offset_y) / resize.sy
    in_source = (x >= -0.5) & (x <= resize.src_w - 0.5) & (y >= -0.5) & (y <= resize.src_h - 0.5)
    return point_index[in_source], np.stack((x[in_source], y[in_source]), axis=1)


def export_colmap(
    recon_dir: str | Path,
    out: str | Path | None = None,
    source: str | Path | None = None,
    bundle_adjust: bool = False,
    overwrite: bool = False,
    min_track: int = 2,
    max_error_px: float = 4.0,
) -> ColmapExport:
    """Write the COLMAP model of ``recon_dir`` into ``out`` (default ``recon_dir/colmap``); see the module docstring."""
    pycolmap = _import_pycolmap()
    from PIL import Image

    recon_dir = Path(recon_dir)
    out = Path(out) if out is not None else recon_dir / COLMAP_DIR
    if min_track < 2:
        raise ValueError(f"min_track must be >= 2 (bundle adjustment needs two views of a point), got {min_track}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    cameras = _read_json(recon_dir / "cameras.json")
    source_cams = _read_json(recon_dir / "cameras_source.json")
    report = _read_json(recon_dir / "report.json")
    frames = cameras["frames"]
    if not frames:
        raise ValueError(f"{recon_dir}/cameras.json has no keyframes")
    points, colors = read_ply(recon_dir / "points.ply")
    voxel_size = report.get("map_voxel_size")
    if not voxel_size:
        raise ValueError(
            f"{recon_dir}/report.json does not record the map's voxel size (map_voxel_size): the folder "
            "was written by an older edgescene; reconstruct again to export it"
        )
    images = keyframe_images(frames, source, report.get("config", {}).get("orientation", "none"))

    rec = pycolmap.Reconstruction()
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    for k, frame in enumerate(frames):
        provenance = source_cams["frames"][k]
        resize = Resize.from_provenance(provenance)
        depth = np.load(recon_dir / "depth" / f"{k:05d}.npz")["depth"]
        extrinsics = np.asarray(frame["extrinsics"], np.float64)
        idx, xy = observations(
            points, voxel_size, extrinsics, np.asarray(frame["intrinsics"], np.float64), depth, resize
        )
        seen.append((idx, xy))
        h, w = images[k].shape[:2]
        if (h, w) != tuple(provenance["source_hw"]):
            raise ValueError(f"keyframe {k}: the input image is {w}x{h}, the run saw {provenance['source_hw'][::-1]}")
        k_src = np.asarray(source_cams["intrinsics"][k], np.float64)
        params = [k_src[0, 0], k_src[1, 1], k_src[0, 2] + 0.5, k_src[1, 2] + 0.5]  # COLMAP: pixel centres at +0.5
        rec.add_camera_with_trivial_rig(
            pycolmap.Camera(model="PINHOLE", width=w, height=h, params=params, camera_id=k + 1)
        )
        image = pycolmap.Image(name=f"{k:05d}.jpg", keypoints=xy + 0.5, camera_id=k + 1, image_id=k + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(extrinsics))

    # tracks: every point seen by min_track keyframes or more
    counts = np.zeros(len(points), np.int64)
    for idx, _ in seen:
        counts[idx] += 1
    point_id = np.full(len(points), -1, np.int64)
    for i in np.flatnonzero(counts >= min_track):
        point_id[i] = rec.add_point3D(points[i], pycolmap.Track(), colors[i])
    observed = 0
    for k, (idx, _) in enumerate(seen):
        for j, i in enumerate(idx):
            if point_id[i] >= 0:
                rec.add_observation(int(point_id[i]), pycolmap.TrackElement(k + 1, j))
                observed += 1
    if rec.num_points3D() == 0:
        raise ValueError(
            f"{recon_dir}: no point of the map was measured by {min_track} keyframes or more; nothing to export "
            "(reconstruct more overlapping keyframes)"
        )
    rec.update_point_3d_errors()
    before = float(rec.compute_mean_reprojection_error())
    removed = 0
    if bundle_adjust:
        options = pycolmap.BundleAdjustmentOptions()
        options.refine_focal_length = False
        options.refine_principal_point = False
        options.refine_extra_params = False
        options.print_summary = False
        options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY  # outlier measurements
        options.ceres.loss_function_scale = 1.0  # px
        pycolmap.bundle_adjustment(rec, options)
        rec.update_point_3d_errors()
        # points BA could not place (two nearly parallel rays, or an outlier pixel): drop, as COLMAP does
        bad = [pid for pid, point in rec.points3D.items() if not point.error <= max_error_px]
        for pid in bad:
            rec.delete_point3D(pid)
        removed = len(bad)
    after = float(rec.compute_mean_reprojection_error())

    staging = out.with_name(f".{out.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "sparse" / "0").mkdir(parents=True)
    (staging / "images").mkdir()
    for k, rgb in enumerate(images):
        Image.fromarray(rgb).save(staging / "images" / f"{k:05d}.jpg", quality=95)
    rec.write_binary(str(staging / "sparse" / "0"))
    result = ColmapExport(
        folder=str(out),
        images=rec.num_images(),
        points3D=rec.num_points3D(),
        observations=observed,
        mean_track_length=round(float(rec.compute_mean_track_length()), 3),
        reprojection_error_px=round(after, 4),
        reprojection_error_before_px=round(before, 4) if bundle_adjust else None,
        bundle_adjusted=bundle_adjust,
        points3D_removed=removed,
    )
    (staging / "export.json").write_text(json.dumps(result.to_json(), indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return result


__all__ = ["COLMAP_DIR", "ColmapExport", "export_colmap", "keyframe_images", "observations"]
