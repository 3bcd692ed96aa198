"""The web app's handlers without a browser: model setup, training, export, reconstruction and re-rendering."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("gradio")

from bundled import BUNDLED_PRESET

from edgescene.apps.reconstruction import check_inputs
from edgescene.apps.webapp import WebApp, build_app
from edgescene.apps.workspace import Workspace
from edgescene.assets import DEFAULT_MODEL, default_model_dir, sample_dir
from edgescene.runtime.frames import open_frames
from edgescene.train.data.synthetic import SynthConfig, generate_dataset

CHECKPOINT = default_model_dir() / "model.safetensors"  # the bundled model's weights
SAMPLE = sample_dir() / "sample.mp4"


class NoProgress:
    def __call__(self, *args, **kwargs):
        pass


@pytest.fixture()
def app(tmp_path) -> WebApp:
    return WebApp(Workspace(tmp_path / "ws"))


def test_build_app_has_every_tab(tmp_path):
    demo = build_app(tmp_path / "ws")
    labels = {getattr(block, "label", None) for block in demo.blocks.values()}
    assert {"Model setup", "Train DINOv3", "Train VGGT", "Export", "3D reconstruction"} <= labels
    assert {"3D scene", "confidence percentile (drop below)", "show cameras"} <= labels


def test_add_checkpoint_detects_the_preset_and_never_overwrites(app, tmp_path):
    message, rows = app.add_checkpoint(str(CHECKPOINT))
    from safetensors.numpy import load_file

    parameters = sum(v.size for v in load_file(str(CHECKPOINT)).values())
    size_mib = round(CHECKPOINT.stat().st_size / 2**20, 1)
    assert BUNDLED_PRESET in message
    assert rows == [["model.safetensors", "vggt", BUNDLED_PRESET, f"{parameters:,}", size_mib]]
    message, rows = app.add_checkpoint(str(CHECKPOINT))  # the same file again: kept once
    assert "already in the workspace" in message and len(rows) == 1
    other = tmp_path / "model.safetensors"  # same name, different content: a new name
    data = bytearray(CHECKPOINT.read_bytes())
    shutil.copyfile(CHECKPOINT, other)
    with open(other, "r+b") as f:
        f.seek(len(data) - 4)
        f.write(bytes(4))  # change the last weight bytes: still a valid file
    message, rows = app.add_checkpoint(str(other))
    assert [r[0] for r in rows] == ["model-2.safetensors", "model.safetensors"]
    assert (app.workspace.checkpoints_dir / "model.safetensors").read_bytes() == CHECKPOINT.read_bytes()


def test_bad_checkpoints_are_refused_with_a_reason(app, tmp_path):
    junk = tmp_path / "weights.pth"
    junk.write_bytes(b"this is not a checkpoint")
    message, rows = app.add_checkpoint(str(junk))
    assert message.startswith("**Error:**") and "not a usable DINOv3 or VGGT checkpoint" in message and rows == []
    message, _ = app.add_checkpoint(str(tmp_path / "x.txt"))
    assert "expected a .pth, .pt, .safetensors checkpoint" in message
    message, _ = app.add_checkpoint(None)
    assert "choose a checkpoint file" in message
    assert not list(app.workspace.checkpoints_dir.iterdir())


def test_hub_download_fails_fast_offline(app, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    message, _ = app.download("facebook/VGGT-1B", "model.pt")
    assert time.monotonic() - start < 10
    assert message.startswith("**Error:**") and "HF_HUB_OFFLINE" in message
    assert (
        "--model" not in message and "`edgescene" not in message and "**Check and add**" in message
    )  # the app's words
    message, _ = app.download("not a repo id", "")
    assert "owner/name" in message


class RecordedProgress:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, progress, desc=None, **kwargs):
        self.calls.append((progress, desc))


def test_reconstruction_then_rerender_without_the_model(app, monkeypatch):
    progress = RecordedProgress()
    status, glb, downloads, gallery, folder = app.run_reconstruction(
        [str(SAMPLE)], "video", DEFAULT_MODEL, 0, 10, 50, True, False, "depth", progress=progress
    )
    assert "10 keyframes" in status and "model run" in status, status
    # the run's one progress model: opening, every frame, the windows, done
    assert progress.calls[0] == (0.0, "opening the model")
    assert progress.calls[1][1] == "frame 1 of 10, 0 model calls"
    fractions = [f for f, _ in progress.calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions.count(1.0) == 1
    assert progress.calls[-1][1] == "done: 10 frames, 10 keyframes, 2 model calls"
    assert status.count("demo model") == 1 and "synthetic scenes only" in status  # the bundled model says what it is
    assert "--model" not in status and "in Model setup" in status  # the app's words, not the CLI's
    assert Path(glb).read_bytes()[:4] == b"glTF" and [Path(p).name for p in downloads] == ["scene.glb", "points.ply"]
    assert len(gallery) == 10
    # from here on the model must not run: any session call fails the test
    import edgescene.runtime.reconstruct as reconstruct_module

    monkeypatch.setattr(reconstruct_module, "open_session", lambda *a, **k: pytest.fail("the model ran again"))
    points = int(status.split(" keyframes, ")[1].split(" points")[0].replace(",", ""))
    status2, glb2, _, gallery2, _ = app.rerender(folder, 90, False, True, "points")
    assert not isinstance(gallery2, list)  # depth images stay as they are: not recomputed, not resent
    assert "re-rendered from cached predictions (model not run)" in status2
    points2 = int(status2.split(" keyframes, ")[1].split(" points")[0].replace(",", ""))
    assert points2 < points and glb2 != glb
    assert not Path(glb).exists()  # the previous render's files are cleaned up


def test_reconstruction_with_loop_closure_says_what_it_found(app, tmp_path):
    from PIL import Image

    from edgescene.bench.loop_closure import loop_sequences

    pytest.importorskip("gtsam")
    seq = loop_sequences(96)[1]  # the figure eight: it crosses its own path
    paths = []
    for i, rgb in enumerate(seq.frames):
        paths.append(str(tmp_path / f"{i:03d}.png"))
        Image.fromarray(rgb).save(paths[-1])
    status, glb, *_ = app.run_reconstruction(
        paths, "several images", DEFAULT_MODEL, 0, 0, 50, True, False, "depth", True, progress=NoProgress()
    )
    assert "loop closure: " in status and "cameras and points corrected" in status, status
    assert Path(glb).read_bytes()[:4] == b"glTF"


def test_reconstruction_with_a_calibration_in_metres(app, tmp_path):
    gt = np.load(SAMPLE.parent / "sample_gt.npz")
    k = gt["intrinsics"]
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"fx": k[0, 0], "fy": k[1, 1], "cx": k[0, 2], "cy": k[1, 2]}))
    status, glb, *_ = app.run_reconstruction(
        [str(SAMPLE)], "video", DEFAULT_MODEL, 0, 12, 50, True, False, "depth", False,
        str(calibration), "baseline:0.2228", None, progress=NoProgress(),
    )  # fmt: skip
    assert "intrinsics given by the calibration" in status and "in metres from baseline:0.2228 (scale fit" in status
    assert Path(glb).read_bytes()[:4] == b"glTF"
    status, *_ = app.run_reconstruction(
        [str(SAMPLE)], "video", DEFAULT_MODEL, 0, 12, 50, True, False, "depth", False, None, "gps", None,
        progress=NoProgress(),
    )  # fmt: skip
    assert "needs its track file" in status


def test_reconstruction_inputs_are_checked(app, tmp_path):
    frames = [f.rgb for f in open_frames(SAMPLE, max_frames=2)]
    images = []
    for i, rgb in enumerate(frames):
        images.append(tmp_path / f"f{i}.png")
        cv2.imwrite(str(images[-1]), rgb[..., ::-1])
    with pytest.raises(ValueError, match="switch the mode"):
        check_inputs([SAMPLE], "several images")
    with pytest.raises(ValueError, match="exactly one image"):
        check_inputs(images, "single image")
    with pytest.raises(ValueError, match="no files"):
        check_inputs([], "video")
    status, *_ = app.run_reconstruction(
        [str(p) for p in images], "several images", DEFAULT_MODEL, 0, 0, 50, True, False, "depth", progress=NoProgress()
    )
    assert "2 keyframes" in status, status
    status, glb, *_ = app.run_reconstruction(
        [str(SAMPLE)], "video", "nope", 0, 0, 50, True, False, "depth", progress=NoProgress()
    )
    assert "unknown model" in status and glb is None
    status, *_ = app.rerender(None, 50, True, False, "depth")
    assert "after a reconstruction" in status


@pytest.mark.slow
def test_training_tab_validates_and_runs(app, tmp_path):
    message = app.start_training("vggt", str(tmp_path), "run1", "vggt_tiny", 5, 1, 1e-4, "cpu", None, 28, 42)
    assert "has no manifest.json" in message
    data = tmp_path / "data"
    generate_dataset(SynthConfig(out_dir=str(data), scenes=2, frames=4, width=64, height=48))
    message = app.start_training("vggt", str(data), "run1", "vggt_tiny", 4, 1, 1e-4, "cpu", None, 28, 42)
    assert "started vggt run" in message, message
    assert "already going" in app.start_training(
        "vggt", str(data), "run2", "vggt_tiny", 4, 1, 1e-4, "cpu", None, 28, 42
    )
    run = app.runs["vggt"]
    assert run.wait(180) == "finished", run.log_tail()
    status, frame = app.training_status("vggt")
    assert "**finished**: step 4 / 4" in status and list(frame["step"]) == [1, 2, 3, 4]
    assert "already has a checkpoint" in app.start_training(
        "vggt", str(data), "run1", "vggt_tiny", 4, 1, 1e-4, "cpu", None, 28, 42
    )
    assert app.export_sources() == ["run: run1"]


def test_train_vggt_tab_self_supervised_on_frame_folders(app, tmp_path):
    from PIL import Image

    from edgescene.train.data.synthetic import render_sequence

    footage = tmp_path / "footage"
    for i in range(3):  # one folder of frames per sequence: no manifest, no depth, no cameras
        seq = render_sequence(seed=60 + i, trajectory="orbit", frames=5, width=64, height=48)
        (footage / f"clip{i}").mkdir(parents=True)
        for k, rgb in enumerate(seq.frames):
            Image.fromarray(rgb).save(footage / f"clip{i}" / f"{k}.png")
    message = app.start_training("vggt", str(footage), "ss", "vggt_tiny", 4, 1, 1e-4, "cpu", None, 28, 42, False)
    assert "has no manifest.json" in message  # supervised needs ground truth
    k = [[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]]  # the camera's calibration, beside the frames
    frames = sorted(p.relative_to(footage).as_posix() for p in footage.rglob("*.png"))
    (footage / "calibration.json").write_text(json.dumps({f: {"intrinsics": k} for f in frames}))
    message = app.start_training("vggt", str(footage), "ss", "vggt_tiny", 4, 1, 1e-4, "cpu", None, 28, 42, True)
    assert "started vggt run" in message, message
    run = app.runs["vggt"]
    assert run.wait(180) == "finished", run.log_tail()
    status, _ = app.training_status("vggt")
    assert "**finished**: step " in status  # 3 or 4 of 4: patience 3 may stop it a step early
    assert "| photometric score (held-out windows) |" in status  # the before / after table
    logged = [json.loads(line) for line in (run.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(row["intrinsics"] >= 0 for row in logged if "photometric" in row)  # the calibration was used
    assert "ss" in {s.removeprefix("run: ") for s in app.export_sources()}
    config = json.loads((run.out_dir / "report.json").read_text())["config"]
    assert config["freeze"] == "aggregator" and config["metadata_json"].endswith("calibration.json")  # the defaults


def test_the_self_supervised_learning_rate_is_the_trainers():
    from edgescene.apps.webapp import SELF_SUPERVISED_LR
    from edgescene.train.vggt.config import SELF_SUPERVISED_DEFAULTS

    assert SELF_SUPERVISED_DEFAULTS["lr"] == SELF_SUPERVISED_LR


@pytest.mark.slow
def test_export_tab_adds_an_accepted_model(app):
    app.add_checkpoint(str(CHECKPOINT))
    message, rows = app.export(
        "checkpoint: model.safetensors", "onnx", "small_onnx", 126, 168, 4, progress=NoProgress()
    )
    assert "accepted" in message, message
    assert {r[1] for r in rows} >= {"pose_enc", "depth", "depth_conf"} and {r[0] for r in rows} >= {1, 4}
    assert "small_onnx" in app.reconstruction_models()
    message, _ = app.export("checkpoint: model.safetensors", "onnx", "small_onnx", 126, 168, 4, progress=NoProgress())
    assert "exists already" in message
    # the app has no window control: an export made for 4 frames runs windows of 4, not the default 8
    progress = RecordedProgress()
    status, *_ = app.run_reconstruction(
        [str(SAMPLE)], "video", "small_onnx", 0, 6, 50, True, False, "depth", progress=progress
    )
    assert status.startswith("model **small_onnx**: 6 keyframes"), status
    assert progress.calls[-1][1] == "done: 6 frames, 6 keyframes, 2 model calls"  # frames 1-4, 3-6


def test_a_vggt_checkpoint_from_model_setup_reconstructs_on_the_pytorch_backend(app):
    app.add_checkpoint(str(CHECKPOINT))  # what Model setup keeps, uploaded or downloaded from the Hub
    models = app.reconstruction_models()
    assert models["checkpoint: model.safetensors"].endswith("model.safetensors")
    status, glb, *_ = app.run_reconstruction(
        [str(SAMPLE)], "video", "checkpoint: model.safetensors", 0, 6, 50, True, False, "depth", progress=NoProgress()
    )
    assert glb is not None and "6 keyframes" in status, status
    assert "demo model" not in status  # a checkpoint carries no demo flag: it is the user's model


def test_the_workspace_keeps_only_the_newest_reconstructions(tmp_path):
    import os

    from edgescene.apps.reconstruction import _prune

    for i in range(5):
        (tmp_path / f"run{i}").mkdir()
        os.utime(tmp_path / f"run{i}", (1000 + i, 1000 + i))
    _prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run3", "run4"]


def test_model_setup_says_what_is_already_there(app):
    text = app.inventory()
    assert f"**Reconstruction models (1):** {DEFAULT_MODEL}" in text and "none yet" in text
    assert "None is needed to reconstruct" in text
    app.add_checkpoint(str(CHECKPOINT))
    text = app.inventory()  # read anew: what was added since shows at once
    assert "**Checkpoints (1):** model.safetensors" in text and "checkpoint: model.safetensors" in text


def test_the_app_opens_on_reconstruction_and_refreshes_its_lists(tmp_path):
    demo = build_app(tmp_path / "ws")
    tabs = [b for b in demo.blocks.values() if type(b).__name__ == "Tabs"]
    assert tabs and tabs[0].selected == "reconstruct"
    loads = [d for d in demo.config["dependencies"] if any(t[1] == "load" for t in d.get("targets", []))]
    assert loads, "the lists are re-read when the page loads"
    values = [getattr(block, "value", None) for block in demo.blocks.values()]
    assert "Try the sample video" in [v for v in values if isinstance(v, str)]


def test_a_failed_training_is_one_line_with_the_fix_never_a_traceback(app, tmp_path):
    """The reported case: Train VGGT on a dataset without depth or cameras showed ValueError and five
    stack frames. The dataset is now checked before a run starts; a run that fails later is shown the
    same way (its first line, never the traceback)."""
    data = tmp_path / "data"
    generate_dataset(SynthConfig(out_dir=str(data), scenes=1, frames=4, width=64, height=48))
    manifest = json.loads((data / "manifest.json").read_text())
    for entry in manifest["entries"]:  # footage without ground truth
        entry["depth"], entry["camera"] = None, None
    (data / "manifest.json").write_text(json.dumps(manifest))
    message = app.start_training("vggt", str(data), "nogt", "vggt_tiny", 4, 1, 1e-4, "cpu", None, 28, 42)
    assert message.startswith("**Error:**") and len(message.splitlines()) == 1, message
    assert "Traceback" not in message and "tick 'self-supervised'" in message and "vggt" not in app.runs

    class Failed:  # what a run whose process raised leaves: train_error.txt with the traceback
        running = False

        def progress(self):
            return {"state": "failed", "step": 0, "steps": 4, "loss": None, "elapsed_s": 1.0,
                    "out_dir": str(tmp_path), "checkpoint": None}  # fmt: skip

        def error_message(self):
            from edgescene.train.launch import TrainingRun

            run = TrainingRun.__new__(TrainingRun)
            run.out_dir = tmp_path
            return run.error_message()

        def metrics(self):
            return []

    (tmp_path / "train_error.txt").write_text('ValueError: bad batch\n\nTraceback (most recent call last):\n  File "x"')
    app.runs["dinov3"] = Failed()
    status, _ = app.training_status("dinov3")
    assert "**Error:** ValueError: bad batch" in status and "Traceback" not in status and 'File "' not in status
