"""Pseudo ground truth for real footage: cameras and sparse depth from structure-from-motion (pycolmap).

``edgescene preprocess ... --poses colmap`` runs, for each sequence of a preprocessed folder (a video,
or one folder of images), COLMAP's pipeline through pycolmap: SIFT features, sequential matching
(each frame with the next ``overlap``), incremental mapping with one SIMPLE_PINHOLE camera per
sequence (with the sequence's known intrinsics, fixed, when ``--metadata-json`` gave every frame the
same ones: SfM's focal length is loosely constrained on short sequences, 277 to 427 px found for a
true 240 on a 16-frame synthetic orbit, depending on the thread count). Everything runs seeded on
one thread, so the same frames give the same poses. The largest model found gives every frame it registered:

- ``camera``: intrinsics (COLMAP's pixel centres at +0.5 moved to this project's integer centres)
  and the camera-from-world extrinsics, in the sequence's own frame and scale (SfM has no metric
  scale; the VGGT trainer normalises each sample's scale anyway);
- ``depth``: a sparse depth map (``depth_colmap/<entry>.npy``, float32, z along the camera axis, 0
  where no 3D point was observed) holding the depth of each observation of a triangulated point.

Frames SfM could not register keep no camera and no depth, so the supervised trainer uses the
registered ones (its depth loss only counts pixels with depth). Entries that already carry a camera
and depth (rendered data, metadata) are left as they are. Needs pycolmap (``pip install
'edgescene[mapping]'``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np

from edgescene.core.manifest import Entry, read_manifest, resolve_inside, write_manifest

DEPTH_DIR = "depth_colmap"
INSTALL_HINT = "pip install 'edgescene[mapping]' (pycolmap)"

__all__ = ["DEPTH_DIR", "SequencePoses", "estimate_poses", "sequence_groups"]


@dataclass
class SequencePoses:
    """What SfM made of one sequence."""

    sequence: str
    frames: int
    registered: int
    points3D: int
    reprojection_error_px: float | None
    focal_px: float | None
    note: str = ""


def sequence_groups(entries: list[Entry]) -> dict[str, list[Entry]]:
    """Sequences of frames: the manifest's own (a video, a synthetic scene), ordered by frame index,
    and one per folder for images in none (name order); tiles of a large image are no sequence."""
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        if entry.sequence is not None:
            groups.setdefault(entry.sequence, []).append(entry)
        elif entry.tile is None:
            groups.setdefault(f"folder:{PurePosixPath(entry.source or entry.path).parent}", []).append(entry)
    return {
        name: sorted(es, key=lambda e: (e.frame_index is None, e.frame_index or 0, e.path))
        for name, es in groups.items()
    }


def _pycolmap():
    try:
        import pycolmap
    except ImportError as exc:
        raise ImportError(f"--poses colmap needs pycolmap: {INSTALL_HINT} ({exc})") from exc
    return pycolmap


def _eight_bit(path: Path, target: Path) -> None:
    """The frame as an 8-bit PNG SIFT can read, decoded by the one decoder
    (:mod:`edgescene.core.images`); 16-bit IR stretched from its 2nd..98th percentile."""
    from PIL import Image

    from edgescene.core.images import decode_image, decode_image_float, probe_image
    from edgescene.train.data.readers import percentile_scale

    info = probe_image(path, what=f"image {path}")
    if info.bits > 8:
        img, _ = percentile_scale(decode_image_float(path, what=f"image {path}")[..., :1])
    else:
        img = decode_image(path, what=f"image {path}")
    Image.fromarray(img[..., 0] if info.channels <= 2 else img).save(target)


def known_intrinsics(entries: list[Entry]) -> np.ndarray | None:
    """The sequence's 3x3 intrinsics when every frame carries the same ones (``metadata["intrinsics_scaled"]``
    from ``--metadata-json``, in the processed image's pixels), else None."""
    found = [e.metadata.get("intrinsics_scaled") if e.metadata else None for e in entries]
    if not found or any(k is None for k in found):
        return None
    K = np.asarray(found[0], np.float64)
    if K.shape != (3, 3) or any(not np.allclose(np.asarray(k, np.float64), K) for k in found):
        return None
    return K


