"""export.fused_attention: attention layers as onnxruntime MultiHeadAttention nodes, same numbers as PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgescene.export.formats import FORMATS
from edgescene.export.fused_attention import count_fused_nodes, fused_attention_export
from edgescene.export.graphs import dinov3_graph, vggt_graph
from edgescene.export.onnx_export import export_onnx
from edgescene.models import layers
from edgescene.models.registry import create_model


def _softmaxes(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type == "Softmax")


@pytest.mark.parametrize("family", [pytest.param("vggt", marks=pytest.mark.slow), "dinov3"])
def test_fused_graph_replaces_every_attention_and_matches_pytorch_at_other_frame_counts(tmp_path, family):
    torch.manual_seed(0)
    if family == "vggt":
        graph = vggt_graph(create_model("vggt_tiny").eval(), "vggt_tiny", 56, 84, track=False)
    else:
        graph = dinov3_graph(create_model("dinov3_tiny").eval(), "dinov3_tiny", 64, 48)
    export_onnx(graph, tmp_path / "plain.onnx", example_frames=2)
    export_onnx(graph, tmp_path / "fused.onnx", example_frames=2, fused_attention=True)
    plain, fused = onnx.load(str(tmp_path / "plain.onnx")), onnx.load(str(tmp_path / "fused.onnx"))
    assert count_fused_nodes(plain) == 0
    n_layers = sum(isinstance(m, layers.attention.Attention) for m in graph.module.modules())
    n_fused = count_fused_nodes(fused)
    assert n_fused >= n_layers > 0  # every layer (VGGT's camera head calls its trunk once per refinement)
    assert _softmaxes(plain) - _softmaxes(fused) == n_fused  # each call's MatMul-Softmax-MatMul is gone
    session = ort.InferenceSession(str(tmp_path / "fused.onnx"), providers=["CPUExecutionProvider"])
    for frames in (1, 3):  # the traced example had 2: the frame axis must stay dynamic
        images = np.random.default_rng(frames).random((frames, 3, graph.height, graph.width), dtype=np.float32)
        got = session.run(None, graph.feeds(images))
        with torch.no_grad():
            want = graph.module(torch.from_numpy(images))
        for name, g, w in zip(graph.output_names, got, want, strict=True):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)


def test_the_override_is_scoped_to_the_context():
    attn = layers.attention.Attention(32, 4, qk_norm=True).eval()
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        plain = attn(x)
        with fused_attention_export():
            assert layers.attention._core_override is not None
            inside = attn(x)  # eager forward of the fused op is SDPA: same values
        assert layers.attention._core_override is None
    torch.testing.assert_close(inside, plain, rtol=1e-5, atol=1e-6)


def test_only_onnxruntime_formats_use_the_fused_node():
    fused = {name for name, f in FORMATS.items() if f.fused_attention}
    assert fused == {"onnx", "onnx-fp16", "onnx-int8", "onnx-int8-static"}
    assert all(FORMATS[name].backend == "onnxruntime" for name in fused)
