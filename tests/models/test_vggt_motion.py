"""The camera head's motion cues (models/vggt/motion.py): a known image shift is measured, the
first frame matches itself, a fresh module changes nothing, and upstream's layout is untouched."""

from __future__ import annotations

from dataclasses import replace

import torch

from edgescene.models.vggt import VGGT_PRESETS, build_vggt
from edgescene.models.vggt.motion import MotionCues, grid_coordinates


def sharp_identity_cues(dim: int) -> MotionCues:
    """Queries and keys are the normalised tokens themselves, softmax nearly an argmax."""
    cues = MotionCues(dim, dim_match=dim)
    with torch.no_grad():
        for layer in (cues.query, cues.key):
            layer.weight.copy_(torch.eye(dim))
            layer.bias.zero_()
        cues.scale = 4.0
    return cues


def test_a_shift_of_one_column_is_measured_and_the_first_frame_stays_put():
    torch.manual_seed(0)
    gh, gw, dim = 6, 8, 32
    first = torch.randn(gh, gw, dim)
    # content moves one column right; the new column is featureless (matches everything alike)
    shifted = torch.cat((torch.zeros(gh, 1, dim), first[:, :-1]), dim=1)
    tokens = torch.stack((first, shifted)).reshape(1, 2, gh * gw, dim)
    module = sharp_identity_cues(dim)
    matched, confidence = module.match(tokens, (gh, gw))
    cues = module.cues(matched, confidence, (gh, gw))
    assert matched.shape == (1, 2, gh * gw, 2) and cues.shape == (1, 2, 13)
    half = (gw - 1) / 2  # the longer side spans [-1, 1]
    dx, dy = cues[0, 1, 0], cues[0, 1, 6]  # the constant-basis moments of the x and y displacement
    assert abs(dx.item() + 1 / half) < 0.03 and abs(dy.item()) < 0.01  # found one column to the left
    assert cues[0, 0, :12].abs().max() < 1e-3  # the first frame against itself: no displacement
    assert cues[0, 0, 12] > 0.99 and 0.8 < cues[0, 1, 12] < 0.9  # the new column (1/8) matches nothing well


def test_grid_coordinates_span_the_longer_side():
    coords = grid_coordinates((3, 5))
    assert coords.shape == (15, 2)
    assert torch.allclose(coords[0], torch.tensor([-1.0, -0.5])) and torch.allclose(
        coords[-1], torch.tensor([1.0, 0.5])
    )


def test_a_fresh_module_adds_nothing_and_official_presets_have_none():
    torch.manual_seed(0)
    with_cues = build_vggt(replace(VGGT_PRESETS["vggt_tiny"], camera_motion=True, enable_track=False)).eval()
    without = build_vggt(replace(VGGT_PRESETS["vggt_tiny"], enable_track=False)).eval()
    state = {k: v for k, v in with_cues.state_dict().items() if not k.startswith("camera_head.motion.")}
    without.load_state_dict(state, strict=True)
    images = torch.rand(1, 3, 3, 42, 56)
    with torch.no_grad():
        assert torch.equal(with_cues(images)["pose_enc"], without(images)["pose_enc"])
    assert not VGGT_PRESETS["vggt_1b"].camera_motion and not VGGT_PRESETS["vggt_small"].camera_motion
    with torch.device("meta"):
        keys = build_vggt("vggt_small_motion").state_dict().keys()
    assert {k.split(".")[2] for k in keys if k.startswith("camera_head.motion.")} == {
        "norm",
        "query",
        "key",
        "embed",
        "pixel_gain",
        "to_pose",
    }


def test_each_frame_is_matched_to_the_one_before_and_the_motion_adds_up():
    """Three frames, each one column further right: every frame finds its patches one column left
    in the frame before, and the cues of the third describe two columns since the first."""
    torch.manual_seed(1)
    gh, gw, dim = 6, 8, 32
    wide = torch.cat((torch.zeros(gh, 2, dim), torch.randn(gh, gw, dim)), dim=1)  # what enters is featureless
    frames = [wide[:, 2 - shift : 2 - shift + gw] for shift in range(3)]  # content moves right by one
    tokens = torch.stack(frames).reshape(1, 3, gh * gw, dim)
    module = sharp_identity_cues(dim)
    matched, confidence = module.match(tokens, (gh, gw))
    cues = module.cues(matched, confidence, (gh, gw))
    column = 1 / ((gw - 1) / 2)
    assert abs(cues[0, 1, 0].item() + column) < 0.05 and abs(cues[0, 2, 0].item() + 2 * column) < 0.1
    assert abs(cues[0, 0, 0].item()) < 1e-3
