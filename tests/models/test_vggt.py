"""VGGT: official key layout of vggt_1b, forward shapes and behaviour of the tiny presets,
save -> load round trip, exportability (one ONNX graph for any frame count)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from edgescene.models.vggt import VGGT, VGGT_PRESETS, build_vggt


def test_vggt_1b_state_dict_matches_official_key_for_key(vggt_reference):
    with torch.device("meta"):
        model = VGGT(VGGT_PRESETS["vggt_1b"])
    sd = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert len(sd) == vggt_reference["num_state_dict_keys"] == 1797
    assert sd == vggt_reference["state_dict"]
    assert list(sd) == list(vggt_reference["state_dict"])  # same order as the release
    assert sum(p.numel() for p in model.parameters()) == vggt_reference["total_params"] == 1_256_537_516
    for module, count in vggt_reference["params_per_top_module"].items():
        assert sum(p.numel() for p in getattr(model, module).parameters()) == count, module


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_vggt("vggt_tiny").eval()


@pytest.mark.parametrize("frames", [1, 3])
@pytest.mark.parametrize("hw", [(56, 84), (70, 42)], ids=["landscape", "portrait"])
def test_forward_shapes(tiny, frames, hw):
    h, w = hw
    images = torch.rand(frames, 3, h, w)
    queries = torch.tensor([[10.0, 12.0], [30.0, 20.0]])
    with torch.no_grad():
        out = tiny(images, query_points=queries)
    assert out["pose_enc"].shape == (1, frames, 9)
    assert len(out["pose_enc_list"]) == 4 and torch.equal(out["pose_enc_list"][-1], out["pose_enc"])
    assert out["depth"].shape == (1, frames, h, w, 1)
    assert out["depth_conf"].shape == (1, frames, h, w)
    assert out["world_points"].shape == (1, frames, h, w, 3)
    assert out["world_points_conf"].shape == (1, frames, h, w)
    assert out["track"].shape == (1, frames, 2, 2)
    assert out["vis"].shape == out["conf"].shape == (1, frames, 2)
    assert out["images"].shape == (1, frames, 3, h, w)
    assert (out["depth"] > 0).all() and (out["depth_conf"] >= 1).all() and (out["world_points_conf"] >= 1).all()
    assert (out["pose_enc"][..., 7:] >= 0).all()  # fields of view pass through ReLU
    assert torch.allclose(out["track"][0, 0], queries)  # frame 0 tracks are the queries
    assert ((out["vis"] > 0) & (out["vis"] < 1)).all()


def test_batched_input_and_no_tracks_without_queries(tiny):
    with torch.no_grad():
        out = tiny(torch.rand(2, 2, 3, 28, 42))
    assert out["depth"].shape == (2, 2, 28, 42, 1)
    assert "track" not in out


def test_first_frame_is_the_reference_frame():
    """Frame 0 gets its own camera/register tokens, so reordering frames changes the output."""
    torch.manual_seed(0)
    model = build_vggt(replace(VGGT_PRESETS["vggt_tiny"], enable_track=False)).eval()
    images = torch.rand(2, 3, 28, 28)
    with torch.no_grad():
        model.aggregator.camera_token.normal_()  # as after training: the two versions differ
        a = model(images)["pose_enc"][0]
        b = model(images.flip(0))["pose_enc"][0].flip(0)
        model.aggregator.camera_token[:, 1] = model.aggregator.camera_token[:, 0]
        model.aggregator.register_token[:, 1] = model.aggregator.register_token[:, 0]
        c = model(images)["pose_enc"][0]
        d = model(images.flip(0))["pose_enc"][0].flip(0)
    assert (a - b).abs().max() > 1e-3
    assert torch.allclose(c, d, atol=1e-5)  # with identical tokens the frames are interchangeable


def test_tiny_forward_and_backward_on_cpu():
    torch.manual_seed(0)
    model = build_vggt("vggt_tiny").train()
    out = model(torch.rand(1, 2, 3, 28, 42), query_points=torch.rand(1, 3, 2) * 28)
    loss = sum(o.float().mean() for o in out["pose_enc_list"]) + out["depth"].mean() + out["world_points"].mean()
    loss = loss + out["track"].mean() + out["vis"].mean() + out["conf"].mean()
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    no_grad = [n for n, p in trainable.items() if p.grad is None]
    assert no_grad == [], no_grad[:5]
    assert all(torch.isfinite(p.grad).all() for p in trainable.values())
    assert "images" not in out  # training mode


@pytest.mark.slow
def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = build_vggt(replace(VGGT_PRESETS["vggt_tiny"], enable_track=False, enable_point=False)).train()
    images = torch.rand(1, 2, 3, 28, 28)
    model(images)["depth"].mean().backward()
    reference = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    model.aggregator.gradient_checkpointing = True
    model(images)["depth"].mean().backward()
    again = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(reference, again, strict=True))


def test_dinov3_patch_embedding_variant():
    torch.manual_seed(0)
    model = build_vggt("vggt_tiny_dinov3").eval()
    assert type(model.aggregator.patch_embed).__name__ == "DinoVisionTransformer"
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 48))
    assert out["depth"].shape == (1, 2, 32, 48, 1)
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        model(torch.rand(1, 3, 28, 28))


@pytest.mark.slow
def test_save_load_round_trip_reproduces_outputs_exactly(tiny, tmp_path):
    from edgescene.models import load_vggt

    path = tmp_path / "model.pt"
    torch.save(tiny.state_dict(), path)
    loaded = load_vggt(path)
    images, queries = torch.rand(3, 3, 42, 56), torch.tensor([[5.0, 7.0]])
    with torch.no_grad():
        expected, got = tiny(images, query_points=queries), loaded(images, query_points=queries)
    for key in ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf", "track", "vis", "conf"):
        assert torch.equal(expected[key], got[key]), key


def test_position_embedding_cache_follows_weight_changes():
    torch.manual_seed(0)
    model = build_vggt(replace(VGGT_PRESETS["vggt_tiny"], enable_track=False)).eval()
    images = torch.rand(1, 3, 28, 42)
    with torch.no_grad():
        before = model(images)["depth"]
        assert torch.equal(model(images)["depth"], before)  # cached: identical
        model.aggregator.patch_embed.pos_embed.mul_(3.0)
        after = model(images)["depth"]
    assert not torch.allclose(before, after)


def test_bad_inputs_are_clear_errors(tiny):
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        tiny(torch.rand(1, 3, 30, 28))
    with pytest.raises(ValueError, match=r"\(S, 3, H, W\)"):
        tiny(torch.rand(1, 1, 28, 28))


@pytest.mark.slow
@pytest.mark.parametrize("camera_motion", [False, True], ids=["upstream", "motion_cues"])
def test_exports_to_onnx_with_a_dynamic_frame_count(tmp_path, camera_motion):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_vggt(replace(VGGT_PRESETS["vggt_tiny"], enable_track=False, camera_motion=camera_motion)).eval()
    if camera_motion:  # a trained module: its last layer no longer zero
        torch.nn.init.normal_(model.camera_head.motion.embed.fc2.weight, std=0.1)
    names = ["pose_enc", "depth", "depth_conf", "world_points", "world_points_conf"]

    class Graph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, images):
            out = self.model(images)
            return tuple(out[n] for n in names)

    graph, path = Graph().eval(), tmp_path / "vggt_tiny.onnx"
    with torch.no_grad():
        graph(torch.rand(1, 2, 3, 42, 56))  # one warm-up forward fixes the resolution's constants
        torch.onnx.export(
            graph,
            (torch.rand(1, 2, 3, 42, 56),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=names,
            dynamic_axes={n: {1: "frames"} for n in ["images", *names]},
        )
    onnx.checker.check_model(str(path))
    assert not {n.op_type for n in onnx.load(str(path)).graph.node} & {"If", "Loop"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for frames in (1, 2, 5):
        images = torch.rand(1, frames, 3, 42, 56)
        with torch.no_grad():
            expected = graph(images)
        got = session.run(None, {"images": images.numpy()})
        for name, e, g in zip(names, expected, got, strict=True):
            assert g.shape == tuple(e.shape), name
            assert abs(g - e.numpy()).max() < 1e-4, (name, frames)
