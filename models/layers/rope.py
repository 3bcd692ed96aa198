"""Rotary position embeddings for 2-D patch grids: DINOv3's axial RoPE and VGGT's 2D RoPE.

Both rotate q and k of patch tokens only and leave prefix tokens (CLS / storage / camera / register)
unrotated. They differ in frequencies, coordinates and layout:

- DINOv3 (dinov3/layers/rope_position_encoding.py): patch-centre coordinates normalised per axis to
  [-1, 1], ``periods[i] = base ** (2i / (head_dim/2))``, ``angle = 2*pi*coord/period``, angles laid out
  ``[y(D/4), x(D/4), y(D/4), x(D/4)]`` and rotated with rotate-half over the whole head.
- VGGT (vggt/layers/rope.py): integer patch positions starting at 1 (special tokens sit at 0, where
  the rotation is the identity), ``inv_freq[k] = 1 / base ** (2k / (head_dim/2))``; the first half of
  the head rotates with the row (y), the second half with the column (x), rotate-half within each half.

Tables are built from Python ints only (no data-dependent lengths, no ``cartesian_prod``, no
float64), so the graph exports to ONNX and TensorRT as constants or simple ``Range`` ops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1 | x2] -> [-x2 | x1] over the last dimension (half split, not interleaved pairs)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


@dataclass(frozen=True)
class Rope:
    """Rotation for token sequences made of groups ``[prefix tokens | T patch tokens]``.

    cos, sin: (T, head_dim) float32. A sequence of N tokens holds N / (prefix + T) groups (one per
    frame for VGGT global attention). ``split_halves`` selects VGGT's per-half rotate-half.
    Calling it on q or k of shape (B, heads, N, head_dim) returns the rotated tensor (same dtype).
    """

    cos: torch.Tensor
    sin: torch.Tensor
    prefix: int
    split_halves: bool

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        if not self.split_halves:
            return rotate_half(x)
        first, second = x.chunk(2, dim=-1)
        return torch.cat((rotate_half(first), rotate_half(second)), dim=-1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        group = self.prefix + self.cos.shape[0]
        grouped = x.unflatten(-2, (-1, group))
        head, body = grouped[..., : self.prefix, :], grouped[..., self.prefix :, :]
        body32 = body.to(self.cos.dtype)
        body = (body32 * self.cos + self._rotate(body32) * self.sin).to(x.dtype)
        return torch.cat((head, body), dim=-2).flatten(-3, -2)


class DinoRopeEmbedding(nn.Module):
    """DINOv3 axial RoPE with its persistent ``periods`` buffer (head_dim/4 values).

    ``forward(h, w, prefix)`` returns the :class:`Rope` for an h x w patch grid. In training mode the
    coordinates are augmented (random shift, per-axis jitter, global rescale) as upstream; in eval
    mode the result is deterministic.
    """

    periods: torch.Tensor  # buffer (head_dim/4,)

    def __init__(
        self,
        head_dim: int,
        base: float = 100.0,
        rescale_coords: float | None = 2.0,
        shift_coords: float | None = None,
        jitter_coords: float | None = None,
    ) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"RoPE needs head_dim divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        self.rescale_coords = rescale_coords
        self.shift_coords = shift_coords
        self.jitter_coords = jitter_coords
        exponents = 2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2)
        self.register_buffer("periods", base**exponents)

    def forward(self, h: int, w: int, prefix: int) -> Rope:
        device = self.periods.device
        coords_h = torch.arange(0.5, h, device=device, dtype=torch.float32) / h
        coords_w = torch.arange(0.5, w, device=device, dtype=torch.float32) / w
        coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1)
        coords = 2.0 * coords - 1.0  # (h*w, 2) in [-1, 1], (y, x)
        if self.training:
            coords = self._augment(coords)
        angles = 2 * math.pi * coords[:, :, None] / self.periods[None, None, :].float()
        angles = angles.flatten(1, 2)
        angles = torch.cat((angles, angles), dim=-1)  # (h*w, head_dim); cat, not tile: no ONNX `If`
        return Rope(cos=torch.cos(angles), sin=torch.sin(angles), prefix=prefix, split_halves=False)

    def _augment(self, coords: torch.Tensor) -> torch.Tensor:
        device, dtype = coords.device, coords.dtype
        if self.shift_coords is not None:
            coords = (
                coords
                + torch.empty(2, device=device, dtype=dtype).uniform_(-self.shift_coords, self.shift_coords)[None, :]
            )
        if self.jitter_coords is not None:
            j = math.log(self.jitter_coords)
            coords = coords * torch.empty(2, device=device, dtype=dtype).uniform_(-j, j).exp()[None, :]
        if self.rescale_coords is not None:
            r = math.log(self.rescale_coords)
            coords = coords * torch.empty(1, device=device, dtype=dtype).uniform_(-r, r).exp()
        return coords


def vggt_rope_tables(
    grid_h: int,
    grid_w: int,
    head_dim: int,
    prefix: int,
    base: float = 100.0,
    device: torch.device | str | None = None,
) -> Rope:
    """VGGT 2D RoPE for a grid_h x grid_w patch grid, patches at 1-based (row, col) positions.

    Returns a :class:`Rope` whose tables are (grid_h*grid_w, head_dim): first half rows, second half
    columns, each ``cat(theta, theta)`` with ``theta = pos * inv_freq``.
    """
    half = head_dim // 2
    inv_freq = 1.0 / (base ** (torch.arange(0, half, 2, device=device).float() / half))
    rows = torch.arange(1, grid_h + 1, device=device, dtype=torch.float32)
    cols = torch.arange(1, grid_w + 1, device=device, dtype=torch.float32)
    ang_rows = rows[:, None] * inv_freq[None, :]
    ang_cols = cols[:, None] * inv_freq[None, :]
    ang_rows = torch.cat((ang_rows, ang_rows), dim=-1)[:, None, :].expand(grid_h, grid_w, half)
    ang_cols = torch.cat((ang_cols, ang_cols), dim=-1)[None, :, :].expand(grid_h, grid_w, half)
    angles = torch.cat((ang_rows, ang_cols), dim=-1).reshape(grid_h * grid_w, head_dim)
    return Rope(cos=torch.cos(angles), sin=torch.sin(angles), prefix=prefix, split_halves=True)