def _reconstruct(pycolmap, frames: list[Path], work: Path, overlap: int, K: np.ndarray | None = None):
    """The largest incremental-mapping model of these frames (or None) and the image names used.
    ``K``: known intrinsics (this project's pixel convention): used as COLMAP's camera and kept fixed."""
    images = work / "images"
    images.mkdir(parents=True)
    names = [f"{i:06d}.png" for i in range(len(frames))]
    for src, name in zip(frames, names, strict=True):
        _eight_bit(src, images / name)
    database = work / "database.db"
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = "SIMPLE_PINHOLE"
    if K is not None:  # COLMAP's pixel centres are at +0.5
        f = float(np.sqrt(K[0, 0] * K[1, 1]))
        reader.camera_params = f"{f},{K[0, 2] + 0.5},{K[1, 2] + 0.5}"
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.sift.peak_threshold = 0.002  # small frames: more, weaker features
    extraction.num_threads = 1  # one thread everywhere: the same frames give the same poses
    pycolmap.extract_features(
        database, images, image_names=names, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
        extraction_options=extraction, device=pycolmap.Device.cpu,
    )  # fmt: skip
    pairing = pycolmap.SequentialPairingOptions()
    pairing.overlap = overlap
    pycolmap.set_random_seed(0)  # RANSAC and the mapper draw samples: the same frames give the same poses
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = 1
    pycolmap.match_sequential(database, matching_options=matching, pairing_options=pairing, device=pycolmap.Device.cpu)
    options = pycolmap.IncrementalPipelineOptions()
    options.random_seed = 0
    options.num_threads = 1  # multi-threaded bundle adjustment sums in varying order: results would drift
    options.ba_refine_principal_point = False
    options.ba_refine_focal_length = K is None  # known: SfM must not move it
    models = pycolmap.incremental_mapping(database, images, work / "sparse", options)
    if not models:
        return None, names
    return max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D())), names


def _sparse_depth(pycolmap_image, reconstruction, hw: tuple[int, int], extrinsics: np.ndarray) -> np.ndarray:
    """(H, W) float32 depth of the image's observations of triangulated points, 0 elsewhere."""
    h, w = hw
    depth = np.zeros((h, w), np.float32)
    for point in pycolmap_image.points2D:
        if not point.has_point3D():
            continue
        xyz = reconstruction.points3D[point.point3D_id].xyz
        z = float(extrinsics[2, :3] @ xyz + extrinsics[2, 3])
        u, v = int(round(point.xy[0] - 0.5)), int(round(point.xy[1] - 0.5))
        if z > 0 and 0 <= u < w and 0 <= v < h:
            depth[v, u] = z if depth[v, u] == 0 else min(depth[v, u], z)
    return depth


def estimate_poses(
    folder: str | Path,
    min_frames: int = 3,
    overlap: int = 10,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> list[SequencePoses]:
    """Run SfM on each sequence of the preprocessed ``folder`` and write cameras and sparse depth into
    its manifest (atomically, at the end). ``overwrite``: redo frames that already have a camera or depth."""
    pycolmap = _pycolmap()
    folder = Path(folder)
    manifest = read_manifest(folder)
    updated: dict[str, Entry] = {}
    results: list[SequencePoses] = []
    for name, entries in sequence_groups(manifest.entries).items():
        todo = {e.id for e in entries if overwrite or (e.camera is None and e.depth is None)}
        if len(entries) < min_frames or not todo:
            note = "already has cameras and depth" if not todo else f"fewer than {min_frames} frames"
            results.append(SequencePoses(name, len(entries), 0, 0, None, None, note))
            continue
        with tempfile.TemporaryDirectory(prefix="edgescene-sfm-") as tmp:
            frames = [resolve_inside(folder, e.path) for e in entries]
            model, names = _reconstruct(pycolmap, frames, Path(tmp), overlap, known_intrinsics(entries))
            if model is None:
                results.append(SequencePoses(name, len(entries), 0, 0, None, None, "SfM registered no frames"))
                log(f"poses: {name}: SfM found no model ({len(entries)} frames: too little overlap or texture?)")
                continue
            by_name = {img.name: img for img in model.images.values() if img.has_pose}
            focal = None
            for entry, image_name in zip(entries, names, strict=True):
                image = by_name.get(image_name)
                if image is None or entry.id not in todo:
                    continue
                camera = model.cameras[image.camera_id]
                f, cx, cy = (float(v) for v in camera.params[:3])
                focal = f
                K = np.array([[f, 0.0, cx - 0.5], [0.0, f, cy - 0.5], [0.0, 0.0, 1.0]])
                E = np.asarray(image.cam_from_world().matrix(), np.float64)
                depth = _sparse_depth(image, model, (camera.height, camera.width), E)
                relative = f"{DEPTH_DIR}/{entry.id.replace('/', '_').replace('#', '_')}.npy"
                (folder / DEPTH_DIR).mkdir(exist_ok=True)
                np.save(folder / relative, depth)
                updated[entry.id] = replace(
                    entry, camera={"intrinsics": K.tolist(), "extrinsics": E.tolist()}, depth=relative
                )
            results.append(
                SequencePoses(
                    name,
                    len(entries),
                    len(by_name),
                    model.num_points3D(),
                    round(float(model.compute_mean_reprojection_error()), 4),
                    focal,
                )  # fmt: skip
            )
            log(
                f"poses: {name}: {len(by_name)} of {len(entries)} frames registered, {model.num_points3D()} points, "
                f"reprojection {results[-1].reprojection_error_px} px"
            )
    if updated:
        manifest.entries = [updated.get(e.id, e) for e in manifest.entries]
        write_manifest(manifest, folder)
    (folder / "poses_colmap.json").write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    return results
