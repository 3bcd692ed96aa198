"""Self-supervised VGGT training from raw footage (a folder per sequence of frames with no depth or
cameras, and a video): it runs, resumes to the same weights as an uninterrupted run, keeps the best
checkpoint and stops early, writes its report, and the checkpoint loads with load_vggt."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image

from edgescene.models import load_vggt
from edgescene.train.data.synthetic import render_sequence
from edgescene.train.vggt.cli import main as cli_main
from edgescene.train.vggt.config import VGGTTrainConfig
from edgescene.train.vggt.trainer import train
from edgescene.train.vggt.unlabeled import UnlabeledSequenceDataset, load_frame, unlabeled_sequences

H, W = 28, 42


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> Path:
    """Three folders of PNG frames (one per sequence), no manifest, no depth, no cameras; one 16-bit IR."""
    root = tmp_path_factory.mktemp("footage")
    for i, trajectory in enumerate(("orbit", "handheld", "walk")):
        seq = render_sequence(seed=40 + i, trajectory=trajectory, frames=6, width=64, height=48)
        folder = root / f"clip_{i}"
        folder.mkdir()
        for k, rgb in enumerate(seq.frames):
            if i == 2:  # a thermal-like camera: one channel, 16 bits, a narrow band of levels
                gray = rgb.mean(-1).astype(np.float64)
                Image.fromarray((20000 + gray * 8).astype(np.uint16)).save(folder / f"{k:03d}.png")
            else:
                Image.fromarray(rgb).save(folder / f"{k:03d}.png")
    return root


def make_config(data: Path, out: Path, **overrides) -> VGGTTrainConfig:
    base = dict(
        dataset_dir=str(data), out_dir=str(out), preset="vggt_tiny", steps=4, batch_size=1,
        frames_per_sequence=(2, 3), image_height=H, image_width=W, lr=1e-3, log_every=1, save_every=2,
        device="cpu", num_workers=0, val_fraction=0.34, seed=0, self_supervised=True,
    )  # fmt: skip
    return VGGTTrainConfig(**{**base, **overrides})


def test_frames_folders_become_sequences_and_ir_is_scaled(footage, tmp_path):
    from edgescene.train.vggt.unlabeled import prepare_unlabeled

    root = prepare_unlabeled(footage, tmp_path, size=64, log=lambda *a: None)
    assert root == tmp_path / "data" and (root / "manifest.json").is_file()
    sequences = unlabeled_sequences(root, 2)
    assert len(sequences) == 3 and all(len(es) == 6 for es in sequences.values())
    ir = next(es for name, es in sequences.items() if "clip_2" in name)
    rgb = load_frame(root / ir[0].path)
    assert rgb.dtype == np.float32 and rgb.shape[2] == 3 and np.allclose(rgb[..., 0], rgb[..., 1])
    assert rgb.max() == pytest.approx(1.0) and rgb.min() == pytest.approx(0.0)  # 2..98 % stretched to 0..1
    data = UnlabeledSequenceDataset(root, sequences, H, W, augment=True)
    sample = data[(0, 3, 7)]
    assert sample["images"].shape == (3, 3, H, W) and not bool(sample["has_gt"])
    with pytest.raises(ValueError, match="no sequence of 7 frames"):
        unlabeled_sequences(root, 7)


def test_runs_resumes_like_an_uninterrupted_run_and_reports(footage, tmp_path):
    whole = tmp_path / "whole"
    train(make_config(footage, whole))
    split = tmp_path / "split"
    train(make_config(footage, split), stop_at_step=2)
    train(make_config(footage, split, resume="last"))
    a = torch.load(whole / "last.pt", weights_only=False)["model"]
    b = torch.load(split / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    report = json.loads((whole / "report.json").read_text())
    assert report["steps_done"] == 4 and report["before"]["val_loss"] > 0 and report["best_step"] in (0, 2, 4)
    assert set(report["curves"]) >= {"train_loss", "val_loss"} and len(report["curves"]["train_loss"]) == 4
    assert "| photometric score (held-out windows) |" in (whole / "report.md").read_text()
    assert (whole / "best.pt").is_file() and (whole / "loss_curves.png").is_file()
    model = load_vggt(whole / "best.pt", preset="vggt_tiny")
    with torch.no_grad():
        out = model(torch.rand(1, 2, 3, H, W))
    assert out["depth"].shape == (1, 2, H, W, 1) and torch.isfinite(out["depth"]).all()


def test_patience_stops_early_and_keeps_the_best(footage, tmp_path):
    out = tmp_path / "early"
    # a rate too small to move the held-out score by the 1e-4 an improvement needs
    train(make_config(footage, out, steps=40, save_every=1, lr=1e-9, min_lr=1e-9, patience=2))
    report = json.loads((out / "report.json").read_text())
    assert report["stopped_early"] and report["steps_done"] < 40
    assert report["best_step"] is not None and (out / "best.pt").is_file()
    best = torch.load(out / "best.pt", weights_only=False)
    assert best["step"] == report["best_step"]


def test_cli_flags_and_mistakes(footage, tmp_path, capsys):
    code = cli_main(
        [
            "--self-supervised",
            "--dataset-dir",
            str(footage),
            "--out-dir",
            str(tmp_path / "cli"),
            "--preset",
            "vggt_tiny",
            "--steps",
            "1",
            "--frames",
            "2",
            "2",
            "--height",
            str(H),
            "--width",
            str(W),
            "--device",
            "cpu",
            "--workers",
            "0",
            "--photometric-weight",
            "1",
            "--patience",
            "2",
        ]  # fmt: skip
    )
    assert code == 0 and (tmp_path / "cli" / "last.pt").is_file()
    assert re.search(r"self_supervised += True", capsys.readouterr().out)
    with pytest.raises(ValueError, match="photometric loss"):
        make_config(footage, tmp_path, photometric_weight=0)
    with pytest.raises(ValueError, match="must start at 2"):
        make_config(footage, tmp_path, frames_per_sequence=(1, 3))
    with pytest.raises(ValueError, match="patience"):
        make_config(footage, tmp_path, patience=0)


def test_a_diverging_run_stops_with_what_to_do(footage, tmp_path):
    from edgescene.train.vggt.trainer import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="lower --lr"):
        train(make_config(footage, tmp_path / "nan", steps=30, lr=1e6, min_lr=1e6, warmup_fraction=0.0))


def test_held_out_windows_are_spread_along_each_sequence(footage, tmp_path):
    from edgescene.train.vggt.unlabeled import prepare_unlabeled, validation_windows

    root = prepare_unlabeled(footage, tmp_path, size=64, log=lambda *a: None)
    data = UnlabeledSequenceDataset(root, unlabeled_sequences(root, 2), H, W, augment=False)
    keys = validation_windows(data, frames=3, per_sequence=3)
    assert keys[:3] == [(0, 3, 0), (0, 3, 2), (0, 3, 3)]  # 6 frames: windows at 0, 1.5 -> 2, 3
    first, last = data[(0, 3, 0)]["images"], data[(0, 3, 3)]["images"]
    assert torch.equal(first[-1], data[(0, 3, 2)]["images"][0])  # frame 2 is the third of one, first of the other
    assert not torch.equal(first, last)
    assert torch.equal(data[(0, 3, 99)]["images"], last)  # a start past the end is the last window


def test_best_pt_keeps_the_starting_weights_when_training_never_beats_them(footage, tmp_path):
    """A run that only makes the held-out score worse leaves best.pt = the weights it started from."""
    start = tmp_path / "start.pt"
    train(make_config(footage, tmp_path / "init", steps=1))
    shutil.copyfile(tmp_path / "init" / "last.pt", start)
    out = tmp_path / "worse"
    train(make_config(footage, out, init=str(start), steps=6, save_every=2, lr=3e-3, min_lr=3e-3, warmup_fraction=0.0))
    report = json.loads((out / "report.json").read_text())
    if report["best_step"] == 0:  # measured: every validation was worse than the start
        a = torch.load(start, weights_only=False)["model"]
        b = torch.load(out / "best.pt", weights_only=False)["model"]
        assert all(torch.equal(a[k], b[k]) for k in b)
        assert "never beat the starting weights" in (out / "report.md").read_text()
    else:
        assert report["best"]["val_loss"] < report["before"]["val_loss"]


def test_a_self_supervised_checkpoint_exports_and_evaluates(footage, tmp_path):
    """What the run hands back is a deployable model: ``edgescene export`` gates it into an ONNX
    artifact and ``edgescene eval`` scores both the checkpoint and the artifact."""
    from edgescene.bench.accuracy import evaluate
    from edgescene.export.pipeline import ExportConfig, export_model
    from edgescene.train.data.synthetic import SynthConfig, generate_dataset

    run = tmp_path / "run"
    train(make_config(footage, run, steps=2, save_every=2))
    artifact = tmp_path / "onnx"
    export_model(
        ExportConfig(model=str(run / "last.pt"), format="onnx", out=str(artifact), height=H, width=W,
                     frames_range=(2, 3, 3)),
        log=lambda s: None,
    )  # fmt: skip
    assert (artifact / "artifact.json").is_file()
    heldout = tmp_path / "heldout"
    generate_dataset(SynthConfig(out_dir=str(heldout), scenes=1, frames=3, width=W, height=H, seed=9))
    by_checkpoint = next(iter(evaluate(run / "last.pt", heldout, frames=3).means().values()))
    by_artifact = next(iter(evaluate(artifact, heldout, frames=3).means().values()))
    assert 0 < by_checkpoint["abs_rel"] < 10
    # measured 0.386 vs 0.392: the artifact runs at its exported size, the checkpoint at its own default
    assert by_artifact["abs_rel"] == pytest.approx(by_checkpoint["abs_rel"], abs=0.02)


def test_known_intrinsics_from_a_metadata_json_reach_the_loss(footage, tmp_path):
    """The camera's calibration (preprocess's metadata JSON, no depth, no poses) comes back scaled to
    the training pixels and is trained on: the head's field of view is supervised by it."""
    k = [[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]]  # the 64x48 frames' pixels
    calibration = tmp_path / "calibration.json"
    frames = sorted(p.relative_to(footage).as_posix() for p in footage.rglob("*.png"))
    calibration.write_text(json.dumps({f: {"intrinsics": k} for f in frames}))
    run = tmp_path / "run"
    train(make_config(footage, run, steps=2, save_every=2, metadata_json=str(calibration)))
    data = UnlabeledSequenceDataset(run / "data", unlabeled_sequences(run / "data", 2), H, W, augment=False)
    sample = data[(0, 3, 0)]
    assert bool(sample["has_intrinsics"]) and sample["known_intrinsics"].shape == (3, 3, 3)
    fx = float(sample["known_intrinsics"][0, 0, 0])
    assert fx == pytest.approx(50.0 * W / 64, rel=0.05)  # 64x48 -> 42x28: the focal length scales with the frame
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in logged if "photometric" in row]
    assert len(steps) == 2 and all(row["intrinsics"] > 0 for row in steps)  # the head's field of view is trained
    plain = tmp_path / "plain"
    from edgescene.train.vggt.unlabeled import prepare_unlabeled

    prepare_plain = prepare_unlabeled(footage, plain, size=64, log=lambda *a: None)
    without = UnlabeledSequenceDataset(prepare_plain, unlabeled_sequences(prepare_plain, 2), H, W, augment=False)
    assert not bool(without[(0, 3, 0)]["has_intrinsics"])  # no calibration, the camera head's own
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({frames[0]: {"intrinsics": [[1, 2], [3]]}}))
    with pytest.raises(ValueError, match="1 entry is wrong, the first clip_0/000.png: metadata: 'intrinsics' must be"):
        train(make_config(footage, tmp_path / "bad_run", metadata_json=str(bad)))
    with pytest.raises(ValueError, match="already preprocessed"):
        train(make_config(run / "data", tmp_path / "again", metadata_json=str(calibration)))
    with pytest.raises(ValueError, match="--metadata-json belongs to self-supervised"):
        make_config(footage, tmp_path / "sup", self_supervised=False, metadata_json=str(calibration))


