"""Every aspect ratio seen whole, provenance of every pixel, and honest model choice, end to end.

A 1920x1080 video goes through the PyTorch backend (fed at upstream's 294x518, the whole frame)
and through a fixed-size exported artifact (padded into its one size, never cropped); report.json,
cameras_source.json and the depth NPZ files say how each frame reached the model. The CLI refuses a
preset without weights, says when the bundled demo model ran, and fails offline in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
from terminal import terminal_lines

from edgescene.assets import sample_dir
from edgescene.cli import main
from edgescene.core.preprocess import Resize, depth_to_source
from edgescene.export.pipeline import ExportConfig, export_model
from edgescene.runtime.reconstruct import ReconstructConfig, reconstruct_to_folder

VIDEO = sample_dir() / "sample.mp4"


@pytest.fixture(scope="module")
def video_1080p(tmp_path_factory):
    """Four 1920x1080 frames of a moving gradient (H.264)."""
    path = tmp_path_factory.mktemp("video") / "wide.mp4"
    yy, xx = np.mgrid[0:1080, 0:1920]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        for i in range(4):
            rgb = np.stack([(xx + 40 * i) % 256, yy % 256, (xx // 8 + yy // 8) % 256], -1).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts") / "vggt_tiny"
    export_model(
        ExportConfig(model="vggt_tiny", format="onnx", out=str(out), height=56, width=84, frames_range=(1, 2, 4)),
        log=lambda s: None,
    )
    return out


def _config(**kw) -> ReconstructConfig:
    return ReconstructConfig(window=2, overlap=1, keyframe_threshold=0.0, max_keyframe_gap=1, device="cpu", **kw)


def test_torch_backend_feeds_a_16_9_video_whole_at_294x518(video_1080p, tmp_path):
    out = tmp_path / "rec"
    # vggt_tiny's own resolution is 224 wide; VGGT-1B's is 518, which long_side=518 asks for here
    report = reconstruct_to_folder(video_1080p, "vggt_tiny", out, _config(long_side=518), progress=False)
    pre = report["preprocessing"]
    assert report["backend"]["name"] == "torch" and pre["model_input_hw"] == [294, 518]
    assert pre["notes"] == [] and pre["served_sizes"] == "any H x W that are multiples of 14"
    assert len(pre["frames"]) == report["keyframes"] >= 2
    frame = pre["frames"][0]
    assert frame == {
        "index": 0,
        "orientation": "none",
        "rotation_deg": 0,
        "source_hw": [1080, 1920],
        "resized_hw": [294, 518],
        "offset_xy": [0, 0],
        "model_hw": [294, 518],
        "scale_xy": [518 / 1920, 294 / 1080],
        "mode": "crop",
    }
    assert any("RANDOM weights" in note for note in report["model_notes"])
    depth = np.load(out / "depth" / "00000.npz")
    assert depth["depth"].shape == (294, 518)
    assert depth["source_hw"].tolist() == [1080, 1920] and depth["offset_xy"].tolist() == [0, 0]
    assert str(depth["orientation"]) == "none" and str(depth["mode"]) == "crop"
    source = json.loads((out / "cameras_source.json").read_text())
    assert source["frames"][0]["resized_hw"] == [294, 518]
    # the principal point (model centre) maps to the source centre
    np.testing.assert_allclose(np.array(source["intrinsics"])[0][:2, 2], [960.0, 540.0], atol=1e-6)


def test_fixed_artifact_pads_a_16_9_video_and_never_crops(video_1080p, tiny_artifact, tmp_path):
    report = reconstruct_to_folder(video_1080p, tiny_artifact, tmp_path / "rec", _config(), progress=False)
    pre = report["preprocessing"]
    assert pre["model_input_hw"] == [56, 84] and pre["served_sizes"] == "56x84"
    frame = pre["frames"][0]
    # upstream's rule at the artifact's long side 84: 42x84, the whole frame, padded 7 rows top and bottom
    assert frame["resized_hw"] == [42, 84] and frame["offset_xy"] == [0, 7] and frame["model_hw"] == [56, 84]
    assert len(pre["notes"]) == 1 and "padded to 56x84" in pre["notes"][0] and "42x84" in pre["notes"][0]


@pytest.fixture(scope="module")
def multi_size_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts") / "vggt_tiny_sizes"
    result = export_model(
        ExportConfig(
            model="vggt_tiny", format="onnx", out=str(out), sizes=((294, 518), (392, 518)), frames_range=(1, 2, 2)
        ),
        log=lambda s: None,
    )
    assert result.accepted
    return out


@pytest.mark.slow
def test_multi_size_artifact_feeds_a_16_9_video_whole_at_294x518(video_1080p, multi_size_artifact, tmp_path):
    data = json.loads((multi_size_artifact / "artifact.json").read_text())
    assert data["input_sizes"] == [{"height": 294, "width": 518}, {"height": 392, "width": 518}]
    assert data["files"]["sizes"] == {"294x518": "294x518", "392x518": "392x518"} and data["accepted"]
    assert set(data["parity"]["sizes"]) == {"294x518", "392x518"}
    assert all(p["passed"] for p in data["parity"]["sizes"].values())
    report = reconstruct_to_folder(video_1080p, multi_size_artifact, tmp_path / "rec", _config(), progress=False)
    pre = report["preprocessing"]
    assert report["backend"]["name"] == "onnxruntime" and pre["served_sizes"] == "294x518, 392x518"
    assert pre["model_input_hw"] == [294, 518] and pre["notes"] == []
    assert pre["frames"][0]["resized_hw"] == [294, 518] and pre["frames"][0]["offset_xy"] == [0, 0]


@pytest.mark.slow
def test_multi_size_session_dispatches_by_size_and_refuses_others(multi_size_artifact):
    from edgescene.runtime.session import open_session

    session = open_session(multi_size_artifact, device="cpu")
    assert session.open_sizes == ["294x518"]  # the default size opens at once, the others on first use
    images = np.random.default_rng(0).random((2, 3, 392, 518), dtype=np.float32)
    direct = open_session(multi_size_artifact / "392x518", device="cpu")({"images": images})
    got = session({"images": images})
    assert session.open_sizes == ["294x518", "392x518"]
    assert np.array_equal(got["depth"], direct["depth"]) and got["depth"].shape == (2, 392, 518)
    with pytest.raises(ValueError, match="images are 518x518; this artifact serves 294x518, 392x518"):
        session({"images": np.zeros((1, 3, 518, 518), np.float32)})
    session.close()


def test_multi_size_export_refuses_bad_sizes(tmp_path, capsys):
    with pytest.raises(ValueError, match="not both"):
        ExportConfig(model="vggt_tiny", format="onnx", out=str(tmp_path / "x"), sizes=((56, 84),), height=56)
    with pytest.raises(ValueError, match="twice"):
        ExportConfig(model="vggt_tiny", format="onnx", out=str(tmp_path / "x"), sizes=((56, 84), (56, 84)))
    with pytest.raises(SystemExit) as stopped:
        main(
            [
                "export",
                "--model",
                "vggt_tiny",
                "--random-weights",
                "--format",
                "onnx",
                "--sizes",
                "56by84",
                "--out",
                str(tmp_path / "x"),
            ]
        )
    assert stopped.value.code == 2 and "HEIGHTxWIDTH in pixels, e.g. 294x518" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_depth_npz_maps_back_to_the_photo(tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((300, 200, 3), 128, np.uint8)).save(photo)  # portrait: upstream crops rows
    out = tmp_path / "rec"
    reconstruct_to_folder(photo, "vggt_tiny", out, _config(long_side=518), progress=False)
    npz = np.load(out / "depth" / "00000.npz")
    f = json.loads((out / "cameras_source.json").read_text())["frames"][0]
    resize = Resize.from_provenance(npz)
    assert resize == Resize.from_provenance(f)
    back = depth_to_source(npz["depth"], resize)
    assert back.shape == (300, 200)
    seen = np.isfinite(back).all(axis=1)
    assert f["model_hw"] == [518, 518] and f["offset_xy"] == [0, -133]  # 784 rows -> the centre 518
    assert not seen[0] and seen[150] and not seen[-1]


def test_cli_refuses_a_preset_without_weights(tmp_path, capsys):
    assert main(["reconstruct", str(VIDEO), "--model", "vggt_small", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "random weights" in err and "--random-weights" in err and "facebook/VGGT-1B" in err
    assert not (tmp_path / "r").exists()
    assert main(["reconstruct", str(VIDEO), "--random-weights", "--out", str(tmp_path / "r")]) == 2
    assert "goes with a preset name" in capsys.readouterr().err


def test_cli_runs_a_preset_with_random_weights_and_says_so(tmp_path, capsys):
    out = tmp_path / "r"
    assert (
        main(
            [
                "reconstruct",
                str(VIDEO),
                "--model",
                "vggt_tiny",
                "--random-weights",
                "--device",
                "cpu",
                "--out",
                str(out),
                "--max-frames",
                "6",
                "--window",
                "3",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and "frames fed at 168x224" in printed  # 4:3 at vggt_tiny's 224


def test_cli_says_when_the_bundled_demo_model_ran(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["reconstruct", str(VIDEO), "--out", str(out), "--max-frames", "8", "--window", "4"]) == 0
    printed = capsys.readouterr().out
    notes = [line for line in printed.splitlines() if "demo model" in line]
    assert len(notes) == 1 and "synthetic scenes only" in notes[0] and "--model facebook/VGGT-1B" in notes[0]
    report = json.loads((out / "report.json").read_text())
    assert any("synthetic scenes only" in note for note in report["model_notes"])
    assert not any("--" in note for note in report["model_notes"])  # every surface reads it: no flags


def test_cli_hub_id_offline_is_one_clear_line(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgescene",
            "reconstruct",
            str(VIDEO),
            "--model",
            "facebook/VGGT-1B",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,  # bytes: text mode would turn the bar's carriage returns into new lines
        timeout=120,
        env=env,
    )
    assert result.returncode == 2
    stderr = result.stderr.decode()
    lines = terminal_lines(stderr)  # the bar of "opening the model" is wiped: the error is what is left
    assert len(lines) == 1 and "Traceback" not in stderr, lines
    assert "edgescene download --repo-id facebook/VGGT-1B" in lines[0] and "--model weights/" in lines[0]
    assert not (tmp_path / "r").exists()


def test_a_dinov3_patch_vggt_is_fed_multiples_of_16(video_1080p, tmp_path):
    report = reconstruct_to_folder(video_1080p, "vggt_tiny_dinov3", tmp_path / "rec", _config(), progress=False)
    h, w = report["preprocessing"]["model_input_hw"]
    assert (h, w) == (128, 224) and h % 16 == 0  # upstream's rule with 16-pixel patches at its 224
