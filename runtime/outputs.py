"""Reconstruction outputs: one folder, written atomically, and the writers for what goes in it.

Imports numpy, trimesh and the standard library only (never torch or ``edgescene.models``).

A run writes everything through :class:`OutputFolder`, which stages the files in a hidden folder
beside the destination and renames it into place only when the run finishes, so an interrupted or
failed run never leaves a partial folder at ``out_dir``. Every writer also writes its own file
through :mod:`edgescene.core.atomic`, so it is atomic when used on its own too (the
file's folder must exist; :meth:`OutputFolder.path` creates it).

The folder holds (see CONVENTIONS.md, "Artifacts"): a point cloud as PLY and GLB
(:func:`write_ply`, :func:`write_glb`), cameras as JSON and a TUM trajectory
(:func:`write_cameras_json`, :func:`write_tum`), per-frame depth and confidence as NPZ
(:func:`write_depth_npz`) and a run report (:func:`write_json`).

Coordinates are OpenCV / VGGT: camera x right, y down, z forward; extrinsics are camera-from-world
(S, 3, 4); the first frame is the world frame. Empty point sets are allowed: the PLY is a valid
file with zero vertices and the GLB holds only the cameras (or an empty scene).
All writers validate shapes and raise ValueError naming the argument and the expected shape.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import trimesh

from edgescene.core.atomic import atomic_write, atomic_write_text
from edgescene.core.geometry import inverse_se3, rotmat_to_quat
from edgescene.runtime.glb import GlbNode, glb_parts

__all__ = [
    "OutputFolder",
    "write_ply",
    "write_glb",
    "write_cameras_json",
    "write_tum",
    "write_depth_npz",
    "write_json",
    "CAMERA_CONVENTION",
]

log = logging.getLogger(__name__)

CAMERA_CONVENTION = "OpenCV: x right, y down, z forward; extrinsics camera-from-world"

# OpenCV world (y down, z forward) -> glTF viewers (y up, z towards the viewer).
_Y_UP = np.diag([1.0, -1.0, -1.0, 1.0])


# ----------------------------------------------------------------------------- output folder


def _is_nonempty_dir(p: Path) -> bool:
    return p.is_dir() and any(p.iterdir())


class OutputFolder:
    """Context manager that makes ``out_dir`` appear complete or not at all.

    ``with OutputFolder(out_dir, overwrite=False) as out: write_ply(out.path("points.ply"), ...)``

    On enter it refuses (FileExistsError) an ``out_dir`` that exists and is not empty unless
    ``overwrite`` is set, before any work is done, and creates a hidden staging folder beside
    ``out_dir`` (same file system, so the final rename is atomic). :meth:`path` names files inside
    the staging folder. On a clean exit the check is repeated, any old ``out_dir`` is moved aside,
    the staging folder is renamed to ``out_dir`` and the old one deleted. On an exception
    (KeyboardInterrupt included) the staging folder is deleted, an existing ``out_dir`` is left
    untouched and the exception propagates.
    """

    def __init__(self, out_dir: str | os.PathLike, overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir).expanduser().absolute()
        self.overwrite = bool(overwrite)
        self.staging: Path | None = None

    def _check_destination(self) -> None:
        out = self.out_dir
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"output {out} exists and is not a folder; choose another output path")
        if not self.overwrite and _is_nonempty_dir(out):
            raise FileExistsError(
                f"output folder {out} exists and is not empty; pass --overwrite to replace it, or choose another folder"
            )

    def __enter__(self) -> OutputFolder:
        if self.staging is not None:
            raise RuntimeError("OutputFolder is not re-entrant")
        self._check_destination()
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        while True:  # os.mkdir honours the umask (tempfile.mkdtemp would make it private, 0700)
            staging = self.out_dir.parent / f".{self.out_dir.name}.staging-{secrets.token_hex(4)}"
            try:
                os.mkdir(staging, 0o777)
                break
            except FileExistsError:
                continue
        self.staging = staging
        return self

    def path(self, name: str | os.PathLike) -> Path:
        """Path of ``name`` (relative, e.g. ``"depth/frame_0000.npz"``) inside the staging folder.

        Parent folders are created. Absolute names and names that climb out with ``..`` are refused.
        """
        if self.staging is None:
            raise RuntimeError("OutputFolder.path() is only valid inside the 'with' block")
        rel = PurePosixPath(Path(name).as_posix())
        if rel.is_absolute() or not rel.parts or ".." in rel.parts or str(rel) in ("", "."):
            raise ValueError(f"name: expected a relative path inside the output folder, got {str(name)!r}")
        p = self.staging.joinpath(*rel.parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        staging, self.staging = self.staging, None
        if staging is None:
            raise RuntimeError("OutputFolder.__exit__ without a matching __enter__")
        if exc_type is not None:
            shutil.rmtree(staging, ignore_errors=True)
            return False
        try:
            self._check_destination()
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        out = self.out_dir
        if out.exists() or out.is_symlink():
            old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
            os.rename(out, old)
            try:
                os.rename(staging, out)
            except BaseException:
                os.rename(old, out)
                shutil.rmtree(staging, ignore_errors=True)
                raise
            if old.is_symlink() or not old.is_dir():
                old.unlink()
            else:
                shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(staging, out)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        log.info("wrote output folder %s", out)
        return False


# ----------------------------------------------------------------------------- helpers


def _array(x, name: str, shape: tuple, real: bool = True) -> np.ndarray:
    """``x`` as an array of the given shape; an int in ``shape`` is fixed, a str names a free dim."""
    a = np.asarray(x)
    ok = a.ndim == len(shape) and all(isinstance(d, str) or a.shape[i] == d for i, d in enumerate(shape))
    if real and ok:
        ok = np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
    if not ok:
        dims = ", ".join(str(d) for d in shape)
        raise ValueError(f"{name}: expected real ({dims}), got {a.shape} {a.dtype}")
    return a


def _finite(a: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"{name}: {bad} non-finite values (filter them, e.g. with a confidence mask)")


def _image_hw(image_hw, name: str = "image_hw") -> tuple[int, int]:
    try:
        h, w = (int(v) for v in image_hw)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected (H, W), got {image_hw!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name}: expected positive (H, W), got {image_hw!r}")
    return h, w


def _point_set(points, colors, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    p = _array(points, "points", ("N", 3))
    c = np.asarray(colors)
    if c.shape != p.shape or c.dtype != np.uint8:
        raise ValueError(f"colors: expected uint8 ({p.shape[0]}, 3) like points, got {c.shape} {c.dtype}")
    p = p.astype(dtype, copy=False)  # checked as stored: a float64 beyond float32's range is not finite
    _finite(p, "points")
    return p, c


# ----------------------------------------------------------------------------- point clouds

_PLY_VERTEX = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
)


_PLY_VERTEX_DOUBLE = np.dtype(
    [("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
)


def _ply_header(n: int, kind: str = "float") -> bytes:
    return (
        f"ply\nformat binary_little_endian 1.0\ncomment edgescene\nelement vertex {n}\n"
        f"property {kind} x\nproperty {kind} y\nproperty {kind} z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty uchar alpha\nend_header\n"
    ).encode()


def write_ply(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray, double: bool = False) -> None:
    """Binary PLY point cloud. points: (N, 3) finite (stored float32, or float64 with ``double``:
    projected coordinates such as UTM's hundreds of kilometres keep millimetres only in float64);
    colors: (N, 3) uint8.

    Each vertex is x, y, z float32 and red, green, blue, alpha uint8 (alpha 255), little-endian: the
    layout trimesh writes, packed here in one numpy record array (trimesh's exporter takes about 8x
    as long for a million points). N = 0 writes a valid PLY with zero vertices.
    """
    p, c = _point_set(points, colors, np.float64 if double else np.float32)
    vertices = np.empty(len(p), dtype=_PLY_VERTEX_DOUBLE if double else _PLY_VERTEX)
    for j, axis in enumerate("xyz"):
        vertices[axis] = p[:, j]
    for j, channel in enumerate(("red", "green", "blue")):
        vertices[channel] = c[:, j]
    vertices["alpha"] = 255
    with atomic_write(path) as f:
        f.write(_ply_header(len(p), "double" if double else "float"))
        f.write(vertices.data.cast("B"))


def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The point cloud :func:`write_ply` wrote: points (N, 3) float64 and colours (N, 3) uint8."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {path.parent} a folder written by `edgescene reconstruct`?")
    cloud = trimesh.load(path, file_type="ply")
    points = np.asarray(getattr(cloud, "vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    colors = np.asarray(getattr(cloud, "colors", np.zeros((len(points), 4))), dtype=np.uint8).reshape(-1, 4)[:, :3]
    return points, colors


THUMBNAIL_WIDTH = 96


def thumbnail(rgb: np.ndarray, width: int = THUMBNAIL_WIDTH) -> np.ndarray:
    """(H, W, 3) uint8 -> a copy at most about ``width`` pixels wide (every n-th pixel, no resampling)."""
    step = max(1, int(np.ceil(rgb.shape[1] / width)))
    return np.ascontiguousarray(rgb[::step, ::step])


def _check_cameras(cameras) -> list[tuple[np.ndarray, np.ndarray, tuple[int, int]]]:
    out = []
    for i, cam in enumerate(cameras):
        try:
            K, E, hw = cam
        except (TypeError, ValueError):
            raise ValueError(f"cameras[{i}]: expected (intrinsics (3, 3), extrinsics (3, 4), (H, W))") from None
        K = _array(K, f"cameras[{i}] intrinsics", (3, 3)).astype(np.float64)
        E = _array(E, f"cameras[{i}] extrinsics", (3, 4)).astype(np.float64)
        _finite(K, f"cameras[{i}] intrinsics")
        _finite(E, f"cameras[{i}] extrinsics")
        if abs(np.linalg.det(K)) < 1e-12:
            raise ValueError(f"cameras[{i}] intrinsics: singular matrix {K.tolist()}")
        out.append((K, E, _image_hw(hw, f"cameras[{i}] image_hw")))
    return out


def _frustum(K: np.ndarray, E: np.ndarray, hw: tuple[int, int], depth: float) -> np.ndarray:
    """World vertices (8, 3) of a frustum: centre, 4 image corners at ``depth``, 3 of an 'up' mark.

    Corners are unprojected with ``K^-1 (u, v, 1) * depth`` in OpenCV camera axes (image row 0 at
    the top, i.e. towards camera -y) and taken to the world with camera-to-world = inverse(E).
    The mark is a triangle over the image's top edge, so viewers show which way is up.
    """
    h, w = hw
    pix = np.array([[0, 0], [w, 0], [w, h], [0, h], [w / 4, 0], [3 * w / 4, 0], [w / 2, -h / 4]], dtype=np.float64)
    rays = np.linalg.solve(K, np.concatenate([pix, np.ones((len(pix), 1))], axis=1).T).T
    cam = np.concatenate([np.zeros((1, 3)), rays / rays[:, 2:3] * depth], axis=0)
    c2w = inverse_se3(E)
    return cam @ c2w[:, :3].T + c2w[:, 3]


_FRUSTUM_EDGES = [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (3, 4), (4, 1), (5, 7), (7, 6)]


def _camera_colour(i: int, n: int) -> np.ndarray:
    """RGBA uint8 from blue (first camera) to red (last)."""
    a = i / max(n - 1, 1)
    return np.array([round(255 * a), 64, round(255 * (1 - a)), 255], dtype=np.uint8)


def _opaque_rgba(colors: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB -> (N, 4) uint8 RGBA with alpha 255, packed as little-endian uint32 words
    (about twice as fast as filling the columns of an (N, 4) array for a million points)."""
    c = colors.astype(np.uint32)
    words = c[:, 0] | (c[:, 1] << 8) | (c[:, 2] << 16) | np.uint32(0xFF000000)
    return words.astype("<u4", copy=False).view(np.uint8).reshape(-1, 4)


def write_glb(
    path: str | os.PathLike,
    points: np.ndarray,
    colors: np.ndarray,
    cameras: list | None = None,
    camera_scale: float | None = None,
    y_up: bool = True,
) -> None:
    """glTF binary scene: the point cloud (node ``points``) and a line frustum per camera
    (nodes ``camera_000``, ``camera_001``, ..., coloured blue to red in frame order).

    points: (N, 3) finite; colors: (N, 3) uint8; cameras: optional list of
    ``(intrinsics (3, 3), extrinsics (3, 4) camera-from-world, image_hw (H, W))``.
    camera_scale: frustum depth in world units; default 5% of the scene's diagonal (robust extent
    of the points, 2nd to 98th percentile, together with the camera centres).
    Vertex data is in the world frame of the other outputs (OpenCV axes, equal to the PLY); with
    ``y_up`` every node carries the rotation diag(1, -1, -1) so glTF viewers (y up) show the scene
    upright. N = 0 writes only the cameras, or a valid empty scene.
    """
    p, c = _point_set(points, colors)
    cams = _check_cameras(cameras or [])
    if camera_scale is not None and not (math.isfinite(camera_scale) and camera_scale > 0):
        raise ValueError(f"camera_scale: expected None or a finite value > 0, got {camera_scale}")
    node = _Y_UP if y_up else np.eye(4)
    nodes = []
    if len(p):
        nodes.append(GlbNode("points", p, _opaque_rgba(c), matrix=node))
    if cams:
        if camera_scale is None:
            centres = np.stack([inverse_se3(E)[:, 3] for _, E, _ in cams])
            extent = [centres.min(0), centres.max(0)]
            if len(p):  # from a sample of at most ~100k points: a robust extent, not an exact one
                lo, hi = np.percentile(p[:: max(1, len(p) // 100_000)], [2, 98], axis=0)
                extent = [np.minimum(extent[0], lo), np.maximum(extent[1], hi)]
            diag = float(np.linalg.norm(extent[1] - extent[0]))
            camera_scale = 0.05 * (diag if diag > 0 else 1.0)
        for i, (K, E, hw) in enumerate(cams):
            verts = _frustum(K, E, hw, float(camera_scale))
            segments = verts[np.array(_FRUSTUM_EDGES)].reshape(-1, 3)
            colour = np.tile(_camera_colour(i, len(cams)), (len(segments), 1))
            nodes.append(GlbNode(f"camera_{i:03d}", segments, colour, lines=True, matrix=node))
    with atomic_write(path) as f:
        for part in glb_parts(nodes):
            f.write(part)


# ----------------------------------------------------------------------------- cameras


def _frame_field(frame, key: str, default=None):
    if isinstance(frame, Mapping):
        return frame.get(key, default)
    return getattr(frame, key, default)


def write_cameras_json(
    path: str | os.PathLike,
    frames: list,
    intrinsics: np.ndarray,
    extrinsics: np.ndarray,
    image_hw,
    intrinsics_source: str | None = None,
) -> None:
    """Cameras as JSON.

    frames: S dicts (or objects with attributes) giving ``index`` (default: position),
    ``source`` (file or video the frame came from; default null) and ``timestamp_s`` (default
    null); intrinsics: (S, 3, 3) in pixels of ``image_hw``; extrinsics: (S, 3, 4) camera-from-world;
    image_hw: (H, W) of the images the cameras refer to. Writes
    ``{"convention": ..., "image_size": [H, W], "frames": [{"index", "source", "timestamp_s",
    "intrinsics" 3x3, "extrinsics" 3x4, "camera_to_world" 4x4}, ...]}``, and ``"intrinsics_source"``
    (``"predicted"`` by the model or ``"given"`` by a calibration) when ``intrinsics_source`` is set.
    """
    frames = list(frames)
    s = len(frames)
    K = _array(intrinsics, "intrinsics", (s, 3, 3)).astype(np.float64)
    E = _array(extrinsics, "extrinsics", (s, 3, 4)).astype(np.float64)
    _finite(K, "intrinsics")
    _finite(E, "extrinsics")
    h, w = _image_hw(image_hw)
    c2w = np.zeros((s, 4, 4))
    c2w[:, :3] = inverse_se3(E)
    c2w[:, 3, 3] = 1.0
    entries = []
    for i, frame in enumerate(frames):
        ts = _frame_field(frame, "timestamp_s")
        source = _frame_field(frame, "source")
        entries.append(
            {
                "index": int(_frame_field(frame, "index", i)),
                "source": None if source is None else str(source),
                "timestamp_s": None if ts is None else float(ts),
                "intrinsics": K[i].tolist(),
                "extrinsics": E[i].tolist(),
                "camera_to_world": c2w[i].tolist(),
            }
        )
    head: dict = {"convention": CAMERA_CONVENTION, "image_size": [h, w]}
    if intrinsics_source is not None:
        head["intrinsics_source"] = intrinsics_source
    write_json(path, {**head, "frames": entries})


def write_tum(path: str | os.PathLike, timestamps: np.ndarray, extrinsics: np.ndarray) -> None:
    """Trajectory in the TUM RGB-D format, one line per frame: ``timestamp tx ty tz qx qy qz qw``.

    timestamps: (S,) seconds; extrinsics: (S, 3, 4) camera-from-world. Each line is the
    CAMERA-TO-WORLD pose (camera centre in the world and its orientation; quaternion scalar-last,
    w >= 0), as TUM tools such as evo expect. A header of '#' comment lines states this.
    """
    E = _array(extrinsics, "extrinsics", ("S", 3, 4)).astype(np.float64)
    ts = _array(timestamps, "timestamps", (E.shape[0],)).astype(np.float64)
    _finite(E, "extrinsics")
    _finite(ts, "timestamps")
    c2w = inverse_se3(E)
    q = rotmat_to_quat(c2w[:, :, :3])
    lines = [
        "# edgescene trajectory, TUM RGB-D format: camera-to-world poses "
        "(OpenCV camera axes: x right, y down, z forward; first frame = world)",
        "# timestamp tx ty tz qx qy qz qw",
    ]
    for i in range(len(ts)):
        nums = " ".join(f"{v:.9g}" for v in (*c2w[i, :, 3], *q[i]))
        lines.append(f"{ts[i]:.6f} {nums}")
    atomic_write_text(path, "\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- depth, report


def write_depth_npz(path: str | os.PathLike, depth: np.ndarray, conf: np.ndarray, **extra) -> None:
    """NPZ of one frame (``np.load`` reads it): ``depth`` (H, W) and ``conf`` (H, W), both float32.

    Inputs of other real dtypes are converted to float32 (never float16: depth needs the
    precision). ``extra`` arrays or scalars are stored under their keyword names as given.
    Stored without compression: float maps deflate by only ~19 % (137 vs 169 KB a frame on the
    sample video, level 1), and deflating took more CPU than fusing the frame (3 ms vs 4.4 ms
    at 126x168), work that competes with the model on a small CPU.
    """
    d = _array(depth, "depth", ("H", "W"))
    c = _array(conf, "conf", d.shape)
    arrays = {"depth": d.astype(np.float32, copy=False), "conf": c.astype(np.float32, copy=False)}
    for key, value in extra.items():
        arrays[key] = np.asarray(value)
        if arrays[key].dtype == object:
            raise ValueError(f"{key}: expected an array or a scalar, got {type(value).__name__}")
    with atomic_write(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as archive:
        for key, value in arrays.items():  # the layout np.load reads: one KEY.npy per array
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:  # straight to the file: no copy
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def rescale_depth_npz(path: str | os.PathLike, factor: float) -> None:
    """Multiply the ``depth`` of a :func:`write_depth_npz` file by ``factor`` (> 0), keeping every
    other array (loop closure rescales a window's frames with its correction); atomic."""
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"factor: expected a finite value > 0, got {factor}")
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    if "depth" not in arrays or "conf" not in arrays:
        raise ValueError(f"{path}: not a depth file of edgescene (no depth / conf arrays)")
    depth, conf = arrays.pop("depth"), arrays.pop("conf")
    write_depth_npz(path, depth.astype(np.float64) * factor, conf, **arrays)


def _jsonable(obj):
    """Plain JSON values: numpy scalars and arrays, tuples and paths converted; NaN / inf -> null."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    raise TypeError(f"write_json: cannot store {type(obj).__name__} in JSON")


def write_json(path: str | os.PathLike, data) -> None:
    """JSON file (indent 1, key order kept), e.g. the run report.

    numpy values, tuples and paths are converted; non-finite floats become null (strict JSON).
    """
    text = json.dumps(_jsonable(data), indent=1, sort_keys=False, allow_nan=False)
    atomic_write_text(path, text + "\n")


_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])(?:[A-Za-z]:)?[/\\](?:[^\s/\\'\"#:,;()]+[/\\])+([^\s/\\'\"#:,;()]+)")


def redact_paths(value):
    """``value`` (a string, or JSON-like lists and dicts of them) with every absolute path reduced to
    its last part: ``"video /srv/jobs/ab12/input/clip.mp4 (1920x1080)"`` becomes
    ``"video clip.mp4 (1920x1080)"``. What a service hands a client never names the server's folders."""
    if isinstance(value, str):
        return _ABSOLUTE_PATH.sub(r"\1", value)
    if isinstance(value, list | tuple):
        return type(value)(redact_paths(v) for v in value)
    if isinstance(value, dict):
        return {k: redact_paths(v) for k, v in value.items()}
    return value