def test_too_short_footage_is_named_as_the_user_gave_it(footage, tmp_path):
    with pytest.raises(ValueError, match="no sequence of 7 frames") as caught:
        train(make_config(footage, tmp_path / "run", frames_per_sequence=(7, 7)))
    assert f"{footage} (preprocessed into {tmp_path / 'run' / 'data'})" in str(caught.value)


def test_frames_too_small_for_measured_poses_are_reported(footage, tmp_path, capsys):
    """At 28x42 the optical flow finds too few correspondences for any pair: the run says so."""
    train(make_config(footage, tmp_path / "run", steps=2, save_every=2, log_every=1))
    assert "no pair of frames got a measured pose" in capsys.readouterr().out


def _parsed(argv: list[str]) -> VGGTTrainConfig:
    import argparse

    from edgescene.train.vggt.cli import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(["--dataset-dir", "d", "--out-dir", "o", *argv]))


def test_self_supervised_runs_start_from_their_own_measured_defaults():
    from edgescene.train.vggt.config import SELF_SUPERVISED_DEFAULTS

    own = _parsed(["--self-supervised"])
    assert {k: getattr(own, k) for k in SELF_SUPERVISED_DEFAULTS} == SELF_SUPERVISED_DEFAULTS
    assert own.freeze == "aggregator" and own.intrinsics_weight == 0 and not own.augment
    assert VGGTTrainConfig.self_supervised_run(dataset_dir="d", out_dir="o") == own  # the Python API agrees
    fine_tune = _parsed([])  # the supervised fine-tune keeps upstream's
    assert (fine_tune.lr, fine_tune.freeze, fine_tune.augment, fine_tune.frames_per_sequence) == (
        5e-5, "none", True, (2, 8))  # fmt: skip
    assert fine_tune.patience is None and fine_tune.val_fraction == 0.1
    given = _parsed(["--self-supervised", "--lr", "1e-4", "--freeze", "none", "--augment", "--frames", "2", "6",
                     "--intrinsics-weight", "0.1", "--patience", "5", "--val-fraction", "0.3"])  # fmt: skip
    assert (given.lr, given.freeze, given.augment, given.frames_per_sequence) == (1e-4, "none", True, (2, 6))
    assert (given.intrinsics_weight, given.patience, given.val_fraction) == (0.1, 5, 0.3)
    assert _parsed(["--no-augment"]).augment is False
    assert _parsed(["--self-supervised", "--val-data", "v"]).val_fraction == 0.0  # nothing held out of the data


