"""DPT dense head of VGGT (Ranftl et al., "Vision Transformers for Dense Prediction", 2021).

Follows ``vggt/heads/dpt_head.py``, ``vggt/heads/utils.py`` and ``vggt/heads/head_act.py``: four
aggregator layers are normalised, projected (1x1 conv), given a 0.1-scaled sinusoidal UV position
embedding, resized to 4x / 2x / 1x / 0.5x of the patch grid, fused by RefineNet blocks, upsampled
bilinearly (align_corners=True) to the image size and decoded to ``output_dim`` channels (values and
a confidence channel). With ``feature_only`` it returns the fused features instead (track head).

Upstream numbers kept, with export-friendly code:
- the ReLUs of ``ResidualConvUnit`` are in-place upstream, so the residual adds ``relu(x)``, not
  ``x``; this is written out explicitly here;
- the UV embedding is computed in float64 upstream; here its two separable halves are computed once
  per (grid, channels, aspect) in numpy float64, cast to float32 and cached, so no float64 op enters
  the graph and an export carries two small tables instead of a full-resolution one.
"""

from __future__ import annotations

from typing import Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Upstream splits a bilinear resize along the batch above this many output elements (an int32
# indexing limit of some CUDA kernels); tests lower it to reach that branch on small inputs.
_INT_MAX = 1610612736
_POS_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def uv_position_embedding(
    width: int, height: int, channels: int, aspect_ratio: float, omega_0: float = 100.0
) -> tuple[np.ndarray, np.ndarray]:
    """Sinusoidal embedding of an aspect-normalised UV grid, as its two separable parts.

    The grid spans +-(aspect/diag) * (width-1)/width in x and +-(1/diag) * (height-1)/height in y,
    diag = sqrt(aspect^2 + 1). The first channels/2 channels depend on x only, the rest on y only;
    each half is ``[sin(pos * omega), cos(pos * omega)]`` with ``omega_k = 1 / omega_0 ** (k / (channels/4))``.
    Returns ``x_part`` (channels/2, width) and ``y_part`` (channels/2, height), float32; the full
    (channels, height, width) embedding is ``cat(x_part broadcast over rows, y_part over columns)``.
    """
    key = (width, height, channels, aspect_ratio, omega_0)
    if key not in _POS_CACHE:
        diag = (aspect_ratio**2 + 1.0) ** 0.5
        span_x, span_y = aspect_ratio / diag, 1.0 / diag
        xs = np.linspace(-span_x * (width - 1) / width, span_x * (width - 1) / width, width).astype(np.float32)
        ys = np.linspace(-span_y * (height - 1) / height, span_y * (height - 1) / height, height).astype(np.float32)
        quarter = channels // 4
        omega = 1.0 / omega_0 ** (np.arange(quarter, dtype=np.float64) / quarter)

        def embed(pos: np.ndarray) -> np.ndarray:  # (n,) -> (channels/2, n)
            angles = pos.astype(np.float64)[None, :] * omega[:, None]
            return np.concatenate([np.sin(angles), np.cos(angles)], axis=0).astype(np.float32)

        _POS_CACHE[key] = (embed(xs), embed(ys))
    return _POS_CACHE[key]


def add_uv_position(x: torch.Tensor, image_w: int, image_h: int, ratio: float = 0.1) -> torch.Tensor:
    """x (N, C, h, w) + ratio * UV embedding of its own grid, with the image's aspect ratio.

    The embedding is assembled from its separable parts in the graph (two small constants and a
    broadcast), so exported files do not carry a (C, h, w) table per head at full resolution.
    """
    # int(): under tracing the grid is a static constant, as the input resolution of an export is
    h, w, c = int(x.shape[-2]), int(x.shape[-1]), int(x.shape[1])
    x_table, y_table = uv_position_embedding(w, h, c, int(image_w) / int(image_h))
    x_part = torch.from_numpy(x_table).to(device=x.device, dtype=x.dtype)[:, None, :].expand(-1, h, -1)
    y_part = torch.from_numpy(y_table).to(device=x.device, dtype=x.dtype)[:, :, None].expand(-1, -1, w)
    return x + ratio * torch.cat((x_part, y_part), dim=0)[None]


def interpolate(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize (align_corners=True), split along the batch above ``_INT_MAX`` output elements."""
    elements = size[0] * size[1] * x.shape[0] * x.shape[1]
    if not torch.jit.is_tracing() and elements > _INT_MAX:
        chunks = torch.chunk(x, int(elements) // _INT_MAX + 1, dim=0)
        return torch.cat([F.interpolate(c, size=size, mode="bilinear", align_corners=True) for c in chunks], dim=0)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    """``conv2(relu(conv1(relu(x)))) + relu(x)`` (upstream's in-place ReLU makes the skip relu(x))."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FeatureFusionBlock(nn.Module):
    """RefineNet fusion: (x + rcu1(skip)) -> rcu2 -> bilinear resize -> 1x1 conv."""

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features) if has_residual else None
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None = None, size: tuple[int, int] | torch.Size | None = None
    ) -> torch.Tensor:
        if self.resConfUnit1 is not None and skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = size if size is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
        return self.out_conv(interpolate(x, size))


def _expm1(x: torch.Tensor) -> torch.Tensor:
    """expm1 as upstream; ONNX has no Expm1, so exports use exp(x) - 1 (<= 1.2e-7 absolute apart)."""
    if torch.onnx.is_in_onnx_export():
        return torch.exp(x) - 1
    return torch.expm1(x)


def activate_head(out: torch.Tensor, activation: str, conf_activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) raw -> values (N, H, W, C-1) and confidence (N, H, W) (last channel)."""
    fmap = out.permute(0, 2, 3, 1)
    values, conf = fmap[..., :-1], fmap[..., -1]
    if activation == "exp":
        values = torch.exp(values)
    elif activation == "inv_log":
        values = torch.sign(values) * _expm1(values.abs())
    elif activation == "linear":
        pass
    else:
        raise ValueError(f"unsupported activation {activation!r}; valid: 'exp', 'inv_log', 'linear'")
    if conf_activation == "expp1":
        conf = 1 + conf.exp()
    elif conf_activation == "expp0":
        conf = conf.exp()
    elif conf_activation == "sigmoid":
        conf = torch.sigmoid(conf)
    else:
        raise ValueError(f"unsupported conf_activation {conf_activation!r}; valid: 'expp1', 'expp0', 'sigmoid'")
    return values, conf


class DPTHead(nn.Module):
    """tokens {layer: (B, S, P, dim_in)} -> values (B, S, H, W, output_dim-1) and confidence (B, S, H, W).

    With ``feature_only=True`` returns features (B, S, features, H/down_ratio, W/down_ratio).

    ``frames_chunk_size`` (default 8, as upstream) runs the head on that many frames at a time, so
    its full-resolution maps are held for one chunk only; every operation is per frame, so the
    result equals the unchunked one. ``None`` or 0 runs all frames at once. Traced and exported
    graphs never chunk (the frame axis stays dynamic in them).
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        output_dim: int = 4,
        activation: Literal["exp", "inv_log", "linear"] = "inv_log",
        conf_activation: Literal["expp1", "expp0", "sigmoid"] = "expp1",
        features: int = 256,
        out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024),
        intermediate_layer_idx: tuple[int, int, int, int] = (4, 11, 17, 23),
        pos_embed: bool = True,
        feature_only: bool = False,
        down_ratio: int = 1,
        frames_chunk_size: int | None = 8,
    ) -> None:
        super().__init__()
        if frames_chunk_size is not None and frames_chunk_size < 0:
            raise ValueError(f"frames_chunk_size must be >= 0 or None, got {frames_chunk_size}")
        self.frames_chunk_size = frames_chunk_size
        self.patch_size = patch_size
        self.activation = activation
        self.conf_activation = conf_activation
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        self.down_ratio = down_ratio
        self.intermediate_layer_idx = tuple(intermediate_layer_idx)
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, oc, 1) for oc in out_channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = nn.Module()
        for i, oc in enumerate(out_channels, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(oc, features, 3, padding=1, bias=False))
        self.scratch.refinenet1 = FeatureFusionBlock(features)
        self.scratch.refinenet2 = FeatureFusionBlock(features)
        self.scratch.refinenet3 = FeatureFusionBlock(features)
        self.scratch.refinenet4 = FeatureFusionBlock(features, has_residual=False)
        if feature_only:
            self.scratch.output_conv1 = nn.Conv2d(features, features, 3, padding=1)
        else:
            self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
            self.scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, output_dim, 1)
            )

    def forward(self, tokens: dict[int, torch.Tensor], image_hw: tuple[int, int], patch_start_idx: int):
        s = next(iter(tokens.values())).shape[1]
        chunk = self.frames_chunk_size
        exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        if exporting or not chunk or s <= chunk:
            return self._forward_frames(tokens, image_hw, patch_start_idx)
        parts = [
            self._forward_frames({k: v[:, i : i + chunk] for k, v in tokens.items()}, image_hw, patch_start_idx)
            for i in range(0, s, chunk)
        ]
        if self.feature_only:
            return torch.cat(parts, dim=1)
        return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)

    def _forward_frames(self, tokens: dict[int, torch.Tensor], image_hw: tuple[int, int], patch_start_idx: int):
        h_img, w_img = image_hw
        grid_h, grid_w = h_img // self.patch_size, w_img // self.patch_size
        b, s = next(iter(tokens.values())).shape[:2]
        maps = []
        for i, layer in enumerate(self.intermediate_layer_idx):
            x = self.norm(tokens[layer][:, :, patch_start_idx:].reshape(b * s, grid_h * grid_w, -1))
            x = x.permute(0, 2, 1).reshape(b * s, -1, grid_h, grid_w)
            x = self.projects[i](x)
            if self.pos_embed:
                x = add_uv_position(x, w_img, h_img)
            maps.append(self.resize_layers[i](x))
        out = self._fuse(maps)
        size = (grid_h * self.patch_size // self.down_ratio, grid_w * self.patch_size // self.down_ratio)
        out = interpolate(out, size)
        if self.pos_embed:
            out = add_uv_position(out, w_img, h_img)
        if self.feature_only:
            return out.reshape(b, s, *out.shape[1:])
        output_conv2 = cast(nn.Sequential, self.scratch.output_conv2)
        values, conf = activate_head(output_conv2(out), self.activation, self.conf_activation)
        return values.reshape(b, s, *values.shape[1:]), conf.reshape(b, s, *conf.shape[1:])

    def _fuse(self, maps: list[torch.Tensor]) -> torch.Tensor:
        l1, l2, l3, l4 = (getattr(self.scratch, f"layer{i}_rn")(m) for i, m in enumerate(maps, start=1))
        # the RefineNet blocks sit on the plain ``scratch`` module (upstream's key layout)
        refine1, refine2, refine3, refine4 = (
            cast(FeatureFusionBlock, getattr(self.scratch, f"refinenet{i}")) for i in (1, 2, 3, 4)
        )
        out = refine4(l4, size=l3.shape[-2:])
        out = refine3(out, l3, size=l2.shape[-2:])
        out = refine2(out, l2, size=l1.shape[-2:])
        out = refine1(out, l1)
        return cast(nn.Conv2d, self.scratch.output_conv1)(out)
