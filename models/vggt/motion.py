"""Motion cues for the camera head: where each patch of a frame is found in the frame before.

An edgescene addition for small VGGT models trained from scratch (preset ``vggt_small_motion``);
upstream VGGT has nothing like it and the official checkpoints load without it. Why: the
aggregator's global attention can match a patch to its counterpart in another frame, but with
rotary position encoding only the queries and keys carry position, so *where* the match lies does
not reach the camera token; a huge model learns to recover it, a 7 M-parameter one trained on a CPU
does not (its camera head learned how much the camera turns, never which way). This module states
the answer explicitly, as optical-flow networks do with a correlation layer (FlowNet, PWC-Net,
RAFT):

1. every frame's patch tokens (last aggregator layer, (B, S, P, C)) are projected to queries, the
   previous frame's to keys (frames in a window are close in time: their motion stays within the
   search radius below, where frame i against the first frame would not); the scaled dot products
   plus a learned gain times the normalised
   cross-correlation of the patches' own pixels (:func:`pixel_descriptors`: a match that works
   before any training) are the logits; each patch's match in the previous frame is their
   soft-argmax over that frame's patches within :data:`MATCH_RADIUS` of its own place (a
   global soft-argmax drowns in repeated texture: measured on held-out scenes, the pixel
   correlation alone gets the sign of the horizontal motion right in 97 % of frames within radius
   2, 71-84 % within 3-4, and the global match is worse than assuming no motion);
2. the displacement field ``d = match - position`` (patch grid coordinates, divided by half the
   longer grid side: the longer axis spans [-1, 1]) is summarised, per frame, by its
   confidence-weighted moments over the basis ``1, x, y, x^2, x y, y^2`` (12 numbers, independent
   of the grid size: a shift, a rotation in the image plane, a zoom and perspective each leave a
   distinct pattern), summed over the frames so far (the motion since the first frame), plus the
   mean match confidence (the largest softmax probability);
3. those 13 numbers are embedded by an MLP and added to each frame's camera token, and mapped
   linearly onto the camera head's first pose estimate (a direct path: added to a LayerNorm-ed
   token alone, the cues were 2 % of its size and 800 steps did not teach the head to read them);
   both last layers start at zero: a model grown from one without the module predicts exactly as
   before until training moves it.

Training supervises the matches themselves with the true correspondences (the ground truth's
point map projected into the previous camera; ``edgescene.train.vggt.losses.match_loss``), as
upstream trains its tracker: a from-scratch model's features do not match across frames on their
own (measured: the bundled model's tokens get the sign of the sideways motion right in 5 of 12
held-out frames, no better than chance).

The first frame matches itself: its displacement is about zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgescene.models.layers import Mlp

POSE_ENCODING_DIM = 9  # as the camera head's (absT_quaR_FoV)

CUE_DIM = 13  # 2 displacement components x 6 basis functions + mean confidence
# Cues enter the layers multiplied by this: displacement moments are ~0.1, and under Adam a weight
# moves about lr per step, so at 1x the direct path needed ~6,000 steps to reach its size (measured:
# 0.05 of the ~1.7 it needs after 800 steps at lr 3e-4, already correlating 0.56 with the truth).
CUE_SCALE = 10.0
MATCH_RADIUS = 2  # a patch's match lies within this many patches (rows and columns) of its own place


def pixel_descriptors(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, S, 3, H, W) images -> (B, S, P, K) unit-norm, zero-mean descriptors of each
    patch's pixels, row-major like the patch tokens: the patch averaged over 2 x 2 pixel cells
    (K = 3 (p/2)^2; tolerant of shifts of a pixel or two), so their dot product is a normalised
    cross-correlation."""
    b, s, c, h, w = images.shape
    cell = 2 if patch_size % 2 == 0 else 1
    pooled = F.avg_pool2d(images.reshape(b * s, c, h, w), cell)
    q, gh, gw = patch_size // cell, h // patch_size, w // patch_size
    patches = pooled[:, :, : gh * q, : gw * q].reshape(b * s, c, gh, q, gw, q).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(b, s, gh * gw, c * q * q)
    patches = patches - patches.mean(dim=-1, keepdim=True)
    return F.normalize(patches, dim=-1)


def previous(x: torch.Tensor) -> torch.Tensor:
    """(B, S, ...) -> frame i holds frame i - 1's values; frame 0 keeps its own."""
    return torch.cat((x[:, :1], x[:, :-1]), dim=1)