def test_by_default_only_the_depth_head_trains_and_the_cameras_hold(footage, tmp_path):
    from edgescene.train.vggt.trainer import build_model

    start = tmp_path / "start.pt"
    train(make_config(footage, tmp_path / "init", steps=1))
    shutil.copyfile(tmp_path / "init" / "last.pt", start)
    config = VGGTTrainConfig.self_supervised_run(
        dataset_dir=str(footage), out_dir=str(tmp_path / "held"), preset="vggt_tiny", init=str(start), steps=4,
        frames_per_sequence=(2, 3), image_height=H, image_width=W, lr=1e-3, log_every=1, save_every=2, device="cpu",
        num_workers=0, val_fraction=0.34, patience=None,
    )  # fmt: skip
    model = build_model(config, log=lambda *a: None)
    trained = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trained == {"depth_head"}
    train(config)
    a = torch.load(start, weights_only=False)["model"]
    b = torch.load(tmp_path / "held" / "last.pt", weights_only=False)["model"]
    moved = {k.split(".")[0] for k in b if not torch.equal(a[k], b[k])}
    assert moved == {"depth_head"}  # the aggregator and the camera head are bit for bit the start's


def test_too_little_footage_and_too_few_held_out_windows_are_warned_of(footage, tmp_path, capsys):
    from edgescene.train.vggt.unlabeled import FOOTAGE_CURVE, RELIABLE_SEQUENCES, footage_warning

    assert footage_warning(RELIABLE_SEQUENCES) is None and footage_warning(100) is None
    few = footage_warning(RELIABLE_SEQUENCES - 1)
    assert f"{FOOTAGE_CURVE[8]:+.1f} % with 8" in few and f"fewer than {RELIABLE_SEQUENCES}" in few  # the measured
    out = tmp_path / "few"
    train(make_config(footage, out, steps=2, val_fraction=0.0))  # 3 sequences, none held out
    report = json.loads((out / "report.json").read_text())
    assert report["warnings"][0].startswith("warning: 3 sequence(s) of footage")
    assert "no held-out windows" in report["warnings"][1] and "--val-fraction 0.2" in report["warnings"][1]
    assert "**Warning:** 3 sequence(s) of footage" in (out / "report.md").read_text()
    assert "warning: 3 sequence(s) of footage" in capsys.readouterr().out  # said when the run starts, too
    train(make_config(footage, tmp_path / "one", steps=2, frames_per_sequence=(6, 6)))  # one 6-frame window held out
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    assert any(w.startswith("warning: 1 held-out window(s): too few") for w in report["warnings"])


