"""Tests for edgescene.runtime.outputs (numpy + trimesh, fast)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import trimesh

from edgescene.core import geometry as g
from edgescene.runtime.outputs import (
    CAMERA_CONVENTION,
    OutputFolder,
    write_cameras_json,
    write_depth_npz,
    write_glb,
    write_json,
    write_ply,
    write_tum,
)


def axis_angle(axis, angle: float) -> np.ndarray:
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def cameras(s: int = 3, h: int = 48, w: int = 64):
    """Intrinsics (S, 3, 3) and camera-from-world extrinsics (S, 3, 4); frame 0 is the world."""
    K = np.tile(np.array([[60.0, 0, w / 2], [0, 60.0, h / 2], [0, 0, 1]]), (s, 1, 1))
    E = np.zeros((s, 3, 4))
    for i in range(s):
        R = axis_angle([0.2, 1.0, 0.1], 0.3 * i)
        centre = np.array([0.5 * i, 0.1 * i, -0.2 * i])
        E[i, :, :3] = R.T  # world-from-camera rotation R -> camera-from-world R^T
        E[i, :, 3] = -R.T @ centre
    return K, E, (h, w)


def cloud(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 256, size=(n, 3)).astype(np.uint8)


# ----------------------------------------------------------------------------- OutputFolder


def test_output_folder_success_moves_files(tmp_path):
    out = tmp_path / "run"
    with OutputFolder(out) as folder:
        folder.path("report.json").write_text("{}")
        folder.path("depth/frame_0000.npz").write_bytes(b"x")
        assert not out.exists()  # nothing visible until the end
        assert folder.staging.parent == tmp_path and folder.staging.name.startswith(".")
    assert (out / "report.json").read_text() == "{}"
    assert (out / "depth" / "frame_0000.npz").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging left behind


def test_output_folder_exception_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom"), OutputFolder(out) as folder:
        folder.path("points.ply").write_bytes(b"partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []

    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(KeyboardInterrupt), OutputFolder(out, overwrite=True) as folder:
        folder.path("points.ply").write_bytes(b"partial")
        raise KeyboardInterrupt
    assert [p.name for p in out.iterdir()] == ["old.txt"] and (out / "old.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_output_folder_refuses_existing_on_enter(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    ran = []
    with pytest.raises(FileExistsError, match="--overwrite"), OutputFolder(out):
        ran.append(True)
    assert ran == [] and (out / "old.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    with OutputFolder(out, overwrite=True) as folder:
        folder.path("new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]

    empty = tmp_path / "empty"
    empty.mkdir()
    with OutputFolder(empty) as folder:  # an empty folder is fine without --overwrite
        folder.path("a.txt").write_text("a")
    assert (empty / "a.txt").exists()


def test_output_folder_refuses_existing_created_during_run(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FileExistsError, match="--overwrite"), OutputFolder(out) as folder:
        folder.path("a.txt").write_text("a")
        out.mkdir()
        (out / "other.txt").write_text("someone else")
    assert [p.name for p in out.iterdir()] == ["other.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_output_folder_path_stays_inside(tmp_path):
    with pytest.raises(ValueError, match="name"), OutputFolder(tmp_path / "run") as folder:
        folder.path("../escape.txt")
    with pytest.raises(ValueError, match="name"), OutputFolder(tmp_path / "run") as folder:
        folder.path("/etc/passwd")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- point clouds


def test_ply_round_trip(tmp_path):
    pts, col = cloud()
    write_ply(tmp_path / "points.ply", pts, col)
    loaded = trimesh.load(tmp_path / "points.ply")
    assert isinstance(loaded, trimesh.PointCloud)
    np.testing.assert_allclose(loaded.vertices, pts, atol=1e-6)
    np.testing.assert_array_equal(loaded.colors[:, :3], col)


def test_ply_empty_is_valid(tmp_path):
    write_ply(tmp_path / "empty.ply", np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    loaded = trimesh.load(tmp_path / "empty.ply")
    assert len(getattr(loaded, "vertices", [])) == 0


def test_point_writers_validate(tmp_path):
    pts, col = cloud(10)
    with pytest.raises(ValueError, match=r"points: expected real \(N, 3\)"):
        write_ply(tmp_path / "a.ply", pts[:, :2], col)
    with pytest.raises(ValueError, match="colors"):
        write_ply(tmp_path / "a.ply", pts, col[:5])
    with pytest.raises(ValueError, match="colors"):
        write_glb(tmp_path / "a.glb", pts, col.astype(np.float32))
    bad = pts.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        write_ply(tmp_path / "a.ply", bad, col)
    K, E, hw = cameras(1)
    with pytest.raises(ValueError, match=r"extrinsics: expected real \(3, 4\)"):
        write_glb(tmp_path / "a.glb", pts, col, cameras=[(K[0], E[0, :, :3], hw)])
    assert list(tmp_path.iterdir()) == []


def test_glb_round_trip_with_cameras(tmp_path):
    pts, col = cloud()
    K, E, hw = cameras(3)
    cams = [(K[i], E[i], hw) for i in range(3)]
    write_glb(tmp_path / "scene.glb", pts, col, cameras=cams, camera_scale=0.2)
    scene = trimesh.load(tmp_path / "scene.glb")
    assert isinstance(scene, trimesh.Scene)
    names = set(scene.geometry)
    assert {"points", "camera_000", "camera_001", "camera_002"} <= names
    pc = scene.geometry["points"]
    assert len(pc.vertices) == len(pts)
    np.testing.assert_allclose(pc.vertices, pts, atol=1e-6)  # same world frame as the PLY
    np.testing.assert_array_equal(pc.colors[:, :3], col)
    # Each frustum's apex is its camera centre (camera-to-world translation), and the image corners
    # lie camera_scale in front of the camera along its +z (OpenCV forward) axis.
    c2w = g.inverse_se3(E)
    for i in range(3):
        v = np.asarray(scene.geometry[f"camera_{i:03d}"].vertices)
        centre = c2w[i, :, 3]
        dist = np.linalg.norm(v - centre, axis=1)
        assert dist.min() < 1e-6
        depth = (v - centre) @ c2w[i, :, 2]  # along the camera's forward axis in the world
        np.testing.assert_allclose(depth[dist > 1e-6], 0.2, atol=1e-6)
    # Nodes carry the y-up rotation for glTF viewers.
    transform, _ = scene.graph["points"]
    np.testing.assert_allclose(transform, np.diag([1.0, -1.0, -1.0, 1.0]))


def test_glb_default_camera_scale_and_empty(tmp_path):
    pts, col = cloud()
    K, E, hw = cameras(2)
    write_glb(tmp_path / "a.glb", pts, col, cameras=[(K[i], E[i], hw) for i in range(2)])
    scene = trimesh.load(tmp_path / "a.glb")
    v = np.asarray(scene.geometry["camera_000"].vertices)
    extent = np.linalg.norm(pts.max(0) - pts.min(0))
    assert 0 < np.linalg.norm(v, axis=1).max() < 0.1 * extent  # frustum small next to the scene

    write_glb(tmp_path / "cams_only.glb", np.zeros((0, 3)), np.zeros((0, 3), np.uint8), cameras=[(K[0], E[0], hw)])
    assert set(trimesh.load(tmp_path / "cams_only.glb").geometry) == {"camera_000"}
    write_glb(tmp_path / "empty.glb", np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    empty = trimesh.load(tmp_path / "empty.glb")
    assert isinstance(empty, trimesh.Scene) and len(empty.geometry) == 0


# ----------------------------------------------------------------------------- cameras


def test_cameras_json_content(tmp_path):
    K, E, hw = cameras(3)
    frames = [{"index": 10 * i, "source": f"video.mp4#{i}", "timestamp_s": 0.5 * i} for i in range(3)]
    write_cameras_json(tmp_path / "cameras.json", frames, K, E, hw)
    data = json.loads((tmp_path / "cameras.json").read_text())
    assert data["convention"] == CAMERA_CONVENTION
    assert data["convention"] == "OpenCV: x right, y down, z forward; extrinsics camera-from-world"
    assert data["image_size"] == [48, 64]
    assert len(data["frames"]) == 3
    inv = g.inverse_se3(E)
    for i, f in enumerate(data["frames"]):
        assert set(f) == {"index", "source", "timestamp_s", "intrinsics", "extrinsics", "camera_to_world"}
        assert f["index"] == 10 * i and f["source"] == f"video.mp4#{i}" and f["timestamp_s"] == 0.5 * i
        np.testing.assert_allclose(f["intrinsics"], K[i])
        np.testing.assert_allclose(f["extrinsics"], E[i])
        c2w = np.asarray(f["camera_to_world"])
        assert c2w.shape == (4, 4)
        np.testing.assert_allclose(c2w[:3], inv[i], atol=1e-12)
        np.testing.assert_allclose(c2w[3], [0, 0, 0, 1])


def test_cameras_json_validates(tmp_path):
    K, E, hw = cameras(3)
    frames = [{"index": i} for i in range(3)]
    with pytest.raises(ValueError, match=r"extrinsics: expected real \(3, 3, 4\)"):
        write_cameras_json(tmp_path / "c.json", frames, K, E[:2], hw)
    with pytest.raises(ValueError, match=r"intrinsics: expected real \(3, 3, 3\)"):
        write_cameras_json(tmp_path / "c.json", frames, K[:, :2], E, hw)
    with pytest.raises(ValueError, match="image_hw"):
        write_cameras_json(tmp_path / "c.json", frames, K, E, (48,))
    assert not (tmp_path / "c.json").exists()


def test_tum_format_and_camera_to_world(tmp_path):
    E = np.zeros((2, 3, 4))
    E[0, :, :3] = np.eye(3)
    R = axis_angle([0, 0, 1], math.pi / 2)  # camera 1: rotated 90 degrees about world z ...
    E[1, :, :3] = R.T
    E[1, :, 3] = -R.T @ np.array([1.0, 0.0, 0.0])  # ... with its centre at world x = +1
    write_tum(tmp_path / "traj.txt", [0.0, 0.033333], E)
    lines = (tmp_path / "traj.txt").read_text().splitlines()
    assert lines[0].startswith("#") and "camera-to-world" in lines[0]
    rows = [ln for ln in lines if not ln.startswith("#")]
    assert len(rows) == 2
    vals = [[float(x) for x in r.split()] for r in rows]
    assert all(len(v) == 8 for v in vals)
    assert rows[1].split()[0] == "0.033333"
    np.testing.assert_allclose(vals[0][1:], [0, 0, 0, 0, 0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(vals[1][1:4], [1.0, 0.0, 0.0], atol=1e-9)  # tx = +1
    q = np.array(vals[1][4:])
    np.testing.assert_allclose(q, g.rotmat_to_quat(R), atol=1e-8)  # world-from-camera rotation
    np.testing.assert_allclose(q, [0, 0, math.sin(math.pi / 4), math.cos(math.pi / 4)], atol=1e-8)


def test_tum_validates(tmp_path):
    E = np.tile(np.eye(3, 4), (3, 1, 1))
    with pytest.raises(ValueError, match="timestamps"):
        write_tum(tmp_path / "t.txt", [0.0, 1.0], E)
    with pytest.raises(ValueError, match="extrinsics"):
        write_tum(tmp_path / "t.txt", [0.0, 1.0, 2.0], E[:, :, :3])


# ----------------------------------------------------------------------------- depth, report


def test_depth_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 3.0, size=(24, 32)).astype(np.float32)
    conf = rng.uniform(1.0, 10.0, size=(24, 32))  # float64 in -> float32 stored
    write_depth_npz(tmp_path / "frame_0000.npz", depth, conf, index=7, timestamp_s=0.25)
    assert [p.name for p in tmp_path.iterdir()] == ["frame_0000.npz"]  # no '.npz.npz', no temp file
    with np.load(tmp_path / "frame_0000.npz") as z:
        assert z["depth"].dtype == np.float32 and z["conf"].dtype == np.float32
        np.testing.assert_array_equal(z["depth"], depth)
        np.testing.assert_array_equal(z["conf"], conf.astype(np.float32))
        assert int(z["index"]) == 7 and float(z["timestamp_s"]) == 0.25
        assert z["index"].shape == () and z["timestamp_s"].shape == ()  # scalars stay scalars
    with pytest.raises(ValueError, match=r"depth: expected real \(H, W\)"):
        write_depth_npz(tmp_path / "x.npz", depth[None], conf)
    with pytest.raises(ValueError, match=r"conf: expected real \(24, 32\)"):
        write_depth_npz(tmp_path / "x.npz", depth, conf[:, :5])


def test_write_json(tmp_path):
    report = {
        "frames": np.int64(3),
        "fps": np.float32(12.5),
        "bad": float("nan"),
        "hw": (48, 64),
        "path": tmp_path,
        "z": 1,
        "a": [np.arange(2)],
    }
    write_json(tmp_path / "report.json", report)
    text = (tmp_path / "report.json").read_text()
    data = json.loads(text)
    assert list(data) == ["frames", "fps", "bad", "hw", "path", "z", "a"]  # key order kept
    assert data == {"frames": 3, "fps": 12.5, "bad": None, "hw": [48, 64], "path": str(tmp_path), "z": 1, "a": [[0, 1]]}
    assert text.startswith('{\n "frames"')  # indent=1
