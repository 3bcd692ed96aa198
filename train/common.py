"""What every trainer shares: distributed set-up, seeding, schedules, checkpoints and metric logs.

Checkpoint format (``edgescene.checkpoint`` version 1), one ``.pt`` file read with
``torch.load(weights_only=True)`` (tensors, numbers, strings, lists, dicts only)::

    {
      "format": "edgescene.checkpoint", "version": 1,
      "kind": "dinov3" | "vggt", "preset": "<preset name>",
      "config": {...},             # the trainer's config, as a dict
      "step": int,                  # optimizer steps done
      "model": {...},               # the model to deploy, in the OFFICIAL key layout: a DINOv3
                                    # backbone (the EMA teacher's) or a VGGT; edgescene.models'
                                    # loaders, export and the runtime read this entry
      "train_state": {...},         # everything resume needs (optimizer, student, heads, RNG)
      "metrics": {...}              # the last logged metrics
    }

Distributed training follows torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK): NCCL on GPUs,
gloo on CPU (how the tests run two processes).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from edgescene.core.atomic import atomic_write

CHECKPOINT_FORMAT = "edgescene.checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but no CUDA device is visible")
    dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world_size, local_rank, dev)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int, rank: int = 0) -> torch.Generator:
    """Seed Python and torch (per rank) and make CPU runs deterministic; returns a generator."""
    random.seed(seed + rank)
    torch.manual_seed(seed + rank)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed + rank)


def cosine_schedule(
    start: float, end: float, step: int, total: int, warmup: int = 0, warmup_start: float = 0.0
) -> float:
    """Linear warm-up from ``warmup_start`` to ``start`` over ``warmup`` steps, then cosine to ``end``."""
    if step < warmup:
        return warmup_start + (start - warmup_start) * step / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the hardware supports it, fp16 on older GPUs, none (fp32) on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def save_checkpoint(
    path: str | Path,
    kind: str,
    preset: str,
    config: dict,
    step: int,
    model: dict,
    train_state: dict,
    metrics: dict | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "kind": kind,
        "preset": preset,
        "config": config,
        "step": step,
        "model": model,
        "train_state": train_state,
        "metrics": metrics or {},
    }
    with atomic_write(path) as f:
        torch.save(payload, f)
    return path


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; checks format, version and kind."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an edgescene training checkpoint (use --init for released weights)")
    if data.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {data.get('version')} is not supported")
    if kind is not None and data.get("kind") != kind:
        raise ValueError(f"{path}: a {data.get('kind')} checkpoint, not {kind}")
    return data


class MetricsLogger:
    """Appends one JSON object per logged step to ``metrics.jsonl``; mirrors to TensorBoard if installed."""

    def __init__(self, out_dir: str | Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))
            except Exception:  # noqa: BLE001 - tensorboard is optional
                self._tb = None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3), **{k: float(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, float(value), step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