def test_one_sequence_holds_its_end_out_to_pick_best_pt(footage, tmp_path, capsys):
    from edgescene.train.vggt.unlabeled import hold_out_end

    one = tmp_path / "one_clip"
    shutil.copytree(footage / "clip_0", one / "clip_0")  # a user with one video's worth: 6 frames
    out = tmp_path / "run"
    train(make_config(one, out, steps=2, val_fraction=0.2))
    said = capsys.readouterr().out
    assert "one sequence: its last 3 frames are held out" in said and "1 sequence(s) of footage" in said
    report = json.loads((out / "report.json").read_text())
    assert "val_loss" in report["before"] and (out / "best.pt").is_file()  # checked against its held-out end
    assert not any("no held-out windows" in w for w in report["warnings"])
    entries = list(range(5))  # too short to keep a window of 3 for training after holding 3 out: nothing held
    assert hold_out_end({"a": entries}, 0.2, (2, 3)) == ({"a": entries}, ["a"], [])
    kept, train_names, held = hold_out_end({"a": list(range(20))}, 0.2, (2, 3))
    assert kept == {"a": list(range(16)), "a (held-out end)": [16, 17, 18, 19]} and train_names == ["a"]


def test_the_preset_comes_from_the_init_file_when_not_named(footage, tmp_path, capsys):
    train(make_config(footage, tmp_path / "init", steps=1))  # a vggt_tiny checkpoint
    argv = ["--self-supervised", "--dataset-dir", str(footage), "--out-dir", str(tmp_path / "cli"), "--init",
            str(tmp_path / "init" / "last.pt"), "--steps", "1", "--frames", "2", "3", "--height", str(H), "--width",
            str(W), "--device", "cpu", "--workers", "0"]  # fmt: skip
    assert cli_main(argv) == 0
    assert re.search(r"preset += 'vggt_tiny'", capsys.readouterr().out)  # not the default vggt_1b it would refuse


