"""VGGT track head: official key layout, a small forward/backward, and hand-checkable helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgescene.models.vggt.config import TrackHeadConfig
from edgescene.models.vggt.track_head import TrackHead
from edgescene.models.vggt.tracker import (
    bilinear_sample,
    correlation_pyramid,
    flow_embedding,
    sample_correlation,
    sample_features,
    sincos_pos_table,
)

SMALL = TrackHeadConfig(
    features=32, hidden_size=64, corr_levels=3, corr_radius=2, depth=2, num_heads=4, num_virtual_tracks=8
)


def test_1b_state_dict_matches_official_keys(vggt_reference: dict) -> None:
    with torch.device("meta"):
        head = TrackHead(2048, 14, (4, 11, 17, 23), TrackHeadConfig())
    ours = {k: list(v.shape) for k, v in head.state_dict().items()}
    prefix = "track_head."
    ref = {k[len(prefix) :]: v for k, v in vggt_reference["state_dict"].items() if k.startswith(prefix)}
    assert vggt_reference["params_per_top_module"]["track_head"] == 65_941_396
    assert sorted(ours) == sorted(ref)
    assert {k: v for k, v in ours.items() if ref[k] != v} == {}
    assert sum(p.numel() for p in head.parameters()) == 65_941_396


def _small_inputs(b: int = 1, s: int = 3, hw: int = 56, n: int = 5, dim_in: int = 128, layers=(0, 1, 2, 3)):
    torch.manual_seed(0)
    patch_start_idx = 5
    p = patch_start_idx + (hw // 14) ** 2
    tokens = {i: torch.randn(b, s, p, dim_in) for i in layers}
    queries = torch.rand(b, n, 2) * (hw - 1)
    return tokens, (hw, hw), patch_start_idx, queries


@pytest.mark.slow
def test_small_forward_backward() -> None:
    torch.manual_seed(0)
    head = TrackHead(128, 14, (0, 1, 2, 3), SMALL, out_channels=(32, 64, 64, 64))
    tokens, image_hw, start, queries = _small_inputs()
    tracks, vis, conf = head(tokens, image_hw, start, queries)
    assert len(tracks) == SMALL.iters
    for t in tracks:
        assert t.shape == (1, 3, 5, 2)
        assert torch.isfinite(t).all()
        assert torch.equal(t[:, 0], queries)  # frame 0 is the query, exactly
    assert vis.shape == conf.shape == (1, 3, 5)
    assert ((vis > 0) & (vis < 1)).all() and ((conf > 0) & (conf < 1)).all()

    loss = sum(t[:, 1:].sum() for t in tracks) + vis.sum() + conf.sum()
    loss.backward()
    missing = [k for k, p in head.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []

    two = head(tokens, image_hw, start, queries, iters=2)[0]
    assert len(two) == 2 and torch.allclose(two[1], tracks[1])


def test_default_out_channels_and_iters_override() -> None:
    head = TrackHead(128, 14, (0, 1, 2, 3), SMALL).eval()
    tokens, image_hw, start, queries = _small_inputs(b=2, s=2, hw=42, n=3)
    with torch.no_grad():
        tracks, vis, conf = head(tokens, image_hw, start, queries, iters=1)
    assert len(tracks) == 1 and tracks[0].shape == (2, 2, 3, 2) and vis.shape == (2, 2, 3)


def test_bilinear_sample_pixel_centres_and_padding() -> None:
    img = torch.arange(12, dtype=torch.float32).reshape(1, 1, 3, 4)  # value = 4 * y + x
    xy = torch.tensor([[[[0.0, 0.0], [3.0, 2.0], [1.0, 2.0], [1.5, 0.5]]]])  # (1, 1, 4, 2)
    out = bilinear_sample(img, xy)[0, 0, 0]
    assert torch.allclose(out, torch.tensor([0.0, 11.0, 9.0, 3.5]))
    outside = torch.tensor([[[[-1.0, 0.0], [5.0, 1.0]]]])
    assert torch.allclose(bilinear_sample(img, outside)[0, 0, 0], torch.tensor([0.0, 7.0]))  # border
    assert torch.allclose(bilinear_sample(img, outside, "zeros")[0, 0, 0], torch.tensor([0.0, 0.0]))
    feats = sample_features(
        img.expand(1, 2, 3, 4) * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1), torch.tensor([[[2.0, 1.0]]])
    )
    assert torch.allclose(feats, torch.tensor([[[6.0, -6.0]]]))


def test_correlation_window_layout() -> None:
    # One channel and a unit track feature: the correlation equals the map itself.
    h, w, r = 6, 7, 1
    fmap = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, 1, h, w)  # value = w * y + x
    feats = torch.ones(1, 1, 1, 1)
    x0, y0 = 3, 2
    coords = torch.tensor([[[[float(x0), float(y0)]]]])
    pyramid = correlation_pyramid(fmap, 2)
    assert pyramid[1].shape == (1, 1, 1, 3, 3)
    assert pyramid[1][0, 0, 0, 0, 0] == fmap[0, 0, 0, :2, :2].mean()
    out = sample_correlation(pyramid, feats, coords, r)[0, 0, 0]
    assert out.shape == (2 * 9,)
    # First window axis walks x, second walks y: index (dx + r) * 3 + (dy + r).
    expected0 = [w * (y0 + dy) + (x0 + dx) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
    assert out[:9].tolist() == expected0
    # Level 1 (3 x 3 map): centre (1.5, 1.0), so each sample averages two columns; column 3 is
    # outside the map and reads as zero ("zeros" padding).
    lvl = torch.nn.functional.pad(pyramid[1][0, 0, 0], (0, 1))  # (3, 4), zero column at x = 3
    expected1 = [0.5 * (lvl[1 + dy, 1 + dx] + lvl[1 + dy, 2 + dx]) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
    assert torch.allclose(out[9:], torch.stack(expected1))
    # Scaling by 1/sqrt(C): C = 4 identical channels give 4 * value / 2.
    out4 = sample_correlation(correlation_pyramid(fmap.expand(1, 1, 4, h, w), 1), torch.ones(1, 1, 1, 4), coords, 0)
    assert out4.item() == pytest.approx(4 * (w * y0 + x0) / math.sqrt(4))


def test_sincos_table_formula() -> None:
    dim, h, w = 16, 3, 5
    table = sincos_pos_table(dim, h, w)
    assert table.shape == (dim, h, w) and table.dtype == np.float32
    q = dim // 4
    for y in range(h):
        for x in range(w):
            direct = []
            for pos in (x, y):
                angles = [pos * 10000.0 ** (-k / q) for k in range(q)]
                direct += [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
            np.testing.assert_allclose(table[:, y, x], np.array(direct), rtol=1e-6, atol=1e-7)


def test_flow_embedding_formula() -> None:
    flows = torch.tensor([[0.0, 0.0], [0.25, -0.5]])
    c = 8
    emb = flow_embedding(flows, c)
    assert emb.shape == (2, 2 * c)
    assert torch.equal(emb[0], torch.tensor([0.0, 1.0] * c))
    for i, freq in enumerate(k * 1000.0 / c for k in range(0, c, 2)):
        assert emb[1, 2 * i].item() == pytest.approx(math.sin(0.25 * freq), abs=1e-5)
        assert emb[1, 2 * i + 1].item() == pytest.approx(math.cos(0.25 * freq), abs=1e-5)
        assert emb[1, c + 2 * i].item() == pytest.approx(math.sin(-0.5 * freq), abs=1e-5)
        assert emb[1, c + 2 * i + 1].item() == pytest.approx(math.cos(-0.5 * freq), abs=1e-5)
