"""DINOv3 backbone: official key layout, forward API, determinism, and numeric parity with the
Hugging Face ``transformers`` implementation (itself verified against the official code)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from edgescene.models.dinov3 import DINOV3_PRESETS, DinoVisionTransformer, build_dinov3
from edgescene.models.weights.dinov3 import hf_to_official


def meta_state_dict(name: str) -> dict[str, list[int]]:
    with torch.device("meta"):
        model = DinoVisionTransformer(DINOV3_PRESETS[name])
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["dinov3_vits16", "dinov3_vitl16"])
def test_state_dict_matches_official_key_for_key(name, dinov3_reference):
    expected = dinov3_reference[name]["state_dict"]
    assert meta_state_dict(name) == expected
    assert list(meta_state_dict(name)) == list(expected)  # same order as the release, too


def test_sat493m_vitl_adds_exactly_the_local_cls_norm_keys(dinov3_reference):
    expected = dict(dinov3_reference["dinov3_vitl16"]["state_dict"])
    expected.update(dinov3_reference["dinov3_vitl16"]["sat493m_extra_keys"])
    assert meta_state_dict("dinov3_vitl16_sat493m") == expected


def test_every_released_vit_preset_has_the_official_parameter_and_key_counts(dinov3_reference):
    released = dinov3_reference["params_all_variants"]
    vits = {name: ref for name, ref in released.items() if "convnext" not in name}
    assert len(vits) == 8 and set(vits) <= set(DINOV3_PRESETS)  # every released ViT is a preset
    for name, ref in vits.items():
        with torch.device("meta"):
            model = DinoVisionTransformer(DINOV3_PRESETS[name])
        assert sum(p.numel() for p in model.parameters()) == ref["n_params"], name
        sd = model.state_dict()
        assert len(sd) == ref["n_state_dict_entries"], name
        assert {k: list(sd[k].shape) for k in ref["non_block_keys"]} == ref["non_block_keys"], name
        assert {k: list(sd[k].shape) for k in ref["block0_keys"]} == ref["block0_keys"], name
        block0 = {k for k in sd if k.startswith("blocks.0.")}
        assert block0 == set(ref["block0_keys"]), name


@pytest.mark.parametrize("hw", [(32, 48), (64, 64)])
def test_forward_features_shapes(hw):
    model = build_dinov3("dinov3_tiny").eval()
    h, w = hw
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        out = model.forward_features(x)
    n = (h // 16) * (w // 16)
    assert out["x_norm_clstoken"].shape == (2, 64)
    assert out["x_storage_tokens"].shape == (2, 4, 64)
    assert out["x_norm_patchtokens"].shape == (2, n, 64)
    assert out["x_prenorm"].shape == (2, 5 + n, 64)
    assert torch.equal(model(x), out["x_norm_clstoken"])


def test_get_intermediate_layers_variants():
    model = build_dinov3(replace(DINOV3_PRESETS["dinov3_tiny"], depth=3)).eval()
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        last = model.get_intermediate_layers(x, n=1)
        maps = model.get_intermediate_layers(x, n=[0, 2], reshape=True)
        with_cls = model.get_intermediate_layers(x, n=2, return_class_token=True, return_extra_tokens=True)
        raw = model.get_intermediate_layers(x, n=1, norm=False)
        feats = model.forward_features(x)
    assert torch.allclose(last[0], feats["x_norm_patchtokens"], atol=1e-6)
    assert torch.allclose(raw[0], feats["x_prenorm"][:, 5:], atol=1e-6)
    assert [m.shape for m in maps] == [(1, 64, 2, 4)] * 2
    patches, cls, storage = with_cls[1]
    assert patches.shape == (1, 8, 64) and cls.shape == (1, 64) and storage.shape == (1, 4, 64)
    assert torch.allclose(cls, feats["x_norm_clstoken"], atol=1e-6)
    with pytest.raises(ValueError, match="layer indices"):
        model.get_intermediate_layers(x, n=[5])


def test_eval_is_deterministic_and_training_rope_is_augmented():
    torch.manual_seed(0)
    model = build_dinov3(replace(DINOV3_PRESETS["dinov3_tiny"], layerscale_init=1.0))
    x = torch.randn(1, 3, 48, 48)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        assert torch.equal(model.rope_embed(3, 3, 5).cos, model.rope_embed(3, 3, 5).cos)
        model.train()
        torch.manual_seed(0)
        rope_a = model.rope_embed(3, 3, 5).cos
        a = model.forward_features(x)["x_norm_patchtokens"]
        torch.manual_seed(1)
        rope_b = model.rope_embed(3, 3, 5).cos
        b = model.forward_features(x)["x_norm_patchtokens"]
    assert (rope_a - rope_b).abs().max() > 1e-2  # coordinates are rescaled at random in training
    assert not torch.equal(a, b)


def test_masks_replace_patches_with_the_mask_token():
    model = build_dinov3("dinov3_tiny").eval()
    with torch.no_grad():
        model.mask_token.normal_()
        x = torch.randn(1, 3, 32, 32)
        masks = torch.tensor([[True, False, False, False]])
        tokens, _, _ = model.prepare_tokens(x, masks)
    assert torch.equal(tokens[0, 5], model.mask_token[0])
    assert not torch.equal(tokens[0, 6], model.mask_token[0])


def test_input_size_must_be_a_multiple_of_the_patch():
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        build_dinov3("dinov3_tiny")(torch.randn(1, 3, 40, 48))


@pytest.mark.parametrize("gated", [False, True], ids=["mlp", "swiglu"])
def test_numbers_match_huggingface_transformers(gated):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.DINOv3ViTConfig(
        hidden_size=64,
        intermediate_size=128 if gated else 256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_register_tokens=4,
        patch_size=16,
        use_gated_mlp=gated,
        hidden_act="silu" if gated else "gelu",
    )
    reference = transformers.DINOv3ViTModel(cfg).eval()
    with torch.no_grad():
        for p in reference.parameters():  # move away from the trivial init (ones / zeros)
            p.add_(0.05 * torch.randn_like(p))
    ours = DinoVisionTransformer(
        replace(DINOV3_PRESETS["dinov3_tiny"], ffn="swiglu" if gated else "mlp", ffn_ratio=3.0 if gated else 4.0)
    ).eval()
    ours.load_state_dict(hf_to_official(reference.state_dict(), num_heads=4), strict=True)
    x = torch.randn(2, 3, 48, 80)  # non-square
    with torch.no_grad():
        expected = reference(pixel_values=x).last_hidden_state
        got = ours.forward_features(x)
    assert torch.allclose(got["x_norm_clstoken"], expected[:, 0], atol=1e-5)
    assert torch.allclose(got["x_storage_tokens"], expected[:, 1:5], atol=1e-5)
    assert torch.allclose(got["x_norm_patchtokens"], expected[:, 5:], atol=1e-5)
