"""Fast global attention (token merging): the plan's bookkeeping, exactness where nothing is merged,
the exact default untouched, and the API that turns it on."""

from __future__ import annotations

import pytest
import torch

from edgescene.models.layers.rope import vggt_rope_tables
from edgescene.models.registry import create_model
from edgescene.models.vggt import build_vggt
from edgescene.models.vggt.token_merge import (
    FastAttention,
    MergePlan,
    grid_partition,
    resolve_fast_attention,
    set_fast_attention,
)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_vggt("vggt_tiny").eval()


def _run(model, images, fast):
    set_fast_attention(model, fast)
    with torch.no_grad():
        return model(images)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="stride"):
        FastAttention(stride=1)
    with pytest.raises(ValueError, match="ratio"):
        FastAttention(ratio=0.0)
    with pytest.raises(ValueError, match="ratio"):
        FastAttention(ratio=1.5)
    with pytest.raises(ValueError, match="start_block"):
        FastAttention(start_block=-1)
    assert resolve_fast_attention(True) == FastAttention() and resolve_fast_attention(False) is None
    with pytest.raises(TypeError, match="bool or a FastAttention"):
        resolve_fast_attention("yes")


def test_grid_partition_covers_the_grid_once():
    dst, src = grid_partition(9, 12, 2)
    assert len(dst) == 5 * 6 and len(src) == 108 - 30
    assert sorted(torch.cat((dst, src)).tolist()) == list(range(108))
    rows, cols = dst // 12, dst % 12
    assert bool(((rows % 2 == 0) & (cols % 2 == 0)).all())


def test_the_plan_keeps_protected_tokens_and_counts_every_token_once():
    torch.manual_seed(1)
    prefix, grid, frames, c = 5, (4, 6), 5, 16
    p = prefix + grid[0] * grid[1]
    y = torch.randn(2, frames * p, c)
    rope = vggt_rope_tables(*grid, head_dim=8, prefix=prefix)
    plan = MergePlan.build(y, prefix, grid, FastAttention(stride=2, ratio=1.0), rope)
    slot, sizes = plan.slot, plan.sizes
    nd = 2 * 3  # destinations of a 4x6 grid at stride 2
    per_frame = prefix + nd  # every source merged
    merged = p + (frames - 1) * per_frame
    assert sizes.shape == (2, merged) and bool((sizes >= 1).all())
    assert torch.equal(sizes.sum(1), torch.full((2,), float(frames * p)))  # every token counted once
    assert torch.equal(slot[:, :p], torch.arange(p).expand(2, p))  # the reference frame: untouched
    for f in range(1, frames):  # camera + registers of every frame: their own merged tokens, size 1
        specials = slot[:, f * p : f * p + prefix]
        assert torch.equal(sizes.gather(1, specials), torch.ones(2, prefix))
    # a merged token stands for tokens of one frame only
    frame_of_token = torch.arange(frames).repeat_interleave(p).expand(2, -1)
    for b in range(2):
        for m in range(merged):
            assert len(set(frame_of_token[b][slot[b] == m].tolist())) == 1
    x = torch.randn(2, frames * p, c)
    means = plan.merge(x)
    assert torch.allclose(plan.unmerge(means)[:, :p], x[:, :p])  # protected tokens come back as they were
    assert plan.rope is not None and plan.rope.cos.shape == (2, merged, 8)


def test_merging_nothing_gives_exact_attention(tiny):
    """ratio near 0 merges no source: the fast path (its plan, per-token RoPE, merge and unmerge)
    must then reproduce exact attention."""
    images = torch.rand(2, 5, 3, 56, 84, generator=torch.Generator().manual_seed(0))
    exact = _run(tiny, images, None)
    same = _run(tiny, images, FastAttention(ratio=1e-6))
    for key in ("pose_enc", "depth", "depth_conf", "world_points"):
        torch.testing.assert_close(same[key], exact[key], atol=2e-6, rtol=0)


def test_exact_is_the_default_and_comes_back_bit_for_bit(tiny):
    images = torch.rand(1, 4, 3, 56, 84, generator=torch.Generator().manual_seed(1))
    set_fast_attention(tiny, None)
    assert tiny.aggregator.fast_attention is None
    before = _run(tiny, images, None)
    fast = _run(tiny, images, True)
    after = _run(tiny, images, False)
    assert not torch.equal(fast["depth"], before["depth"])  # merging changed something
    for key in before:
        if torch.is_tensor(before[key]):
            assert torch.equal(after[key], before[key]), key
    keys = set(tiny.state_dict())
    set_fast_attention(tiny, True)
    assert set(tiny.state_dict()) == keys  # no weight added: checkpoints still load strictly
    set_fast_attention(tiny, None)


def test_one_frame_runs_exactly():
    torch.manual_seed(2)
    model = build_vggt("vggt_tiny").eval()
    images = torch.rand(1, 1, 3, 56, 84)
    exact = _run(model, images, None)
    fast = _run(model, images, True)
    assert torch.equal(fast["depth"], exact["depth"])


def test_many_frames_leave_a_third_of_the_tokens_for_attention():
    """The work fast attention removes, counted instead of timed: at 32 frames of a 392x518 grid the
    global attention sees under a third of the tokens (under a tenth of the pairs)."""
    prefix, grid, frames = 5, (28, 37), 32
    p = prefix + grid[0] * grid[1]
    y = torch.randn(1, frames * p, 8)
    plan = MergePlan.build(y, prefix, grid, FastAttention(), None)
    merged = plan.sizes.shape[1]
    assert merged / (frames * p) < 0.30
    assert (merged / (frames * p)) ** 2 < 0.1


def test_create_model_and_the_checkpoint_loader_take_it(tmp_path):
    model = create_model("vggt_tiny", fast_attention=True)
    assert model.aggregator.fast_attention == FastAttention()
    assert create_model("vggt_tiny").aggregator.fast_attention is None
    with pytest.raises(ValueError, match="VGGT presets"):
        create_model("dinov3_vits16", fast_attention=True)
    from edgescene.models.weights.vggt import load_vggt

    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    loaded = load_vggt(path, preset="vggt_tiny", fast_attention=FastAttention(stride=3))
    assert loaded.aggregator.fast_attention == FastAttention(stride=3)
    with pytest.raises(TypeError, match="VGGT models"):
        set_fast_attention(torch.nn.Linear(2, 2), True)
