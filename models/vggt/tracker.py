"""Iterative point tracker of VGGT (``BaseTrackerPredictor``) and its sampling / embedding helpers.

Follows ``vggt/heads/track_modules/{base_track_predictor,blocks,modules,utils}.py`` of
facebookresearch/vggt (released version), themselves adapted from facebookresearch/vggsfm and
facebookresearch/co-tracker (CoTracker2's ``EfficientUpdateFormer``).

Shapes and conventions:
- ``fmaps`` (B, S, C, h, w): per-frame features, ``stride`` times smaller than the image;
- ``query_points`` (B, N, 2): pixel (x, y) in frame 0 of the input image;
- internal coordinates are feature-map pixels (image / stride), pixel centres at integers
  (``align_corners=True``: x = 0 is the centre of the left column, x = w-1 of the right one);
- outputs: tracks (B, S, N, 2) in image pixels per iteration, visibility and confidence (B, S, N)
  in (0, 1). Frame-0 tracks equal the queries exactly.

Upstream details kept for numerical parity:
- features of the queries and of the position table are sampled with "border" padding, the
  correlation windows with "zeros" padding; sampling coordinates carry no gradient;
- the correlation window is built from ``meshgrid(d, d, indexing="ij")`` added to (x, y), so the
  first window axis walks x and the second walks y: flattened index ``(dx + r) * (2r+1) + (dy + r)``;
- the flow embedding is CoTracker's: frequencies ``k * 1000 / C`` (k = 0, 2, ...), interleaved
  sin/cos, x then y, plus ``flows / max_scale`` twice;
- the 2D sin-cos table is computed in float64 upstream; here in numpy float64, cached as float32.

Update transformer (``EfficientUpdateFormer``): tokens (B, N, T, D_in), N tracks, T frames. Each
of ``depth`` steps runs attention over time (per track) and then a space step (per frame) through
``num_virtual_tracks`` learned tokens: virtual <- points (cross), virtual <- virtual (self),
points <- virtual (cross). Upstream quirks kept because the released weights depend on them:
- both block types are "normalise, then add": ``x = norm1(x); x = x + attn(x); x + mlp(norm2(x))``,
  so the residual stream is the *normalised* input, unlike a standard pre-norm block;
- the virtual tokens are stored as ``virual_tracks`` (sic), shape (1, V, 1, hidden);
- upstream runs a space step after time block ``i`` when ``i % (time_depth // space_depth) == 0``;
  VGGT has equal depths, so that is after every time block, which is what this does;
- ``nn.MultiheadAttention(batch_first=True)`` is called as upstream (``need_weights=True``, weights
  discarded): PyTorch's explicit softmax path, bit-identical to upstream. SDPA
  (``need_weights=False``) differs by float32 rounding, which the flow embedding (up to ~1000
  rad/pixel) amplifies over iterations; the maps are small (T x T, V x N). MLPs: exact-erf GELU.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgescene.models.layers import Mlp

_SINCOS_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def sincos_pos_table(dim: int, height: int, width: int) -> np.ndarray:
    """2D sin-cos position table (dim, height, width) float32 of integer pixel positions.

    Channels ``[0, dim/2)`` encode x, ``[dim/2, dim)`` encode y; each half is ``[sin | cos]`` of
    ``pos * omega_k`` with ``omega_k = 10000 ** (-k / (dim/4))``, k = 0 .. dim/4 - 1 (float64).
    """
    if dim % 4:
        raise ValueError(f"sin-cos table needs dim divisible by 4, got {dim}")
    key = (dim, height, width)
    if key not in _SINCOS_CACHE:
        quarter = dim // 4
        omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)

        def embed(pos: np.ndarray) -> np.ndarray:  # (M,) -> (M, dim/2)
            angles = pos[:, None] * omega[None, :]
            return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

        ys, xs = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
        table = np.concatenate([embed(xs.reshape(-1)), embed(ys.reshape(-1))], axis=1).astype(np.float32)
        _SINCOS_CACHE[key] = np.ascontiguousarray(table.reshape(height, width, dim).transpose(2, 0, 1))
    return _SINCOS_CACHE[key]


def flow_embedding(flows: torch.Tensor, channels: int) -> torch.Tensor:
    """(..., 2) displacements -> (..., 2 * channels): interleaved sin/cos of x, then of y.

    Frequencies are ``k * 1000 / channels`` for k = 0, 2, ..., channels - 2 (CoTracker's
    ``get_2d_embedding`` with ``cat_coords=False``).
    """
    freqs = torch.arange(0, channels, 2, device=flows.device, dtype=torch.float32) * (1000.0 / channels)
    freqs = freqs.to(flows.dtype)

    def embed(v: torch.Tensor) -> torch.Tensor:
        angles = v * freqs
        return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(-2)

    return torch.cat([embed(flows[..., 0:1]), embed(flows[..., 1:2])], dim=-1)


def bilinear_sample(image: torch.Tensor, coords: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Sample image (B, C, H, W) at pixel coords (B, Ho, Wo, 2) as (x, y) -> (B, C, Ho, Wo).

    Pixel centres are integers (``align_corners=True``). The coordinates are detached, as upstream.
    """
    h, w = image.shape[-2:]
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=coords.device, dtype=coords.dtype)
    grid = coords.detach().to(image.dtype) * scale.to(image.dtype) - 1
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def sample_features(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """image (B, C, H, W), points (B, N, 2) pixel (x, y) -> (B, N, C), bilinear with border padding."""
    return bilinear_sample(image, points.unsqueeze(2)).squeeze(-1).permute(0, 2, 1)


def correlation_pyramid(fmaps: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """fmaps (B, S, C, H, W) -> ``levels`` maps, each 2x2 average-pooled from the previous (floor)."""
    b, s = fmaps.shape[:2]
    pyramid = [fmaps]
    for _ in range(levels - 1):
        pooled = F.avg_pool2d(pyramid[-1].flatten(0, 1), kernel_size=2, stride=2)
        pyramid.append(pooled.reshape(b, s, *pooled.shape[1:]))
    return pyramid


def window_offsets(radius: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(2r+1, 2r+1, 2) integer offsets added to (x, y); ``offsets[i, j] = (i - r, j - r)``."""
    d = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1)


def sample_correlation(
    pyramid: list[torch.Tensor], feats: torch.Tensor, coords: torch.Tensor, radius: int
) -> torch.Tensor:
    """Local correlation windows around each track.

    pyramid: maps (B, S, C, H_l, W_l); feats (B, S, N, C) track features; coords (B, S, N, 2) in
    level-0 pixels. For each level l, the dot products ``feats . map / sqrt(C)`` are sampled
    bilinearly (zeros padding) on a (2r+1)^2 window around ``coords / 2^l``.
    Returns (B, S, N, levels * (2r+1)^2), level-major.
    """
    b, s, n, _ = coords.shape
    offsets = window_offsets(radius, coords.device, coords.dtype)
    side = 2 * radius + 1
    out = []
    for level, fmap in enumerate(pyramid):
        c, h, w = fmap.shape[2:]
        corr = torch.matmul(feats, fmap.reshape(b, s, c, h * w)) / math.sqrt(c)  # (B, S, N, H*W)
        grid = coords.reshape(b * s * n, 1, 1, 2) / (2**level) + offsets.reshape(1, side, side, 2)
        window = bilinear_sample(corr.reshape(b * s * n, 1, h, w), grid, padding_mode="zeros")
        out.append(window.reshape(b, s, n, side * side))
    return torch.cat(out, dim=-1)


# --- update transformer (blocks.py / modules.py) ---


class AttnBlock(nn.Module):
    """Self-attention block: ``x = norm1(x); x = x + attn(x); x + mlp(norm2(x))``. x: (B, L, C)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)  # upstream: the residual branch starts from the normalised tokens
        x = x + self.attn(x, x, x, need_weights=True)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Cross-attention block: x (B, L, C) attends to context (B, M, C); same residual quirk as AttnBlock."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm_context = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.cross_attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + self.cross_attn(x, context, context, need_weights=True)[0]
        return x + self.mlp(self.norm2(x))


class EfficientUpdateFormer(nn.Module):
    """tokens (B, N, T, input_dim) -> updates (B, N, T, output_dim) by alternating time / space attention."""

    def __init__(
        self,
        depth: int = 6,
        input_dim: int = 388,
        hidden_size: int = 384,
        num_heads: int = 8,
        output_dim: int = 130,
        mlp_ratio: float = 4.0,
        num_virtual_tracks: int = 64,
    ) -> None:
        super().__init__()
        self.num_virtual_tracks = num_virtual_tracks
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim)
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))  # (sic) upstream key

        def self_blocks() -> nn.ModuleList:
            return nn.ModuleList(AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))

        def cross_blocks() -> nn.ModuleList:
            return nn.ModuleList(CrossAttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))

        self.time_blocks = self_blocks()
        self.space_virtual_blocks = self_blocks()
        self.space_point2virtual_blocks = cross_blocks()
        self.space_virtual2point_blocks = cross_blocks()
        self._init_weights()

    def _init_weights(self) -> None:
        """Upstream init: Xavier-uniform Linear weights, zero biases, flow head N(0, 1e-3) truncated."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.input_transform(self.input_norm(x))
        init_tokens = tokens
        b, n, t, c = tokens.shape
        virtual = self.virual_tracks.expand(b, -1, t, -1).to(tokens.dtype)
        tokens = torch.cat([tokens, virtual], dim=1)  # (B, M, T, C), M = N + V
        m = n + self.num_virtual_tracks
        for i, time_block in enumerate(self.time_blocks):
            tokens = time_block(tokens.reshape(b * m, t, c)).reshape(b, m, t, c)
            space = tokens.permute(0, 2, 1, 3).reshape(b * t, m, c)  # (B*T, M, C)
            points, virtual = space[:, :n], space[:, n:]
            virtual = self.space_virtual2point_blocks[i](virtual, points)
            virtual = self.space_virtual_blocks[i](virtual)
            points = self.space_point2virtual_blocks[i](points, virtual)
            tokens = torch.cat([points, virtual], dim=1).reshape(b, t, m, c).permute(0, 2, 1, 3)
        tokens = tokens[:, :n] + init_tokens
        return self.flow_head(self.output_norm(tokens))


class BaseTrackerPredictor(nn.Module):
    """Refines tracks of frame-0 queries through all frames (VGGSfM / CoTracker style).

    ``transformer_dim = 3 * latent_dim + 4``: flow embedding (latent + 4), correlation features
    (latent) and track features (latent). Each iteration predicts (dx, dy) and a feature update.
    """

    def __init__(
        self,
        stride: int = 2,
        corr_levels: int = 7,
        corr_radius: int = 4,
        latent_dim: int = 128,
        hidden_size: int = 384,
        depth: int = 6,
        num_heads: int = 8,
        num_virtual_tracks: int = 64,
        max_scale: int = 518,
    ) -> None:
        super().__init__()
        if latent_dim % 4:
            raise ValueError(f"latent_dim must be divisible by 4, got {latent_dim}")
        self.stride = stride
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.latent_dim = latent_dim
        self.max_scale = max_scale
        self.flows_emb_dim = latent_dim // 2
        self.transformer_dim = 3 * latent_dim + 4
        self.corr_mlp = Mlp(corr_levels * (2 * corr_radius + 1) ** 2, hidden_size, latent_dim)
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = EfficientUpdateFormer(
            depth=depth,
            input_dim=self.transformer_dim,
            hidden_size=hidden_size,
            num_heads=num_heads,
            output_dim=latent_dim + 2,
            mlp_ratio=4.0,
            num_virtual_tracks=num_virtual_tracks,
        )
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1))

    def forward(
        self, query_points: torch.Tensor, fmaps: torch.Tensor, iters: int = 4
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """query_points (B, N, 2) image pixels in frame 0, fmaps (B, S, C, h, w) ->
        (tracks per iteration [(B, S, N, 2)] in image pixels, visibility (B, S, N), confidence (B, S, N))."""
        b, n, _ = query_points.shape
        s, c, hh, ww = fmaps.shape[1:]
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)  # LayerNorm over C

        queries = query_points / float(self.stride)  # (B, N, 2) feature-map pixels
        coords = queries.reshape(b, 1, n, 2).repeat(1, s, 1, 1)
        query_feats = sample_features(fmaps[:, 0], queries)  # (B, N, C)
        track_feats = query_feats.unsqueeze(1).repeat(1, s, 1, 1)  # (B, S, N, C)
        pyramid = correlation_pyramid(fmaps, self.corr_levels)

        # Constant per forward: position embedding of the queries and the frame-0 / other-frames token.
        table = torch.from_numpy(sincos_pos_table(self.transformer_dim, hh, ww)).to(fmaps.device, fmaps.dtype)
        pos_emb = sample_features(table[None].expand(b, -1, -1, -1), queries).reshape(b * n, 1, -1)
        ref_token = torch.cat(
            [self.query_ref_token[:, 0:1], self.query_ref_token[:, 1:2].expand(-1, s - 1, -1)], dim=1
        ).to(fmaps.dtype)  # (1, S, D)

        coord_preds = []
        for _ in range(iters):
            coords = coords.detach()
            corr = sample_correlation(pyramid, track_feats, coords, self.corr_radius)  # (B, S, N, L)
            corr = self.corr_mlp(corr.permute(0, 2, 1, 3).reshape(b * n, s, -1))  # (B*N, S, latent)
            flows = (coords - coords[:, 0:1]).permute(0, 2, 1, 3).reshape(b * n, s, 2)
            flows_emb = torch.cat(
                [flow_embedding(flows, self.flows_emb_dim), flows / self.max_scale, flows / self.max_scale], dim=-1
            )
            feats = track_feats.permute(0, 2, 1, 3).reshape(b * n, s, self.latent_dim)
            x = torch.cat([flows_emb, corr, feats], dim=-1) + pos_emb
            x = x + ref_token

            delta = self.updateformer(x.reshape(b, n, s, self.transformer_dim)).reshape(b * n * s, -1)
            delta_coords, delta_feats = delta[:, :2], delta[:, 2:]
            feats = self.ffeat_updater(self.ffeat_norm(delta_feats)) + feats.reshape(b * n * s, self.latent_dim)
            track_feats = feats.reshape(b, n, s, self.latent_dim).permute(0, 2, 1, 3)  # (B, S, N, C)

            coords = coords + delta_coords.reshape(b, n, s, 2).permute(0, 2, 1, 3)
            coords = torch.cat([queries.unsqueeze(1), coords[:, 1:]], dim=1)  # frame 0 stays the query
            coord_preds.append(coords * self.stride)

        flat = track_feats.reshape(b * s * n, self.latent_dim)
        vis = torch.sigmoid(self.vis_predictor(flat).reshape(b, s, n))
        conf = torch.sigmoid(self.conf_predictor(flat).reshape(b, s, n))
        return coord_preds, vis, conf
