"""The graphs that get exported: plain-tensor wrappers around VGGT and DINOv3 with named IO.

VGGT (``images`` (frames, 3, H, W) float32 RGB in [0, 1], normalised inside the graph):

==================  =======================  ==================================================
output              shape                    meaning
==================  =======================  ==================================================
pose_enc            (frames, 9)              absT_quaR_FoV pose encoding (last refinement)
depth               (frames, H, W)           depth along the camera z axis, > 0
depth_conf          (frames, H, W)           confidence >= 1
world_points        (frames, H, W, 3)        point map in the first camera's frame
world_points_conf   (frames, H, W)           confidence >= 1
track, vis,         (frames, N, 2), (frames,  only with the track head: tracks of ``query_points``
track_conf          N), (frames, N)          (N, 2) pixel (x, y) in frame 0; frame and query
                                             counts are fixed per export (the tracker's
                                             nn.MultiheadAttention traces static shapes)
==================  =======================  ==================================================

DINOv3 ``features`` (``images`` (batch, 3, H, W) float32 RGB in [0, 1], normalised inside with the
preset's statistics): ``cls`` (batch, D) normalised CLS token and ``patch_tokens`` (batch, H/16 *
W/16, D) normalised patch tokens, row-major.

The frame (batch) axis is dynamic; H and W are fixed per export (VGGT's position embedding and
the DPT embeddings are resolution constants).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from edgescene.core.artifact import TensorSpec
from edgescene.models.dinov3 import DinoVisionTransformer
from edgescene.models.vggt import VGGT
from edgescene.models.vggt.pose_encoding import depth_to_world_points


class VGGTGraph(nn.Module):
    def __init__(self, model: VGGT, track: bool, unproject: bool = False) -> None:
        super().__init__()
        self.model = model
        self.track = track
        self.unproject = unproject

    def forward(self, images: torch.Tensor, query_points: torch.Tensor | None = None):
        batch = images.unsqueeze(0)
        queries = None
        if self.track:
            assert query_points is not None  # a tracking graph is always traced and run with query_points
            queries = query_points.unsqueeze(0)
        out = self.model(batch, queries)
        outputs: tuple[torch.Tensor, ...] = (
            out["pose_enc"][0],
            out["depth"][0, ..., 0],
            out["depth_conf"][0],
            out["world_points"][0],
            out["world_points_conf"][0],
        )
        if self.unproject:  # depth through the predicted cameras, on the model's device
            outputs += (depth_to_world_points(outputs[1].float(), outputs[0].float()),)
        if self.track:
            outputs += (out["track"][0], out["vis"][0], out["conf"][0])
        return outputs


class DinoFeaturesGraph(nn.Module):
    mean: torch.Tensor  # buffers (1, 3, 1, 1)
    std: torch.Tensor

    def __init__(self, model: DinoVisionTransformer) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(model.config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(model.config.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor):
        features = self.model.forward_features((images - self.mean) / self.std)
        return features["x_norm_clstoken"], features["x_norm_patchtokens"]


@contextlib.contextmanager
def exportable_attention():
    """Route nn.MultiheadAttention (VGGT's tracker) through its plain path, which the ONNX exporter
    can trace (the fused inference fast path is one op ONNX lacks). Used for tracing and for the
    gate's PyTorch reference alike, so both compute the same thing."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


# Outputs whose gate tolerance is the confidence one.
CONFIDENCE_OUTPUTS = frozenset({"depth_conf", "world_points_conf", "vis", "track_conf"})


@dataclass
class ExportGraph:
    """A wrapper module plus everything the exporter and the gate need to know about its IO."""

    module: nn.Module
    family: str
    preset: str
    height: int
    width: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    normalization: dict
    first_block_prefixes: tuple[str, ...]  # ONNX node-name prefixes of the first attention block(s)
    fp32_prefixes: tuple[str, ...] = field(default_factory=tuple)  # subgraphs kept fp32 in low precision
    num_queries: int = 8

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes = {}
        for spec in self.inputs + self.outputs:
            dynamic = {i: d for i, d in enumerate(spec.shape) if isinstance(d, str)}
            if dynamic:
                axes[spec.name] = dynamic
        return axes

    def feeds(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Inputs for ``images`` (frames, 3, H, W) float32 in [0, 1]: adds fixed query points when tracking."""
        feeds = {"images": np.ascontiguousarray(images, np.float32)}
        if "query_points" in self.input_names:
            grid = np.linspace(0.1, 0.9, self.num_queries, dtype=np.float32)
            feeds["query_points"] = np.stack([grid * (self.width - 1), grid[::-1] * (self.height - 1)], axis=1)
        return feeds

    @torch.no_grad()
    def reference(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """PyTorch eager fp32 outputs: what every artifact is compared with."""
        args = [torch.from_numpy(feeds[name]) for name in self.input_names]
        with exportable_attention():
            outputs = self.module(*args)
        return {name: t.float().numpy() for name, t in zip(self.output_names, outputs, strict=True)}


def vggt_graph(
    model: VGGT,
    preset: str,
    height: int,
    width: int,
    track: bool,
    track_frames: int | None = None,
    num_queries: int = 8,
    unproject: bool = False,
) -> ExportGraph:
    """``unproject``: add the output ``depth_points`` (frames, H, W, 3), depth unprojected with the
    predicted cameras in the graph, so the runtime does not do it on the CPU."""
    if track and model.track_head is None:
        raise ValueError("--track needs a model with a track head (this checkpoint has none)")
    frames = "frames"
    inputs = [TensorSpec("images", [frames, 3, height, width], "float32", "RGB in [0, 1]")]
    outputs = [
        TensorSpec(
            "pose_enc", [frames, 9], "float32", "absT_quaR_FoV: translation, XYZW quaternion, fov_h, fov_w (rad)"
        ),
        TensorSpec("depth", [frames, height, width], "float32", "depth along the camera z axis"),
        TensorSpec("depth_conf", [frames, height, width], "float32", "depth confidence >= 1"),
        TensorSpec("world_points", [frames, height, width, 3], "float32", "points in the first camera's frame"),
        TensorSpec("world_points_conf", [frames, height, width], "float32", "point confidence >= 1"),
    ]
    if unproject:
        outputs.append(
            TensorSpec(
                "depth_points",
                [frames, height, width, 3],
                "float32",
                "depth unprojected with the predicted cameras, in the first camera's frame",
            )
        )
    if track:  # nn.MultiheadAttention traces with static shapes: fixed frame and query counts
        frames_fixed = track_frames or 2
        inputs[0].shape[0] = frames_fixed
        for spec in outputs:
            spec.shape[0] = frames_fixed
        q = num_queries
        inputs.append(TensorSpec("query_points", [q, 2], "float32", "pixel (x, y) in frame 0"))
        outputs += [
            TensorSpec("track", [frames_fixed, q, 2], "float32", "pixel (x, y) per frame"),
            TensorSpec("vis", [frames_fixed, q], "float32", "visibility in (0, 1)"),
            TensorSpec("track_conf", [frames_fixed, q], "float32", "track confidence in (0, 1)"),
        ]
    mean, std = model.aggregator.mean, model.aggregator.std
    return ExportGraph(
        module=VGGTGraph(model, track, unproject).eval(),
        family="vggt",
        preset=preset,
        height=height,
        width=width,
        inputs=inputs,
        outputs=outputs,
        normalization={"input_range": [0, 1], "mean": list(mean), "std": list(std), "in_graph": True},
        first_block_prefixes=("/model/aggregator/frame_blocks.0/", "/model/aggregator/global_blocks.0/"),
        fp32_prefixes=("/model/camera_head/", "/model/depth_head/", "/model/point_head/", "/model/track_head/"),
        num_queries=num_queries,
    )


def dinov3_graph(model: DinoVisionTransformer, preset: str, height: int, width: int) -> ExportGraph:
    patches = (height // model.patch_size) * (width // model.patch_size)
    dim = model.embed_dim
    return ExportGraph(
        module=DinoFeaturesGraph(model).eval(),
        family="dinov3",
        preset=preset,
        height=height,
        width=width,
        inputs=[TensorSpec("images", ["batch", 3, height, width], "float32", "RGB in [0, 1]")],
        outputs=[
            TensorSpec("cls", ["batch", dim], "float32", "normalised CLS token"),
            TensorSpec("patch_tokens", ["batch", patches, dim], "float32", "normalised patch tokens, row-major"),
        ],
        normalization={
            "input_range": [0, 1],
            "mean": list(model.config.mean),
            "std": list(model.config.std),
            "in_graph": True,
        },
        first_block_prefixes=("/model/blocks.0/",),
    )
