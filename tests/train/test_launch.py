"""Training in a background process: live metrics, a stop that saves a resumable checkpoint, failures reported."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgescene.train.common import load_checkpoint
from edgescene.train.data.synthetic import SynthConfig, generate_dataset
from edgescene.train.dinov3.config import DinoTrainConfig
from edgescene.train.launch import read_metrics, start_training
from edgescene.train.vggt.config import VGGTTrainConfig

pytestmark = pytest.mark.slow  # real training runs in spawned processes (~1 min)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("launch") / "data"
    generate_dataset(SynthConfig(out_dir=str(root), scenes=2, frames=4, width=64, height=48))
    return root


def _wait_for(predicate, timeout_s: float = 120.0, what: str = "condition"):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(what)


def test_vggt_run_reports_progress_and_stops_with_a_checkpoint(dataset, tmp_path):
    config = VGGTTrainConfig(
        dataset_dir=str(dataset),
        out_dir=str(tmp_path / "run"),
        preset="vggt_tiny",
        steps=10_000,
        frames_per_sequence=(2, 2),
        image_height=28,
        image_width=42,
        log_every=1,
        save_every=10_000,
        device="cpu",
        num_workers=0,
        val_fraction=0.0,
    )
    run = start_training(config)
    try:
        _wait_for(lambda: len(run.metrics()) >= 3 or not run.running, what="three logged steps")
        assert run.state == "running", run.log_tail()
        progress = run.progress()
        assert progress["kind"] == "vggt" and progress["steps"] == 10_000 and progress["step"] >= 3
        assert progress["loss"] is not None and progress["loss"] > 0
        state = run.stop(timeout_s=120)
    finally:
        run.kill()
    assert state == "stopped", run.log_tail()
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt", kind="vggt")
    logged = max(r["step"] for r in read_metrics(tmp_path / "run"))
    assert 3 <= ckpt["step"] < 10_000 and ckpt["step"] >= logged  # saved after the last step it ran
    assert "stop requested" in run.log_tail(50)
    assert run.progress()["checkpoint"] == str(tmp_path / "run" / "last.pt")


def test_dinov3_run_stops_cleanly(dataset, tmp_path):
    config = DinoTrainConfig(
        dataset_dir=str(dataset),
        out_dir=str(tmp_path / "dino"),
        preset="dinov3_tiny",
        steps=10_000,
        batch_size=2,
        warmup_steps=1,
        global_crop_size=32,
        local_crop_size=16,
        local_crops_number=1,
        head_prototypes=32,
        head_hidden_dim=32,
        head_bottleneck_dim=16,
        freeze_last_layer_steps=0,
        teacher_temp_warmup_steps=1,
        log_every=1,
        save_every=10_000,
        num_workers=0,
        device="cpu",
    )
    run = start_training(config)
    try:
        _wait_for(lambda: len(run.metrics()) >= 2 or not run.running, what="two logged steps")
        assert run.state == "running", run.log_tail()
        assert run.stop(timeout_s=120) == "stopped", run.log_tail()
    finally:
        run.kill()
    ckpt = load_checkpoint(tmp_path / "dino" / "last.pt", kind="dinov3")
    assert 2 <= ckpt["step"] < 10_000


def test_a_failing_run_reports_its_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    config = VGGTTrainConfig(
        dataset_dir=str(empty),
        out_dir=str(tmp_path / "run"),
        preset="vggt_tiny",
        steps=5,
        image_height=28,
        image_width=42,
        device="cpu",
        num_workers=0,
    )
    run = start_training(config)
    assert run.wait(120) == "failed"
    assert "manifest" in run.error().lower()


def test_start_training_needs_a_trainer_config():
    with pytest.raises(TypeError, match="VGGTTrainConfig or DinoTrainConfig"):
        start_training({"steps": 3})
