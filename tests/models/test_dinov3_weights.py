"""DINOv3 loading: official flat .pth (with its hash check), training checkpoints, Hugging Face
safetensors, preset detection by keys, and the errors users see for bad files."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

from edgescene.models import create_model, load_dinov3
from edgescene.models.dinov3 import DINOV3_PRESETS, DinoVisionTransformer, build_dinov3
from edgescene.models.weights.common import CheckpointError, StateDictMismatchError
from edgescene.models.weights.dinov3 import detect_dinov3_preset


@dataclasses.dataclass
class NotATensor:
    value: int = 1


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    return build_dinov3("dinov3_tiny").eval()


def features(model, x):
    with torch.no_grad():
        return model.forward_features(x)["x_norm_patchtokens"]


def save_with_released_name(state_dict, folder: Path) -> Path:
    tmp = folder / "weights.pth"
    torch.save(state_dict, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    path = folder / f"dinov3_tiny_pretrain_lvd1689m-{digest}.pth"
    tmp.rename(path)
    return path


def test_official_flat_pth_with_verified_hash(tiny, tmp_path):
    path = save_with_released_name(tiny.state_dict(), tmp_path)
    loaded = load_dinov3(path)
    x = torch.randn(1, 3, 32, 48)
    assert torch.equal(features(loaded, x), features(tiny, x))
    assert not loaded.training


def test_a_wrong_hash_in_the_file_name_is_refused(tiny, tmp_path):
    path = tmp_path / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth"
    torch.save(tiny.state_dict(), path)
    with pytest.raises(CheckpointError, match="SHA-256 starts with .* but the file name says 08c60483"):
        load_dinov3(path)


def test_training_checkpoint_with_teacher_heads_and_ddp_prefix(tiny, tmp_path):
    teacher = {f"backbone.{k}": v for k, v in tiny.state_dict().items()}
    teacher["dino_head.mlp.0.weight"] = torch.randn(8, 64)
    teacher["ibot_head.last_layer.weight"] = torch.randn(16, 8)
    path = tmp_path / "teacher_checkpoint.pth"
    torch.save({"teacher": teacher, "iteration": 12}, path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(features(load_dinov3(path), x), features(tiny, x))

    ddp = tmp_path / "ddp.pth"
    torch.save({"model": {f"module.{k}": v for k, v in tiny.state_dict().items()}}, ddp)
    assert torch.equal(features(load_dinov3(ddp), x), features(tiny, x))


def test_huggingface_safetensors(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.DINOv3ViTConfig(
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_register_tokens=4,
        patch_size=16,
    )
    hf = transformers.DINOv3ViTModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf")
    path = tmp_path / "hf" / "model.safetensors"
    assert path.is_file()
    ours = load_dinov3(path)
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        expected = hf(pixel_values=x).last_hidden_state
    assert torch.allclose(ours.forward_features(x)["x_norm_patchtokens"], expected[:, 5:], atol=1e-5)


def meta_state_dict(name):
    with torch.device("meta"):
        return DinoVisionTransformer(DINOV3_PRESETS[name]).state_dict()


@pytest.mark.parametrize(
    "name",
    [
        "dinov3_vits16",
        "dinov3_vits16plus",
        "dinov3_vitb16",
        "dinov3_vitl16",
        "dinov3_vitl16_sat493m",
        "dinov3_vitl16plus",
        "dinov3_vith16plus",
        "dinov3_vit7b16",
    ],
)
def test_preset_is_detected_from_keys_and_shapes(name):
    assert detect_dinov3_preset(meta_state_dict(name)) == name


def test_sat_vit7b_needs_its_hash_or_a_name():
    sd = meta_state_dict("dinov3_vit7b16")
    assert detect_dinov3_preset(sd) == "dinov3_vit7b16"
    assert detect_dinov3_preset(sd, hash_prefix="a6675841") == "dinov3_vit7b16_sat493m"


def test_missing_and_unexpected_keys_are_listed(tiny, tmp_path):
    sd = tiny.state_dict()
    del sd["blocks.1.ls2.gamma"]
    sd["blocks.1.extra.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(StateDictMismatchError) as err:
        load_dinov3(path, preset="dinov3_tiny")
    assert err.value.missing == ["blocks.1.ls2.gamma"]
    assert err.value.unexpected == ["blocks.1.extra.weight"]
    assert "missing keys (1): blocks.1.ls2.gamma" in str(err.value)


def test_wrong_preset_reports_shape_mismatches(tiny, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(tiny.state_dict(), path)
    with pytest.raises(StateDictMismatchError, match="shape mismatches"):
        load_dinov3(path, preset="dinov3_vits16")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"cls_token": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_dinov3(path)


def test_random_bytes_are_not_called_python_objects(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(bytes(range(233, 256)) * 200)  # a legacy-format guess: the unpickler meets opcode 233
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint .*damaged download") as raised:
        load_dinov3(path)
    assert "arbitrary code" not in str(raised.value)


def test_nan_bias_mask_is_a_clear_error(tiny, tmp_path):
    sd = tiny.state_dict()
    sd["blocks.0.attn.qkv.bias_mask"] = torch.full_like(sd["blocks.0.attn.qkv.bias_mask"], float("nan"))
    path = tmp_path / "uninit.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="NaN"):
        load_dinov3(path)


def test_bias_mask_from_the_file_is_what_the_model_computes_with(tiny, tmp_path):
    sd = tiny.state_dict()
    for k in sd:
        if k.endswith("qkv.bias"):
            sd[k] = torch.randn_like(sd[k])
    masked = dict(sd, **{k: torch.zeros_like(v) for k, v in sd.items() if k.endswith("bias_mask")})
    no_bias = dict(sd, **{k: torch.zeros_like(v) for k, v in sd.items() if k.endswith("qkv.bias")})
    outputs = {}
    for name, state in (("with_bias", sd), ("zero_mask", masked), ("zero_bias", no_bias)):
        torch.save(state, tmp_path / f"{name}.pth")
        outputs[name] = features(load_dinov3(tmp_path / f"{name}.pth"), torch.ones(1, 3, 32, 32))
    assert torch.equal(outputs["zero_mask"], outputs["zero_bias"])  # a zero mask switches the bias off
    assert not torch.allclose(outputs["with_bias"], outputs["zero_mask"])


def test_create_model_with_weights_and_missing_file(tiny, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(tiny.state_dict(), path)
    model = create_model("dinov3_tiny", weights=path)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(features(model, x), features(tiny, x))
    with pytest.raises(FileNotFoundError):
        load_dinov3(tmp_path / "nope.pth")
