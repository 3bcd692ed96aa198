"""PyTorch backend: a checkpoint file or a preset run eagerly, with exactly the exported graphs' IO.

The reference every artifact is compared with, and the way to run a checkpoint before exporting it.
The only runtime module that imports torch and :mod:`edgescene.models`, and only when chosen: a
checkpoint (``.pt`` / ``.pth`` / ``.safetensors``, VGGT or DINOv3, told apart by
``inspect_checkpoint``) or a preset name (random weights, or ``weights=`` a checkpoint for it).
The IO comes from the export wrappers (:mod:`edgescene.export.graphs`), so names, shapes and
normalisation are those of an ONNX export at the same ``height`` x ``width`` (defaults: VGGT at its
own resolution, ``img_size`` wide and 3/4 of it high rounded to the patch, i.e. 392x518 for VGGT-1B
and 126x168 for the bundled vggt_small; 224x224 for DINOv3); :attr:`artifact` is a synthetic
artifact describing it. A VGGT session
serves any H and W that are multiples of the patch size (``artifact.any_size_multiple``: images
``(frames, 3, "height", "width")``), so the runtime feeds each input at upstream's size.

On CUDA the model runs under autocast in bf16 (fp16 on GPUs without bf16) with PyTorch's SDPA
attention, optionally ``torch.compile``-d; on the CPU in fp32. Outputs are float32 numpy arrays.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgescene.core.artifact import Artifact, portable_source, with_named_image_axes
from edgescene.runtime.backends import BaseSession, check_device, check_feeds

if TYPE_CHECKING:
    from edgescene.models.dinov3 import DinoVisionTransformer
    from edgescene.models.vggt import VGGT

DEFAULT_SIZE = {"vggt": (392, 518), "dinov3": (224, 224)}
DEFAULT_OPT_FRAMES = {"vggt": 2, "dinov3": 1}


def _load(
    model: str | Path, weights: str | Path | None
) -> tuple[VGGT | DinoVisionTransformer, str, str, str, str | None]:
    """(module, family, preset, source, sha256) for a preset name or a checkpoint file."""
    from edgescene.models.loading import load_model

    loaded = load_model(model, weights)
    return loaded.module, loaded.family, loaded.preset, loaded.source, loaded.sha256


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device='cuda' but torch {torch.__version__} sees no CUDA GPU (built for CUDA "
            f"{torch.version.cuda or 'none'}): install a CUDA build of torch, or pass device='cpu'"
        )
    return torch.device(device)


class TorchSession(BaseSession):
    """A PyTorch checkpoint or preset. Options: ``weights`` (a checkpoint for a preset name), ``height`` /
    ``width`` (multiples of the patch size), ``max_frames`` (frame / batch bound for input checks),
    ``compile`` (``torch.compile`` the model), ``fast_attention`` (VGGT: token merging in the global
    attention, :mod:`edgescene.models.vggt.token_merge`; recorded as ``artifact.model["fast_attention"]``),
    ``unproject`` (VGGT: also output ``depth_points``, depth unprojected on the model's device; default:
    on CUDA, where it saves the runtime's CPU work, off on the CPU)."""

    backend = "torch"

    def __init__(
        self,
        model: str | Path,
        artifact: Artifact | None = None,
        device: str = "auto",
        *,
        weights: str | Path | None = None,
        height: int | None = None,
        width: int | None = None,
        max_frames: int = 1024,
        compile: bool = False,
        fast_attention: bool = False,
        unproject: bool | None = None,
    ) -> None:
        from edgescene.export.graphs import dinov3_graph, vggt_graph
        from edgescene.models.vggt import VGGT

        check_device(
            device,
            ("auto", "cpu", "cuda"),
            "torch",
            ": TensorRT runs exported engines; export one with `edgescene export --format tensorrt`",
        )
        if artifact is not None:
            raise ValueError("the torch backend builds its own artifact description; pass artifact=None")
        self._device = _pick_device(device)
        self.device = self._device.type
        module, family, preset, source, sha = _load(model, weights)
        fast = None
        if fast_attention:
            if not isinstance(module, VGGT):
                raise ValueError(f"fast_attention applies to VGGT models, not {family} ({preset})")
            from edgescene.models.vggt.token_merge import set_fast_attention

            fast = set_fast_attention(module, True)
        self._vggt = module if isinstance(module, VGGT) else None
        patch = module.config.patch_size
        if isinstance(module, VGGT) and height is None and width is None:  # the model's own resolution, 4:3
            width = module.config.img_size  # 518 for VGGT-1B, as upstream; 168 for the bundled vggt_small
            height = max(patch, round(width * 3 / 4 / patch) * patch)
        height = height or DEFAULT_SIZE[family][0]
        width = width or DEFAULT_SIZE[family][1]
        for axis, value in (("height", height), ("width", width)):
            if value < patch or value % patch:
                raise ValueError(
                    f"{axis} {value} must be a positive multiple of the patch size {patch} "
                    f"(e.g. {max(patch, round(value / patch) * patch)})"
                )
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self._autocast_dtype = None
        if self.device == "cuda":
            self._autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self._autocast_dtype]
        graph = (
            vggt_graph(
                module,
                preset,
                height,
                width,
                track=False,
                unproject=self.device == "cuda" if unproject is None else unproject,
            )
            if isinstance(module, VGGT)  # family "vggt"
            else dinov3_graph(module, preset, height, width)
        )
        inputs, outputs = graph.inputs, graph.outputs
        any_size: int | None = None
        if family == "vggt":  # every size, multiple of the patch: H and W become named axes
            inputs = [with_named_image_axes(t, height, width) for t in inputs]
            outputs = [with_named_image_axes(t, height, width) for t in outputs]
            any_size = patch
        self.artifact = Artifact(
            format="torch",
            precision=precision,
            backend="torch",
            model={
                "family": family,
                "preset": preset,
                "source": portable_source(source),
                "source_sha256": sha,
                "track_head": False,
                **({"fast_attention": fast.describe()} if fast is not None else {}),
            },
            files={"model": source},
            inputs=inputs,
            outputs=outputs,
            any_size_multiple=any_size,
            input_size={"height": height, "width": width},
            frames={"min": 1, "opt": min(DEFAULT_OPT_FRAMES[family], max_frames), "max": max_frames},
            normalization=graph.normalization,
            exporter="",
            versions={"torch": torch.__version__},
            accepted=True,
        )
        self._module: Callable[..., Any] | None = graph.module.eval().to(self._device)
        if compile:
            self._module = torch.compile(self._module, dynamic=True)

    def _autocast(self):
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self._autocast_dtype)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._module is None:
            raise RuntimeError("this session is closed")
        prepared, _ = check_feeds(self.artifact, feeds)
        args = [torch.from_numpy(prepared[t.name]).to(self._device, non_blocking=True) for t in self.artifact.inputs]
        with torch.inference_mode(), self._autocast():
            outputs = self._module(*args)
        names = [t.name for t in self.artifact.outputs]
        return {name: t.float().cpu().numpy() for name, t in zip(names, outputs, strict=True)}

    def block_profile(self, feeds: dict[str, np.ndarray]) -> dict[str, float]:
        """Run once and return the seconds spent in the aggregator's frame blocks, global blocks and
        (fast attention) merge plan, plus the whole call's ``total_s`` (VGGT only)."""
        if self._vggt is None:
            raise ValueError("block_profile applies to VGGT models")
        aggregator = self._vggt.aggregator
        aggregator.block_times = times = {}
        try:
            start = time.perf_counter()
            self(feeds)
            times["total_s"] = time.perf_counter() - start
        finally:
            aggregator.block_times = None
        return times

    def close(self) -> None:
        self._module = None
        if self.device == "cuda":
            torch.cuda.empty_cache()