def _distance(a: dict, b: dict) -> float:
    return sum(float(((a[k].float() - b[k].float()) ** 2).sum()) for k in a)


def test_the_anchor_holds_the_weights_near_the_start_and_resumes_to_the_same_weights(footage, tmp_path):
    start = tmp_path / "start.pt"
    train(make_config(footage, tmp_path / "init", steps=1))
    shutil.copyfile(tmp_path / "init" / "last.pt", start)
    init = torch.load(start, weights_only=False)["model"]
    free, held = tmp_path / "free", tmp_path / "held"
    train(make_config(footage, free, init=str(start)))
    train(make_config(footage, held, init=str(start), anchor_weight=100.0))
    moved_free = _distance(torch.load(free / "last.pt", weights_only=False)["model"], init)
    held_ckpt = torch.load(held / "last.pt", weights_only=False)
    moved_held = _distance(held_ckpt["model"], init)
    assert 0 < moved_held < 0.1 * moved_free  # measured: 0.025 against 1.12
    anchor = held_ckpt["train_state"]["anchor"]
    assert anchor and all(torch.equal(anchor[k], init[k]) for k in anchor)  # the start, not the last weights
    logged = [json.loads(line) for line in (held / "metrics.jsonl").read_text().splitlines()]
    assert any(row.get("anchor", 0) > 0 for row in logged)
    split = tmp_path / "split"  # resumed: anchored to where the run started, not to the resumed weights
    train(make_config(footage, split, init=str(start), anchor_weight=100.0), stop_at_step=2)
    train(make_config(footage, split, init=str(start), anchor_weight=100.0, resume="last"))
    resumed = torch.load(split / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(resumed[k], held_ckpt["model"][k]) for k in resumed)
    with pytest.raises(ValueError, match="resume with the --freeze and loss weights the run started with"):
        train(make_config(footage, split, init=str(start), anchor_weight=100.0, resume="last", steps=6,
                          freeze="aggregator"))  # fmt: skip
    with pytest.raises(ValueError, match="saved without the starting weights"):
        train(make_config(footage, free, anchor_weight=1.0, resume=str(free / "last.pt"), steps=6))
    with pytest.raises(ValueError, match="anchor_weight must be a finite number >= 0"):
        make_config(footage, free, anchor_weight=-1.0)
    assert _parsed(["--self-supervised", "--anchor-weight", "0.5"]).anchor_weight == 0.5
