"""DINOv3 trainer on the CPU: data (IR replication, 16-bit scaling, multi-crop), losses on hand-checkable
inputs, optimizer groups, and short real runs on a tiny synthetic dataset (loss goes down, checkpoint
loads with ``load_dinov3``, exact resume, ``--init``, a 2-process gloo DDP run under torchrun)."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edgescene.core.manifest import Entry, read_manifest, write_manifest
from edgescene.models import build_dinov3, load_dinov3
from edgescene.train.common import load_checkpoint
from edgescene.train.data.synthetic import SynthConfig, generate_dataset
from edgescene.train.dinov3 import cli
from edgescene.train.dinov3.config import DinoTrainConfig
from edgescene.train.dinov3.data import MultiCropAugmentation, read_image
from edgescene.train.dinov3.losses import dino_loss, ibot_loss, koleo_loss, sample_masks, sinkhorn_knopp
from edgescene.train.dinov3.trainer import build_models, param_groups, train

TINY = dict(
    preset="dinov3_tiny",
    batch_size=4,
    lr=1e-3,
    warmup_steps=3,
    global_crop_size=64,
    local_crop_size=32,
    local_crops_number=2,
    head_prototypes=64,
    head_hidden_dim=64,
    head_bottleneck_dim=32,
    freeze_last_layer_steps=2,
    teacher_temp_warmup_steps=10,
    log_every=1,
    save_every=100,
    num_workers=0,
    device="cpu",
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """8 synthetic RGB frames plus one 16-bit single-channel IR image, in one manifest."""
    root = tmp_path_factory.mktemp("dino_data")
    generate_dataset(SynthConfig(out_dir=str(root), scenes=2, frames=4, width=64, height=48))
    rng = np.random.default_rng(0)
    ir = (20000 + 3000 * np.sin(np.arange(64) / 5.0)[None, :] + rng.normal(0, 200, (48, 64))).astype(np.uint16)
    cv2.imwrite(str(root / "ir_0.png"), ir)
    manifest = read_manifest(root)
    manifest.entries.append(
        Entry(
            id="ir_0",
            path="ir_0.png",
            source="ir_0.png",
            modality="ir",
            width=64,
            height=48,
            channels=1,
            bit_depth=16,
            original_width=64,
            original_height=48,
        )
    )
    write_manifest(manifest, root)
    return root


def make_config(dataset: Path, out: Path, **overrides) -> DinoTrainConfig:
    return DinoTrainConfig(dataset_dir=str(dataset), out_dir=str(out), **{**TINY, **overrides})


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run30(dataset, tmp_path_factory) -> tuple[DinoTrainConfig, Path]:
    out = tmp_path_factory.mktemp("dino_run30")
    config = make_config(dataset, out, steps=30)
    train(config)
    return config, out


# -- data -----------------------------------------------------------------------------------------


def test_ir_is_replicated_to_three_channels_and_16_bit_scaled_by_its_percentiles(tmp_path):
    ramp = np.arange(100 * 100, dtype=np.uint16).reshape(100, 100) * 3 + 1000
    cv2.imwrite(str(tmp_path / "ir.png"), ramp)
    img, single = read_image(tmp_path / "ir.png")
    assert single and img.shape == (3, 100, 100) and img.dtype == torch.float32
    assert torch.equal(img[0], img[1]) and torch.equal(img[0], img[2])
    low, high = np.percentile(ramp, (1, 99))
    expected = np.clip((ramp.astype(np.float32) - low) / (high - low), 0, 1)
    assert np.allclose(img[0].numpy(), expected, atol=1e-6)
    assert 0.009 < float((img[0] == 0).float().mean()) < 0.011 and 0.009 < float((img[0] == 1).float().mean()) < 0.011


def test_colour_images_are_read_as_rgb(tmp_path):
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    cv2.imwrite(str(tmp_path / "blue.png"), bgr)
    img, single = read_image(tmp_path / "blue.png")
    assert not single and img[2].min() == 1.0 and img[:2].max() == 0.0


def test_multi_crop_shapes_are_seeded_and_single_channel_sources_stay_gray():
    aug = MultiCropAugmentation(64, 32, 3, (0.32, 1.0), (0.05, 0.32), (0.5,) * 3, (0.25,) * 3)
    img = torch.rand(3, 48, 64)
    a, b, c = (
        aug(img, False, random.Random("k")),
        aug(img, False, random.Random("k")),
        aug(img, False, random.Random("j")),
    )
    assert a["global_crops"].shape == (2, 3, 64, 64) and a["local_crops"].shape == (3, 3, 32, 32)
    assert torch.equal(a["global_crops"], b["global_crops"]) and not torch.equal(a["global_crops"], c["global_crops"])
    gray = aug(img[:1].expand(3, -1, -1), True, random.Random("k"))
    for crops in gray.values():
        assert torch.allclose(crops[:, 0], crops[:, 1]) and torch.allclose(crops[:, 0], crops[:, 2])


# -- losses ---------------------------------------------------------------------------------------


def test_sinkhorn_knopp_rows_sum_to_one_and_prototypes_share_the_mass():
    logits = torch.randn(12, 6, generator=torch.Generator().manual_seed(0))
    q = sinkhorn_knopp(logits, teacher_temp=0.5)
    assert torch.allclose(q.sum(dim=1), torch.ones(12), atol=1e-6)
    q_long = sinkhorn_knopp(logits, teacher_temp=0.5, n_iterations=200)
    assert torch.allclose(q_long.sum(dim=0), torch.full((6,), 12 / 6), atol=1e-4)
    assert (q.sum(dim=0) - 2).abs().max() < (torch.softmax(logits / 0.5, -1).sum(0) - 2).abs().max()


def test_dino_loss_of_identical_distributions_is_their_entropy():
    probs = torch.softmax(torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    student_logits = 0.1 * torch.log(probs)  # softmax(logits / 0.1) == probs
    entropy = -(probs * probs.log()).sum(-1).mean()
    assert torch.allclose(dino_loss(student_logits, probs, student_temp=0.1), entropy, atol=1e-5)
    # global crops: only the off-diagonal pairs (A vs B, B vs A) count
    s, t = torch.randn(2, 3, 8), torch.softmax(torch.randn(2, 3, 8), -1)
    ce = lambda i, j: -(t[j] * torch.log_softmax(s[i] / 0.1, -1)).sum(-1).mean()
    assert torch.allclose(dino_loss(s, t, 0.1, ignore_diagonal=True), (ce(0, 1) + ce(1, 0)) / 2, atol=1e-5)


def test_ibot_loss_weights_each_image_by_its_masked_patches():
    masks = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    probs = torch.softmax(torch.randn(3, 4), -1)
    per_patch = -(probs * probs.log()).sum(-1)
    expected = ((per_patch[0] + per_patch[1]) / 2 + per_patch[2]) / 3  # 3 images, the last one unmasked
    assert torch.allclose(ibot_loss(0.1 * probs.log(), probs, masks, 0.1), expected, atol=1e-5)


def test_koleo_decreases_when_points_spread():
    clustered = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.98, -0.1], [0.97, 0.2]])
    spread = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert koleo_loss(spread) < koleo_loss(clustered)
    assert math.isclose(float(koleo_loss(spread)), -math.log(math.sqrt(2)), abs_tol=1e-5)


def test_block_masks_follow_the_upstream_collate():
    masks = sample_masks(8, (4, 4), (0.1, 0.5), 0.5, random.Random(0))
    assert masks.shape == (8, 16) and masks.dtype == torch.bool
    counts = sorted(masks.sum(1).tolist())
    assert counts[:4] == [0, 0, 0, 0] and all(0 < c <= 8 for c in counts[4:])
    assert torch.equal(masks, sample_masks(8, (4, 4), (0.1, 0.5), 0.5, random.Random(0)))


# -- optimizer ------------------------------------------------------------------------------------


def test_param_groups_apply_layer_decay_patch_embed_multiplier_and_no_decay_rules(tmp_path):
    config = make_config(tmp_path, tmp_path, layer_decay=0.5, patch_embed_lr_mult=0.2)
    student, _ = build_models(config)
    where = {id(p): g for g in param_groups(student, config) for p in g["params"]}
    param = dict(student.named_parameters())
    group = lambda name: where[id(param[name])]
    assert group("backbone.cls_token")["lr_mult"] == 0.5**3 and group("backbone.cls_token")["wd_mult"] == 0.0
    assert group("backbone.patch_embed.proj.weight")["lr_mult"] == pytest.approx(0.2 * 0.5**3)
    assert group("backbone.blocks.0.attn.qkv.weight")["lr_mult"] == 0.5**2
    assert group("backbone.blocks.1.mlp.fc1.weight")["wd_mult"] == 1.0
    for name in ("backbone.blocks.1.ls1.gamma", "backbone.blocks.1.norm1.weight", "backbone.blocks.1.mlp.fc1.bias"):
        assert group(name)["wd_mult"] == 0.0
    assert group("backbone.norm.weight")["lr_mult"] == 1.0 and group("dino_head.mlp.0.weight")["lr_mult"] == 1.0
    assert group("ibot_head.last_layer.weight")["last_layer"] and not group("ibot_head.mlp.4.weight")["last_layer"]
    assert len(where) == len(param)


# -- training runs --------------------------------------------------------------------------------


def test_thirty_steps_lower_the_training_loss(run30):
    _, out = run30
    totals = [m["total"] for m in read_metrics(out)]
    assert len(totals) == 30 and all(math.isfinite(t) for t in totals)
    assert np.mean(totals[-5:]) < np.mean(totals[:5]) - 0.3
    last = read_metrics(out)[-1]
    assert {"dino_local", "dino_global", "ibot", "koleo", "lr", "momentum", "teacher_temp"} <= set(last)


def test_checkpoint_model_is_the_trained_teacher_in_official_keys(run30):
    config, out = run30
    ckpt = load_checkpoint(out / "last.pt", kind="dinov3")
    assert ckpt["step"] == 30 and ckpt["preset"] == "dinov3_tiny"
    backbone = load_dinov3(out / "last.pt")  # strict, official keys, preset detected
    assert backbone.config == build_dinov3("dinov3_tiny").config
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, ckpt["train_state"]["teacher"][key])
    initial = build_models(config)[1].backbone.state_dict()
    assert not torch.equal(backbone.state_dict()["blocks.0.attn.qkv.weight"], initial["blocks.0.attn.qkv.weight"])
    assert set(ckpt["train_state"]) >= {"student", "teacher", "heads", "optimizer", "step", "torch_rng_state"}


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(dataset, tmp_path):
    train(make_config(dataset, tmp_path / "straight", steps=6))
    train(make_config(dataset, tmp_path / "split", steps=6, stop_at=3))
    half = load_checkpoint(tmp_path / "split" / "last.pt")
    assert half["step"] == 3 and half["train_state"]["optimizer"]["state"]
    with pytest.raises(FileExistsError):
        train(make_config(dataset, tmp_path / "split", steps=6))
    train(make_config(dataset, tmp_path / "split", steps=6, resume=True))
    a, b = load_checkpoint(tmp_path / "straight" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["step"] == b["step"] == 6
    for part in ("student", "teacher"):
        for key, value in a["train_state"][part].items():
            assert torch.equal(value, b["train_state"][part][key]), f"{part}.{key}"
    for head, state in a["train_state"]["heads"].items():
        for key, value in state.items():
            assert torch.equal(value, b["train_state"]["heads"][head][key]), f"{head}.{key}"
    for key, value in a["train_state"]["optimizer"]["state"].items():
        assert torch.equal(value["exp_avg"], b["train_state"]["optimizer"]["state"][key]["exp_avg"])
    steps_b = [m["step"] for m in read_metrics(tmp_path / "split")]
    assert steps_b == [1, 2, 3, 4, 5, 6]
    assert [m["total"] for m in read_metrics(tmp_path / "straight")] == [
        m["total"] for m in read_metrics(tmp_path / "split")
    ]


def test_resume_without_a_checkpoint_is_refused(dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(make_config(dataset, tmp_path, steps=3, resume=True))


def test_init_loads_a_released_backbone_and_starts_fresh_heads(dataset, tmp_path):
    torch.manual_seed(123)
    released = build_dinov3("dinov3_tiny")
    torch.save(released.state_dict(), tmp_path / "tiny_backbone.pth")
    scratch = make_config(dataset, tmp_path / "out", steps=3)
    config = replace(scratch, init=str(tmp_path / "tiny_backbone.pth"))
    student, teacher = build_models(config)
    fresh, _ = build_models(scratch)
    for key, value in released.state_dict().items():
        assert torch.equal(student.backbone.state_dict()[key], value) and torch.equal(
            teacher.backbone.state_dict()[key], value
        )
    assert not torch.equal(fresh.backbone.state_dict()["cls_token"], released.state_dict()["cls_token"])
    for name in ("dino_head", "ibot_head"):
        for key, value in getattr(fresh, name).state_dict().items():
            assert torch.equal(getattr(student, name).state_dict()[key], value)
    train(config)
    trained = load_dinov3(tmp_path / "out" / "last.pt").state_dict()["blocks.0.attn.qkv.weight"]
    start = released.state_dict()["blocks.0.attn.qkv.weight"]
    assert not torch.equal(trained, start) and torch.allclose(trained, start, atol=1e-2)


def test_init_with_the_wrong_preset_is_refused(dataset, tmp_path):
    torch.save(build_dinov3("dinov3_tiny").state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(ValueError):
        build_models(make_config(dataset, tmp_path, steps=3, preset="dinov3_vits16", init=str(tmp_path / "tiny.pth")))


def test_cli_options_mirror_the_config(dataset, tmp_path):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        [
            "--dataset-dir",
            str(dataset),
            "--out-dir",
            str(tmp_path),
            "--preset",
            "dinov3_tiny",
            "--global-crops-scale",
            "0.4",
            "1.0",
            "--no-horizontal-flips",
            "--resume",
            "--stop-at",
            "5",
        ]
    )
    config = cli.config_from_args(args)
    assert config == DinoTrainConfig(
        dataset_dir=str(dataset),
        out_dir=str(tmp_path),
        preset="dinov3_tiny",
        global_crops_scale=(0.4, 1.0),
        horizontal_flips=False,
        resume=True,
        stop_at=5,
    )
    with pytest.raises(ValueError, match="multiple of the patch size"):
        replace(config, local_crop_size=40)


@pytest.mark.slow
def test_two_process_gloo_ddp_run_under_torchrun(dataset, tmp_path):
    out = tmp_path / "ddp"
    options = {"--dataset-dir": dataset, "--out-dir": out, "--steps": 3, "--save-every": 100, "--log-every": 1}
    options.update({"--" + k.replace("_", "-"): v for k, v in TINY.items() if k not in ("save_every", "log_every")})
    argv = [str(x) for kv in options.items() for x in kv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "edgescene.train.dinov3.cli",
        *argv,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout and "dinov3 training config:" in proc.stdout
    assert sorted(p.name for p in out.glob("*.pt")) == ["last.pt"]
    ckpt = load_checkpoint(out / "last.pt", kind="dinov3")
    assert ckpt["step"] == 3 and len(read_metrics(out)) == 3
    load_dinov3(out / "last.pt")
