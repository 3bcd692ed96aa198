"""VGGT loading: official files (.pt and .safetensors), training wrappers, files without the track
head, readable mismatch errors, and the Hub path failing fast and clearly when offline."""

from __future__ import annotations

import time

import pytest
import torch

from edgescene.models import create_model, load_vggt
from edgescene.models.vggt import build_vggt
from edgescene.models.weights.common import StateDictMismatchError
from edgescene.models.weights.vggt import HubUnavailableError


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_vggt("vggt_tiny").eval()


def depth_of(model, images):
    with torch.no_grad():
        return model(images)["depth"]


IMAGES = torch.rand(2, 3, 28, 42)


def test_safetensors_and_training_wrapper(tiny, tmp_path):
    from safetensors.torch import save_file

    save_file(tiny.state_dict(), str(tmp_path / "model.safetensors"))
    assert torch.equal(depth_of(load_vggt(tmp_path / "model.safetensors"), IMAGES), depth_of(tiny, IMAGES))
    torch.save({"model": {f"module.{k}": v for k, v in tiny.state_dict().items()}, "step": 3}, tmp_path / "ckpt.pt")
    assert torch.equal(depth_of(load_vggt(tmp_path / "ckpt.pt"), IMAGES), depth_of(tiny, IMAGES))


def test_a_file_without_the_track_head_loads_without_it(tiny, tmp_path):
    sd = {k: v for k, v in tiny.state_dict().items() if not k.startswith("track_head.")}
    torch.save(sd, tmp_path / "no_track.pt")
    model = load_vggt(tmp_path / "no_track.pt")
    assert model.track_head is None
    assert torch.equal(depth_of(model, IMAGES), depth_of(tiny, IMAGES))


def test_mismatched_checkpoint_lists_the_differences(tiny, tmp_path):
    sd = tiny.state_dict()
    sd.pop("camera_head.trunk_norm.weight")
    sd["camera_head.bogus"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(StateDictMismatchError) as err:
        load_vggt(tmp_path / "bad.pt", preset="vggt_tiny")
    assert err.value.missing == ["camera_head.trunk_norm.weight"]
    assert err.value.unexpected == ["camera_head.bogus"]
    with pytest.raises(StateDictMismatchError, match="shape mismatches"):
        load_vggt(tmp_path / "bad.pt", preset="vggt_1b")


def test_create_model_with_weights(tiny, tmp_path):
    torch.save(tiny.state_dict(), tmp_path / "model.pt")
    assert torch.equal(
        depth_of(create_model("vggt_tiny", weights=tmp_path / "model.pt"), IMAGES), depth_of(tiny, IMAGES)
    )


def test_missing_path_is_not_mistaken_for_a_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_vggt(tmp_path / "model.pt")


def test_hub_offline_fails_fast_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE") as err:
        load_vggt("facebook/VGGT-1B")
    assert time.perf_counter() - start < 5
    assert "hf download facebook/VGGT-1B model.safetensors" in str(err.value)


def test_hub_unreachable_fails_fast_without_the_offline_flag(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # reserved TLD: never resolves
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="cannot be reached"):
        load_vggt("facebook/VGGT-1B")
    assert time.perf_counter() - start < 10
