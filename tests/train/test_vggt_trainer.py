"""VGGT trainer on a tiny synthetic dataset (CPU): loss goes down, checkpoints load and export-ready,
resume equals an uninterrupted run, --init + --freeze, a 2-process gloo DDP run, ground-truth
normalisation and the losses on hand-checkable inputs, data samples, and unusable datasets."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from edgescene.core.geometry import inverse_se3, project_points, quat_to_rotmat, unproject_depth
from edgescene.core.manifest import read_manifest, write_manifest
from edgescene.core.preprocess import choose_model_size
from edgescene.models import load_vggt
from edgescene.models.vggt.pose_encoding import extri_intri_to_pose_encoding
from edgescene.models.weights.common import StateDictMismatchError
from edgescene.train.common import load_checkpoint
from edgescene.train.data.synthetic import SynthConfig, generate_dataset
from edgescene.train.vggt.cli import main as cli_main
from edgescene.train.vggt.config import VGGTTrainConfig
from edgescene.train.vggt.data import SequenceDataset, StepBatchSampler, usable_sequences
from edgescene.train.vggt.losses import (
    LossConfig,
    camera_loss,
    filter_by_quantile,
    normal_loss,
    regression_loss,
    vggt_loss,
)
from edgescene.train.vggt.normalize import normalize_batch
from edgescene.train.vggt.trainer import train

H, W = 28, 42


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(SynthConfig(out_dir=str(root), scenes=3, frames=6, width=64, height=48))
    return root


def make_config(data: Path, out: Path, **overrides) -> VGGTTrainConfig:
    base = dict(
        dataset_dir=str(data),
        out_dir=str(out),
        preset="vggt_tiny",
        steps=6,
        batch_size=2,
        frames_per_sequence=(2, 3),
        image_height=H,
        image_width=W,
        lr=1e-3,
        log_every=1,
        save_every=1000,
        device="cpu",
        num_workers=0,
        val_fraction=0.0,
        seed=0,
    )
    return VGGTTrainConfig(**{**base, **overrides})


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(make_config(dataset, out, steps=30, save_every=30, val_fraction=0.34))
    return out


# ------------------------------------------------------------------------------------------- training runs


def test_thirty_steps_lower_the_loss(trained):
    records = [r for r in read_metrics(trained) if "total" in r]
    assert [r["step"] for r in records] == list(range(1, 31))
    totals = [r["total"] for r in records]
    assert all(math.isfinite(t) for t in totals)
    early, late = np.mean(totals[:6]), np.mean(totals[-6:])
    assert late < 0.75 * early, (early, late)
    for key in ("camera", "depth", "point", "depth_grad", "point_grad", "lr", "grad_norm"):
        assert key in records[-1]
    val = [r for r in read_metrics(trained) if "val_abs_rel" in r]
    assert len(val) == 1 and math.isfinite(val[0]["val_abs_rel"]) and math.isfinite(val[0]["val_rot_deg"])


def test_checkpoint_loads_strictly_with_load_vggt_and_predicts(trained):
    ckpt = load_checkpoint(trained / "last.pt", kind="vggt")
    assert ckpt["step"] == 30 and ckpt["preset"] == "vggt_tiny"
    assert {"optimizer", "torch_rng"} <= set(ckpt["train_state"])
    assert not any(k.startswith("track_head.") for k in ckpt["model"])
    model = load_vggt(trained / "last.pt")
    assert model.track_head is None and model.point_head is not None
    assert set(model.state_dict()) == set(ckpt["model"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt["model"][key]), key
    with torch.no_grad():
        out = model(torch.rand(3, 3, H, W))
    assert out["depth"].shape == (1, 3, H, W, 1) and torch.isfinite(out["depth"]).all()
    assert out["pose_enc"].shape == (1, 3, 9)


def test_resume_equals_an_uninterrupted_run(dataset, tmp_path):
    full, parts = tmp_path / "full", tmp_path / "parts"
    train(make_config(dataset, full))
    train(make_config(dataset, parts), stop_at_step=3)
    assert load_checkpoint(parts / "last.pt")["step"] == 3
    train(make_config(dataset, parts, resume="last"))
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(parts / "last.pt")
    assert a["step"] == b["step"] == 6
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], atol=1e-6, rtol=0), key
    totals_full = [r["total"] for r in read_metrics(full)]
    totals_parts = [r["total"] for r in read_metrics(parts)]
    np.testing.assert_allclose(totals_parts, totals_full, atol=1e-5)


def test_init_and_freeze_aggregator(trained, dataset, tmp_path):
    init = load_checkpoint(trained / "last.pt")["model"]
    train(make_config(dataset, tmp_path, init=str(trained / "last.pt"), freeze="aggregator", steps=3))
    after = load_checkpoint(tmp_path / "last.pt")["model"]
    assert set(after) == set(init)
    agg = [k for k in init if k.startswith("aggregator.")]
    assert agg and all(torch.equal(init[k], after[k]) for k in agg)
    for head in ("camera_head.", "depth_head.", "point_head."):
        assert any(not torch.equal(init[k], after[k]) for k in init if k.startswith(head)), head
    with pytest.raises(StateDictMismatchError):  # --init is strict: a file of another preset is refused
        train(
            make_config(
                dataset,
                tmp_path / "bad",
                init=str(trained / "last.pt"),
                preset="vggt_tiny_dinov3",
                image_height=32,
                image_width=48,
            )
        )


@pytest.mark.slow
def test_two_process_gloo_ddp_run(dataset, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "edgescene.train.vggt.cli",
        "--data",
        str(dataset),
        "--out",
        str(out),
        "--preset",
        "vggt_tiny",
        "--height",
        str(H),
        "--width",
        str(W),
        "--frames",
        "2",
        "3",
        "--steps",
        "3",
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--log-every",
        "1",
        "--save-every",
        "3",
        "--val-fraction",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("resolved config") == 1  # printed by rank 0 only
    assert load_checkpoint(out / "last.pt", kind="vggt")["step"] == 3
    assert len(read_metrics(out)) == 3
    load_vggt(out / "last.pt")


# ---------------------------------------------------------------------------- normalisation and losses


def random_batch(b=2, s=3, h=16, w=20, seed=0):
    rng = np.random.default_rng(seed)
    R = quat_to_rotmat(rng.normal(size=(b, s, 4)))
    E = np.concatenate([R, rng.normal(size=(b, s, 3, 1))], axis=-1)
    K = np.tile(np.array([[18.0, 0, w / 2], [0, 17.0, h / 2], [0, 0, 1]]), (b, s, 1, 1))
    depth = rng.uniform(1.0, 5.0, size=(b, s, h, w))
    valid = rng.random((b, s, h, w)) > 0.2
    depth = np.where(valid, depth, 0.0)
    return E, K, depth, valid


def test_normalisation_first_camera_identity_mean_distance_one_and_numpy_agreement():
    E, K, depth, valid = random_batch()
    t = lambda x: torch.from_numpy(x)
    gt = normalize_batch(t(E), t(K), t(depth), t(valid))
    first = gt["extrinsics"][:, 0]
    assert torch.allclose(first, torch.eye(3, 4, dtype=first.dtype).expand_as(first), atol=1e-12)
    dist = torch.linalg.vector_norm(gt["world_points"], dim=-1)
    for i in range(E.shape[0]):
        assert dist[i][gt["valid"][i]].mean().item() == pytest.approx(1.0, abs=1e-9)
        rel = np.concatenate(
            [
                E[i, :, :, :3] @ inverse_se3(E[i, 0])[:, :3],
                (E[i, :, :, :3] @ inverse_se3(E[i, 0])[:, 3:]) + E[i, :, :, 3:],
            ],
            axis=-1,
        )
        ref = unproject_depth(depth[i], rel, K[i]) / gt["scale"][i].item()
        np.testing.assert_allclose(gt["world_points"][i].numpy()[valid[i]], ref[valid[i]], atol=1e-9)
        np.testing.assert_allclose(gt["depth"][i].numpy(), depth[i] / gt["scale"][i].item(), atol=1e-12)
    # a world twice as big normalises to the same ground truth
    E2 = E.copy()
    E2[..., 3] *= 2
    gt2 = normalize_batch(t(E2), t(K), t(depth * 2), t(valid))
    for key in ("extrinsics", "depth", "world_points"):
        assert torch.allclose(gt[key], gt2[key], atol=1e-9), key


def perfect_predictions(gt, iterations=4):
    pose = extri_intri_to_pose_encoding(gt["extrinsics"], gt["intrinsics"], tuple(gt["depth"].shape[-2:]))
    ones = torch.ones_like(gt["depth"])
    return {
        "pose_enc_list": [pose.clone() for _ in range(iterations)],
        "depth": gt["depth"][..., None],
        "depth_conf": ones,
        "world_points": gt["world_points"],
        "world_points_conf": ones,
    }


@pytest.mark.parametrize("point_gradient", ["normal", "grad"])
def test_perfect_predictions_give_zero_loss(point_gradient):
    gt = normalize_batch(*(torch.from_numpy(x) for x in random_batch()))
    losses = vggt_loss(perfect_predictions(gt), gt, LossConfig(point_gradient=point_gradient))
    assert {"total", "camera", "depth", "point", "depth_grad", "point_grad"} <= set(losses)
    for key, value in losses.items():
        assert abs(value.item()) < 1e-6, key


def test_camera_loss_iteration_weights():
    gt = torch.zeros(2, 3, 9)
    errors = [1.0, 2.0, 3.0, 4.0]
    preds = [gt.clone() for _ in errors]
    for pred, e in zip(preds, errors, strict=True):
        pred[..., :3] += e
    out = camera_loss(preds, gt, torch.tensor([True, True]))
    expected = (0.6**3 * 1 + 0.6**2 * 2 + 0.6 * 3 + 1.0 * 4) / 4
    assert out["camera_T"].item() == pytest.approx(expected)
    assert out["camera_R"].item() == 0 and out["camera_FL"].item() == 0
    assert out["camera"].item() == pytest.approx(expected)  # weight_trans 1
    preds[-1][..., 7:] += 1.0  # the focal term weighs 0.5
    assert camera_loss(preds, gt, torch.tensor([True, True]))["camera"].item() == pytest.approx(expected + 0.5 / 4)
    # samples whose first frame has too few valid pixels do not count
    masked = camera_loss(preds, gt, torch.tensor([False, False]))
    assert masked["camera"].item() == 0


def test_regression_terms_by_hand():
    gt = torch.rand(1, 2, 10, 12, 1) + 1
    mask = torch.ones(1, 2, 10, 12, dtype=torch.bool)
    conf = torch.full((1, 2, 10, 12), 2.0)
    terms = regression_loss(gt + 0.5, gt, mask, conf, "grad")
    assert terms["reg"].item() == pytest.approx(0.5)
    assert terms["conf"].item() == pytest.approx(0.5 * 2 - 0.2 * math.log(2))
    assert terms["grad"].item() == pytest.approx(0.0, abs=1e-7)  # a constant offset has no gradient
    bumpy = gt.clone()
    bumpy[0, 0, 5, 6] += 1.0
    assert regression_loss(bumpy, gt, mask, torch.ones_like(conf), "grad")["grad"].item() > 0
    # the 0.98 trimming drops the top 2 % once there are more than 1000 values
    values = torch.arange(2000, dtype=torch.float64) / 2000
    assert filter_by_quantile(values, 0.98).numel() == 1959
    assert filter_by_quantile(values[:900], 0.98).numel() == 900
    points = torch.rand(2, 8, 9, 3)
    m = torch.ones(2, 8, 9, dtype=torch.bool)
    assert normal_loss(points, points, m).item() == pytest.approx(0.0, abs=1e-6)
    assert normal_loss(points + 0.3 * torch.rand_like(points), points, m).item() > 0.01


# ------------------------------------------------------------------------------------------------ data


def test_samples_have_the_documented_shapes_and_consistent_geometry(dataset):
    sequences = usable_sequences(dataset, 2)
    plain = SequenceDataset(dataset, sequences, H, W, augment=False)
    sample = plain[(0, 3, 0)]
    assert sample["images"].shape == (3, 3, H, W) and sample["images"].dtype == torch.float32
    assert sample["images"].min() >= 0 and sample["images"].max() <= 1
    assert sample["depth"].shape == sample["valid"].shape == (3, H, W) and sample["valid"].dtype == torch.bool
    assert torch.equal(sample["valid"], sample["depth"] > 0)
    assert sample["extrinsics"].shape == (3, 3, 4) and sample["intrinsics"].shape == (3, 3, 3)
    entry = sequences[plain.names[0]][0]
    # validation samples go through upstream's preprocessing (the height rounded to 14: fy != fx here)
    resize, _ = choose_model_size(entry.height, entry.width, "crop", [(H, W)], max(H, W))
    expected_K = resize.to_model_intrinsics(np.array(entry.camera["intrinsics"]))
    np.testing.assert_allclose(sample["intrinsics"][0].numpy(), expected_K, rtol=1e-6)
    for augment in (False, True):
        ds = SequenceDataset(dataset, sequences, H, W, augment=augment)
        s = ds[(1, 2, 7)]
        depth, E, K = (s[k].numpy().astype(np.float64) for k in ("depth", "extrinsics", "intrinsics"))
        points = unproject_depth(depth[:1], E[:1], K[:1])[0][depth[0] > 0]
        pixels, z = project_points(points, E[1], K[1])
        u, v = np.round(pixels[:, 0]).astype(int), np.round(pixels[:, 1]).astype(int)
        inside = (u >= 0) & (u < W) & (v >= 0) & (v < H) & (z > 0)
        seen = depth[1][v[inside], u[inside]]
        rel = np.abs(seen - z[inside]) / z[inside]
        assert inside.sum() > 100 and np.median(rel[seen > 0]) < 0.03, (augment, np.median(rel))


def test_sampler_is_a_function_of_seed_step_and_rank():
    a = StepBatchSampler([6, 3, 5], 4, (2, 5), seed=1, start=0, total=10)
    b = StepBatchSampler([6, 3, 5], 4, (2, 5), seed=1, start=7, total=10)
    assert list(a)[7:] == list(b)
    for batch in a:
        frames = {f for _, f, _ in batch}
        assert len(frames) == 1 and all(a.lengths[i] >= f for i, f, _ in batch)
    other_rank = StepBatchSampler([6, 3, 5], 4, (2, 5), seed=1, start=0, total=10, rank=1)
    assert [[f for _, f, _ in x] for x in other_rank] == [[f for _, f, _ in x] for x in a]
    assert list(other_rank) != list(a)


# ---------------------------------------------------------------------------------- unusable input


def test_a_manifest_without_depth_is_refused_clearly(dataset, tmp_path, capsys):
    data = tmp_path / "nodepth"
    shutil.copytree(dataset, data)
    manifest = read_manifest(data)
    manifest.entries = [replace(e, depth=None) for e in manifest.entries]
    manifest.created_by = "edgescene 0.1.0 preprocess"
    write_manifest(manifest, data)
    with pytest.raises(ValueError, match=r"no sequences with depth\+cameras.*3 sequences lack depth maps"):
        usable_sequences(data, 2)
    rc = cli_main(
        [
            "--data",
            str(data),
            "--out",
            str(tmp_path / "o"),
            "--preset",
            "vggt_tiny",
            "--height",
            "28",
            "--width",
            "42",
            "--device",
            "cpu",
        ]
    )
    assert rc == 2 and "no sequences with depth+cameras" in capsys.readouterr().err


def test_too_few_frames_and_bad_options_are_refused(dataset, tmp_path):
    with pytest.raises(ValueError, match="too few frames.*longest has 6"):
        train(make_config(dataset, tmp_path, frames_per_sequence=(8, 10)))
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        make_config(dataset, tmp_path, image_height=30)
    with pytest.raises(ValueError, match="freeze must be one of"):
        make_config(dataset, tmp_path, freeze="heads")
    with pytest.raises(ValueError, match="either val_fraction"):
        make_config(dataset, tmp_path, val_dataset=str(dataset), val_fraction=0.2)


def test_strided_windows_span_wider_motions_and_stride_one_keeps_the_consecutive_draw():
    from edgescene.train.vggt.data import SequenceDataset

    frames = list(range(16))
    wide = SequenceDataset.__new__(SequenceDataset)
    wide.max_stride = 3
    strides = set()
    for seed in range(200):
        window = wide._window(frames, 6, np.random.default_rng(seed))
        steps = set(np.diff(window).tolist())
        assert len(window) == 6 and len(steps) == 1 and window[-1] <= 15  # evenly spaced, inside the sequence
        strides |= steps
    assert strides == {1, 2, 3}
    # 8 frames of 16 fit every 2nd frame at most: the stride is clipped to what the sequence allows
    assert {int(np.diff(wide._window(frames, 8, np.random.default_rng(s)))[0]) for s in range(50)} == {1, 2}
    consecutive = SequenceDataset.__new__(SequenceDataset)
    consecutive.max_stride = 1
    for seed in range(20):  # the same start as before strides existed: one draw, integers(0, 16 - 6 + 1)
        start = int(np.random.default_rng(seed).integers(0, 11))
        assert consecutive._window(frames, 6, np.random.default_rng(seed)) == list(range(start, start + 6))
    with pytest.raises(ValueError, match="max_stride must be a whole number >= 1"):
        SequenceDataset(".", {}, 42, 56, augment=True, max_stride=0)


def test_frames_taken_through_a_lens_are_trained_on_as_a_pinhole_sees_them(tmp_path):
    """A dataset rendered through lenses records them, and its samples are what a pinhole camera
    takes of the same scenes (the same seeds rendered without a lens); read as if they were pinhole,
    they are not."""
    config = dict(scenes=2, frames=3, width=96, height=72)
    generate_dataset(SynthConfig(out_dir=str(tmp_path / "lens"), lens_distortion=True, **config))
    generate_dataset(SynthConfig(out_dir=str(tmp_path / "plain"), **config))
    manifest = read_manifest(tmp_path / "lens")
    assert all(len(e.camera["distortion"]) == 5 for e in manifest.entries)
    shutil.copytree(tmp_path / "lens", tmp_path / "ignored")
    for e in manifest.entries:
        del e.camera["distortion"]
    write_manifest(manifest, tmp_path / "ignored")

    def samples(name: str) -> list[dict]:
        ds = SequenceDataset(tmp_path / name, usable_sequences(tmp_path / name, 2), 56, 70, augment=False)
        return [ds[(index, 3, 0)] for index in range(2)]

    plain, lens, ignored = samples("plain"), samples("lens"), samples("ignored")
    yy, xx = np.mgrid[0:56, 0:70]
    rim = torch.from_numpy(np.hypot((xx - 35) / 35, (yy - 28) / 28) > 0.75)

    def image_error(got: list[dict]) -> float:
        return float(
            np.mean([(g["images"] - p["images"]).abs().mean(1)[:, rim].mean() for g, p in zip(got, plain, strict=True)])
        )

    def depth_error(got: list[dict]) -> float:
        rel = [
            ((g["depth"] - p["depth"]).abs() / p["depth"])[g["valid"] & p["valid"] & rim]
            for g, p in zip(got, plain, strict=True)
        ]
        return float(torch.cat(rel).median())

    # measured: images 0.0068 against 0.0177, depth 0.0059 against 0.0118 (the rest: resampling)
    assert image_error(lens) < 0.5 * image_error(ignored), (image_error(lens), image_error(ignored))
    assert depth_error(lens) < 0.7 * depth_error(ignored), (depth_error(lens), depth_error(ignored))


def test_match_targets_are_the_true_correspondences(dataset):
    """The first frame's patches land on themselves (to the half pixel between a patch's centre and
    the pixel sampled); every other frame's land where its points project in the frame before; a
    perfect match costs 0."""
    from edgescene.models.vggt.motion import grid_coordinates
    from edgescene.train.vggt.losses import match_loss, match_targets

    ds = SequenceDataset(dataset, usable_sequences(dataset, 2), 42, 56, augment=False)
    s = ds[(0, 3, 0)]
    gt = normalize_batch(s["extrinsics"][None], s["intrinsics"][None], s["depth"][None], s["valid"][None])
    target, ok = match_targets(gt["world_points"], gt["valid"], gt["depth"], gt["extrinsics"], gt["intrinsics"], 14)
    grid = grid_coordinates((3, 4))
    assert target.shape == (1, 3, 12, 2) and ok[0, 2].sum() >= 4
    assert torch.equal(ok[0, 0], gt["valid"][0, 0, 7::14, 7::14].reshape(-1))  # itself: wherever it has depth
    assert (target[0, 0] - grid)[ok[0, 0]].abs().max() < 0.5 / 14 / 1.5 + 1e-6
    k, e = (gt[name][0, 1].numpy().astype(np.float64) for name in ("intrinsics", "extrinsics"))
    points = gt["world_points"][0, 2, 7::14, 7::14].reshape(-1, 3).numpy().astype(np.float64)
    pixels, _ = project_points(points, e, k)  # frame 2's points in frame 1
    expected = np.stack([((pixels[:, 0] - 6.5) / 14 - 1.5) / 1.5, ((pixels[:, 1] - 6.5) / 14 - 1.0) / 1.5], 1)
    np.testing.assert_allclose(target[0, 2][ok[0, 2]].numpy(), expected[ok[0, 2].numpy()], atol=1e-4)
    assert match_loss(target, gt, 14).item() == 0.0
    assert match_loss(target + 0.1, gt, 14).item() == pytest.approx(0.2, abs=1e-5)


def test_init_grows_vggt_small_weights_into_the_motion_preset(tmp_path):
    """--init with vggt_small weights into vggt_small_motion: every tensor is taken over, the motion
    cues start at zero, so the grown model predicts exactly what the given one does; a preset that
    differs otherwise is still refused key for key."""
    from safetensors.torch import save_file

    from edgescene.models.vggt import VGGT, VGGT_PRESETS
    from edgescene.train.vggt.trainer import _load_or_grow, weights_preset

    torch.manual_seed(0)
    small = VGGT(replace(VGGT_PRESETS["vggt_small"], enable_track=False))
    weights = tmp_path / "vggt_small.safetensors"
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(weights))
    assert weights_preset(weights) == "vggt_small"  # what the adaptation benches train when no preset is named
    lines: list[str] = []
    grown = _load_or_grow(weights, "vggt_small_motion", log=lines.append).eval()
    assert grown.camera_head.motion is not None and "motion cues start fresh" in lines[0]
    base = load_vggt(weights)
    images = torch.rand(1, 3, 3, 126, 168)
    with torch.no_grad():
        a, b = grown(images), base(images)
    assert torch.equal(a["pose_enc"], b["pose_enc"]) and torch.equal(a["depth"], b["depth"])
    with pytest.raises(StateDictMismatchError):
        _load_or_grow(weights, "vggt_tiny")
