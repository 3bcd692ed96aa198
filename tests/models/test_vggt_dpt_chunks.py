"""VGGT's DPT heads: frames in chunks (8 by default, as upstream) equal all frames at once, and the
large-batch resize branch (split along the batch) equals one resize; a 64-frame forward runs."""

from __future__ import annotations

import pytest
import torch

from edgescene.models.vggt import build_vggt, dpt_head


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_vggt("vggt_tiny").eval()


def _heads(model):
    return [model.depth_head, model.point_head, model.track_head.feature_extractor]


@pytest.mark.slow
def test_64_frames_chunked_equal_unchunked(tiny):
    images = torch.rand(64, 3, 28, 42, generator=torch.Generator().manual_seed(1))
    queries = torch.tensor([[10.0, 12.0], [30.0, 20.0]])
    inner = []
    original = dpt_head.DPTHead._forward_frames

    def spy(self, tokens, *args):
        inner.append(next(iter(tokens.values())).shape[1])
        return original(self, tokens, *args)

    with torch.no_grad():
        assert all(h.frames_chunk_size == 8 for h in _heads(tiny))
        dpt_head.DPTHead._forward_frames = spy
        try:
            chunked = tiny(images, query_points=queries)
        finally:
            dpt_head.DPTHead._forward_frames = original
        for head in _heads(tiny):
            head.frames_chunk_size = None
        try:
            whole = tiny(images, query_points=queries)
        finally:
            for head in _heads(tiny):
                head.frames_chunk_size = 8
    assert inner[:8] == [8] * 8 and len(inner) == 24  # depth, point and track features: 8 chunks of 8 each
    for key in ("depth", "depth_conf", "world_points", "world_points_conf", "track", "vis", "conf"):
        assert chunked[key].shape == whole[key].shape
        assert torch.equal(chunked[key], whole[key]), key


def test_large_batch_resize_branch_equals_one_resize(monkeypatch):
    x = torch.rand(6, 4, 5, 7, generator=torch.Generator().manual_seed(2))
    expected = torch.nn.functional.interpolate(x, size=(20, 28), mode="bilinear", align_corners=True)
    monkeypatch.setattr(dpt_head, "_INT_MAX", 1000)  # 6 * 4 * 20 * 28 = 13440 elements > 1000
    calls = []
    real = torch.nn.functional.interpolate
    monkeypatch.setattr(dpt_head.F, "interpolate", lambda t, **kw: calls.append(t.shape[0]) or real(t, **kw))
    got = dpt_head.interpolate(x, (20, 28))
    assert len(calls) == 6 and sum(calls) == 6  # 13440 // 1000 + 1 = 14 chunks requested, 6 frames available
    assert torch.equal(got, expected)


def test_large_batch_branch_in_a_full_forward(tiny, monkeypatch):
    images = torch.rand(3, 3, 28, 42, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = tiny(images)
        monkeypatch.setattr(dpt_head, "_INT_MAX", 10_000)
        got = tiny(images)
    for key in ("depth", "world_points", "depth_conf"):
        assert torch.equal(got[key], expected[key]), key


def test_chunk_size_is_validated():
    with pytest.raises(ValueError, match="frames_chunk_size"):
        dpt_head.DPTHead(32, frames_chunk_size=-1)
