"""Tests for edgescene.runtime.glb and the PLY / GLB files of edgescene.runtime.outputs: the files are
what the specification and trimesh (the reader users and these tests use) expect."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import trimesh

from edgescene.runtime.glb import GlbNode, glb_parts
from edgescene.runtime.outputs import _FRUSTUM_EDGES, _camera_colour, _frustum, read_ply, write_glb, write_ply


def glb_file(nodes) -> bytes:
    return b"".join(bytes(p) for p in glb_parts(nodes))


def chunks(data: bytes) -> tuple[dict, bytes]:
    """The JSON document and binary chunk of a GLB, checking the container's framing."""
    magic, version, total = struct.unpack_from("<4sII", data)
    assert (magic, version, total) == (b"glTF", 2, len(data))
    length, kind = struct.unpack_from("<I4s", data, 12)
    assert kind == b"JSON" and length % 4 == 0
    doc = json.loads(data[20 : 20 + length])
    rest = data[20 + length :]
    if not rest:
        return doc, b""
    blength, bkind = struct.unpack_from("<I4s", rest)
    assert bkind == b"BIN\0" and blength % 4 == 0 and len(rest) == 8 + blength
    return doc, rest[8:]


def test_glb_layout_follows_the_specification():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(7, 3)).astype(np.float32)  # 7 points: colour data of 28 bytes, positions 84
    rgba = rng.integers(0, 256, (7, 4), dtype=np.uint8)
    segments = rng.normal(size=(6, 3))  # a triangle's three edges
    doc, binary = chunks(glb_file([GlbNode("cloud", pts, rgba), GlbNode("tri", segments, rgba[:6], lines=True)]))
    assert doc["asset"]["version"] == "2.0" and doc["scenes"][0]["nodes"] == [0, 1]
    assert [m["primitives"][0]["mode"] for m in doc["meshes"]] == [0, 1]  # POINTS, LINES
    assert doc["buffers"] == [{"byteLength": len(binary)}]
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0 and view["byteOffset"] + view["byteLength"] <= len(binary)
    position = doc["accessors"][doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    np.testing.assert_allclose(position["min"], pts.min(0))
    np.testing.assert_allclose(position["max"], pts.max(0))
    view = doc["bufferViews"][position["bufferView"]]
    stored = np.frombuffer(binary, np.float32, 21, view["byteOffset"]).reshape(7, 3)
    np.testing.assert_array_equal(stored, pts)
    with pytest.raises(ValueError, match="node 'bad': expected positions"):
        glb_file([GlbNode("bad", pts, rgba[:, :3])])
    with pytest.raises(ValueError, match="node 'odd': line segments need an even number"):
        glb_file([GlbNode("odd", pts, rgba, lines=True)])
    empty, binary = chunks(glb_file([]))
    assert empty["scenes"] == [{"nodes": []}] and binary == b"" and "buffers" not in empty


def test_glb_scene_reads_back_in_trimesh(tmp_path):
    rng = np.random.default_rng(1)
    pts, col = rng.normal(size=(1001, 3)), rng.integers(0, 256, (1001, 3), dtype=np.uint8)
    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    E = np.hstack([np.eye(3), np.zeros((3, 1))])
    write_glb(tmp_path / "s.glb", pts, col, cameras=[(K, E, (48, 64))] * 3)
    scene = trimesh.load(tmp_path / "s.glb")
    np.testing.assert_allclose(scene.geometry["points"].vertices, pts.astype(np.float32))
    np.testing.assert_array_equal(scene.geometry["points"].colors, np.c_[col, np.full(1001, 255, np.uint8)])
    frustum = _frustum(
        K, E, (48, 64), 0.05 * float(np.linalg.norm(np.ptp(np.percentile(pts, [2, 98], axis=0), axis=0)))
    )
    for i in range(3):
        path = scene.geometry[f"camera_{i:03d}"]  # the segments' end points, pair by pair
        np.testing.assert_allclose(path.vertices, frustum[np.array(_FRUSTUM_EDGES)].reshape(-1, 3), atol=1e-6)
        transform, _ = scene.graph[f"camera_{i:03d}"]
        np.testing.assert_allclose(transform, np.diag([1.0, -1.0, -1.0, 1.0]))
    doc, binary = chunks((tmp_path / "s.glb").read_bytes())
    colour = doc["accessors"][doc["meshes"][3]["primitives"][0]["attributes"]["COLOR_0"]]  # the last camera
    view = doc["bufferViews"][colour["bufferView"]]
    np.testing.assert_array_equal(
        np.frombuffer(binary, np.uint8, 80, view["byteOffset"]).reshape(20, 4)[0], _camera_colour(2, 3)
    )


def test_ply_is_trimesh_layout_and_reads_back(tmp_path):
    rng = np.random.default_rng(2)
    pts, col = rng.normal(size=(513, 3)), rng.integers(0, 256, (513, 3), dtype=np.uint8)
    write_ply(tmp_path / "a.ply", pts, col)
    ours = (tmp_path / "a.ply").read_bytes()
    theirs = trimesh.PointCloud(pts.astype(np.float32), colors=col).export(file_type="ply")
    assert ours.split(b"end_header\n", 1)[1] == theirs.split(b"end_header\n", 1)[1]  # the same vertex bytes
    p, c = read_ply(tmp_path / "a.ply")
    np.testing.assert_array_equal(p, pts.astype(np.float32))
    np.testing.assert_array_equal(c, col)
    write_ply(tmp_path / "empty.ply", np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    assert read_ply(tmp_path / "empty.ply")[0].shape == (0, 3)