def grid_coordinates(grid: tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
    """(gh * gw, 2) patch centres (x, y), row-major, scaled so the longer side spans [-1, 1]."""
    gh, gw = grid
    half = max(gh - 1, gw - 1, 1) / 2
    y, x = torch.meshgrid(
        torch.arange(gh, device=device, dtype=dtype), torch.arange(gw, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack(((x - (gw - 1) / 2) / half, (y - (gh - 1) / 2) / half), dim=-1).reshape(-1, 2)


class MotionCues(nn.Module):
    """patch tokens (B, S, P, dim_in) on a (gh, gw) grid -> (B, S, dim_in) added to the camera tokens."""

    def __init__(self, dim_in: int, dim_match: int = 64) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim_in)
        self.query = nn.Linear(dim_in, dim_match)
        self.key = nn.Linear(dim_in, dim_match)
        self.scale = dim_match**-0.5
        # weight of the pixels' own correlation in the match logits (learned; starts sharp)
        self.pixel_gain = nn.Parameter(torch.tensor(50.0))
        self.embed = Mlp(CUE_DIM, dim_in, dim_in)
        self.to_pose = nn.Linear(CUE_DIM, POSE_ENCODING_DIM)  # the direct path: a shift is a turn
        for layer in (self.embed.fc2, self.to_pose):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def match(
        self, patch_tokens: torch.Tensor, grid: tuple[int, int], pixels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, P, dim_in) -> where each patch of frame i is found in frame i - 1 (the first frame:
        in itself) (B, S, P, 2) in :func:`grid_coordinates` units, and the match's confidence
        (B, S, P), its largest probability.
        ``pixels`` (B, S, P, K): a descriptor of each patch's own pixels (:func:`pixel_descriptors`)
        whose correlation joins the learned one: a match from the first step of training."""
        x = self.norm(patch_tokens)
        queries = self.query(x)  # (B, S, P, D)
        keys = previous(self.key(x))  # (B, S, P, D): frame i's keys are frame i-1's (the first: its own)
        logits = queries @ keys.transpose(-1, -2) * self.scale  # (B, S, P, P)
        if pixels is not None:
            logits = logits + self.pixel_gain * (pixels @ previous(pixels).transpose(-1, -2))
        coords = grid_coordinates(grid, x.device, x.dtype)  # (P, 2)
        half = max(grid[0] - 1, grid[1] - 1, 1) / 2
        near = (coords[:, None] - coords[None]).abs().amax(dim=-1) <= (MATCH_RADIUS + 0.5) / half  # (P, P)
        probabilities = logits.masked_fill(~near, -1e4).softmax(dim=-1)
        return probabilities @ coords, probabilities.amax(dim=-1)

    def cues(self, matched: torch.Tensor, confidence: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Matches (B, S, P, 2) and confidences (B, S, P) -> (B, S, 13): the displacement moments
        of each frame against the one before, summed from the first frame on (so they describe the
        motion since the first frame, which the camera head predicts), and the mean confidence."""
        coords = grid_coordinates(grid, matched.device, matched.dtype)
        displacement = matched - coords  # (B, S, P, 2)
        cx, cy = coords[:, 0], coords[:, 1]
        basis = torch.stack((torch.ones_like(cx), cx, cy, cx * cx, cx * cy, cy * cy), dim=-1)  # (P, 6)
        weights = confidence / confidence.sum(dim=-1, keepdim=True).clamp(min=1e-6)
        moments = torch.einsum("bsp,bspk,pj->bskj", weights, displacement, basis)  # (B, S, 2, 6)
        since_first = moments.flatten(-2).cumsum(dim=1)
        return torch.cat((since_first, confidence.mean(dim=-1, keepdim=True)), dim=-1)

    def forward(
        self, patch_tokens: torch.Tensor, grid: tuple[int, int], pixels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> the embedding to add to the camera tokens (B, S, dim_in), a pose encoding offset
        (B, S, 9) for the camera head's first estimate, and the matches (B, S, P, 2) (what training
        supervises with the true correspondences)."""
        matched, confidence = self.match(patch_tokens, grid, pixels)
        cues = self.cues(matched, confidence, grid) * CUE_SCALE
        return self.embed(cues), self.to_pose(cues), matched
