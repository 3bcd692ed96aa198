"""Reconstruction end to end: the bundled sample video and images through an exported tiny VGGT
artifact into one output folder; the Python API; clear errors and no partial output."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import trimesh

from edgescene.assets import sample_dir
from edgescene.cli import main
from edgescene.core.artifact import ArtifactError
from edgescene.export.pipeline import ExportConfig, export_model
from edgescene.runtime.frames import InputError, open_frames
from edgescene.runtime.reconstruct import ReconstructConfig, Reconstructor, reconstruct_to_folder, run
from edgescene.runtime.sinks import Sink

VIDEO = sample_dir() / "sample.mp4"
EXPECTED = {"points.ply", "scene.glb", "cameras.json", "cameras_source.json", "trajectory.tum", "report.json", "depth"}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts") / "vggt_tiny"
    export_model(
        ExportConfig(model="vggt_tiny", format="onnx", out=str(out), height=56, width=84, frames_range=(1, 4, 6)),
        log=lambda s: None,
    )
    return out


@pytest.fixture(scope="module")
def dinov3_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts") / "dinov3_tiny"
    export_model(
        ExportConfig(model="dinov3_tiny", format="onnx", out=str(out), height=32, width=48), log=lambda s: None
    )
    return out


def test_video_to_every_output_file(artifact, tmp_path):
    out = tmp_path / "rec"
    report = reconstruct_to_folder(VIDEO, artifact, out, ReconstructConfig(window=6, overlap=2), progress=False)
    assert {p.name for p in out.iterdir()} == EXPECTED
    keyframes = report["keyframes"]
    assert report["frames_seen"] == 32 and 2 <= keyframes <= 32
    assert report["windows"] >= 2 and len(report["alignments"]) == report["windows"] - 1
    assert sorted(p.name for p in (out / "depth").iterdir()) == [f"{i:05d}.npz" for i in range(keyframes)]
    depth = np.load(out / "depth" / "00000.npz")
    assert depth["depth"].shape == (56, 84) and depth["depth"].dtype == np.float32 and (depth["depth"] > 0).all()
    cameras = json.loads((out / "cameras.json").read_text())
    assert len(cameras["frames"]) == keyframes
    assert np.allclose(np.array(cameras["frames"][0]["extrinsics"]), np.eye(3, 4), atol=1e-5)  # first = world
    tum = [row for row in (out / "trajectory.tum").read_text().splitlines() if not row.startswith("#")]
    assert len(tum) == keyframes and len(tum[0].split()) == 8
    source = json.loads((out / "cameras_source.json").read_text())
    assert source["image_size"][0] == [192, 256]
    cloud = trimesh.load(out / "points.ply")
    assert len(cloud.vertices) == report["points"] > 0
    assert set(report["timings_s"]) >= {"model_s", "preprocess_s", "keyframes_s", "fusion_s", "write_s", "total_s"}
    assert report["backend"]["name"] == "onnxruntime" and report["model"]["preset"] == "vggt_tiny"


def test_single_image_and_image_folder(artifact, tmp_path):
    frames = [f.rgb for f in open_frames(VIDEO, max_frames=3)]
    folder = tmp_path / "images"
    folder.mkdir()
    for i, rgb in enumerate(frames):
        cv2.imwrite(str(folder / f"img{i}.png"), rgb[..., ::-1])
    one = reconstruct_to_folder(
        folder / "img0.png", artifact, tmp_path / "one", progress=False, config=ReconstructConfig(window=4, overlap=1)
    )
    assert one["keyframes"] == 1 and one["windows"] == 1 and one["points"] > 0
    many = reconstruct_to_folder(
        folder,
        artifact,
        tmp_path / "many",
        progress=False,
        config=ReconstructConfig(window=4, overlap=1, keyframe_threshold=0),
    )
    assert many["frames_seen"] == 3 and many["keyframes"] == 3


def test_python_api_run_and_stream(artifact):
    rec = Reconstructor(artifact, ReconstructConfig(window=4, overlap=1, keyframe_threshold=0))
    result = rec.run(open_frames(VIDEO, max_frames=9))
    assert result.extrinsics.shape == (9, 3, 4) and result.intrinsics.shape == (9, 3, 3)
    assert len(result.depth) == 9 and result.depth[0].shape == (56, 84)
    assert result.points.shape[1] == 3 and result.colors.dtype == np.uint8
    windows = []  # (frames seen, keyframes, points) each time a window joined the map

    class Windows(Sink):
        def window(self, run) -> None:
            windows.append((run.frames.frames_seen, run.stream.state.keyframes, run.stream.state.points))

    run(rec, open_frames(VIDEO, max_frames=7), Windows(), pipeline=False)
    assert [(seen, keyframes) for seen, keyframes, _ in windows] == [(4, 4), (7, 7)]
    assert windows[-1][2] > 0


def test_bad_inputs_are_clear_errors_and_leave_nothing(artifact, dinov3_artifact, tmp_path):
    bad_video = tmp_path / "broken.mp4"
    bad_video.write_bytes(b"\x00not a video" * 50)
    with pytest.raises(InputError, match="cannot decode video"):
        reconstruct_to_folder(bad_video, artifact, tmp_path / "a", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError):
        reconstruct_to_folder(empty, artifact, tmp_path / "b", progress=False)
    with pytest.raises(ArtifactError, match="needs a VGGT model"):
        reconstruct_to_folder(VIDEO, dinov3_artifact, tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="outside what"):
        reconstruct_to_folder(VIDEO, artifact, tmp_path / "d", ReconstructConfig(window=12), progress=False)
    with pytest.raises(ArtifactError):
        reconstruct_to_folder(VIDEO, tmp_path / "not_an_artifact", tmp_path / "e", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4", "empty"]  # no partial outputs


@pytest.mark.parametrize("pipeline", [False, True])
def test_a_failure_mid_run_leaves_no_output(artifact, tmp_path, monkeypatch, pipeline):
    """The model fails on its second window (on the model thread when pipelined): the error reaches
    the caller, nothing appears at --out, and no thread is left behind."""
    import threading

    from edgescene.runtime import stream as stream_module

    calls = {"n": 0}
    real = stream_module.StreamingReconstruction._timed_predict

    def fail_on_second(self, images, timing):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("device lost")
        return real(self, images, timing)

    monkeypatch.setattr(stream_module.StreamingReconstruction, "_timed_predict", fail_on_second)
    before = threading.active_count()
    out = tmp_path / "rec"
    config = ReconstructConfig(window=4, overlap=1, pipeline=pipeline)
    with pytest.raises(RuntimeError, match="device lost"):
        reconstruct_to_folder(VIDEO, artifact, out, config, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert threading.active_count() == before


def test_cli_end_to_end_and_overwrite(artifact, tmp_path, capsys):
    out = tmp_path / "rec"
    args = [
        "reconstruct",
        str(VIDEO),
        "--model",
        str(artifact),
        "--out",
        str(out),
        "--window",
        "6",
        "--max-frames",
        "12",
    ]
    assert main(args) == 0
    assert "keyframes" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == EXPECTED
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


def test_dinov3_features_choose_keyframes_and_point_map_branch(artifact, dinov3_artifact, tmp_path):
    config = ReconstructConfig(window=4, overlap=1, features=str(dinov3_artifact), branch="points", max_keyframe_gap=3)
    report = reconstruct_to_folder(VIDEO, artifact, tmp_path / "rec", config, progress=False)
    assert report["config"]["features"] == str(dinov3_artifact) and report["config"]["branch"] == "points"
    assert 1 <= report["keyframes"] <= 32 and report["points"] > 0
    assert isinstance(report["revisits"], list)
