"""Training runs in a background process that can be watched and stopped (the web app's trainers).

    run = start_training(VGGTTrainConfig(dataset_dir="data/synth", out_dir="runs/v1", preset="vggt_tiny"))
    run.progress()      # {"state": "running", "step": 40, "steps": 200, "loss": 0.81, ...}
    run.metrics()       # every record of out_dir/metrics.jsonl so far (the live loss curve)
    run.stop()          # the trainer saves last.pt after the current step and exits; resume later

The run is a spawned process calling the public trainer (``edgescene.train.vggt.trainer.train`` or
``edgescene.train.dinov3.trainer.train``) with a stop flag it polls after every step, so a stop
never leaves a half-written checkpoint. Its console output goes to ``out_dir/train.log``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from edgescene.train.dinov3.config import DinoTrainConfig
from edgescene.train.vggt.config import VGGTTrainConfig

TrainConfig = VGGTTrainConfig | DinoTrainConfig
LOG_NAME, ERROR_NAME = "train.log", "train_error.txt"


def _kind(config: TrainConfig) -> str:
    if isinstance(config, VGGTTrainConfig):
        return "vggt"
    if isinstance(config, DinoTrainConfig):
        return "dinov3"
    raise TypeError(f"expected a VGGTTrainConfig or DinoTrainConfig, got {type(config).__name__}")


def _child(kind: str, config: TrainConfig, stop, log_path: str) -> None:  # pragma: no cover - runs in the child
    """Entry point of the training process: console to train.log, the trainer with the stop flag."""
    with open(log_path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = log
        try:
            if kind == "vggt":
                from edgescene.train.vggt.trainer import train
            else:
                from edgescene.train.dinov3.trainer import train
            metrics = train(config, should_stop=stop.is_set)
            print(f"training finished: {json.dumps(metrics)}", flush=True)
        except BaseException as exc:
            Path(config.out_dir, ERROR_NAME).write_text(f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
            raise


class TrainingRun:
    """A training process started by :func:`start_training`."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.kind = _kind(config)
        self.out_dir = Path(config.out_dir)
        self.started = time.time()
        ctx = mp.get_context("spawn")  # a clean interpreter: no inherited threads, locks or CUDA state
        self._stop = ctx.Event()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / ERROR_NAME).unlink(missing_ok=True)
        self._process = ctx.Process(
            target=_child,
            args=(self.kind, config, self._stop, str(self.out_dir / LOG_NAME)),
            name=f"edgescene-train-{self.kind}",
            daemon=True,
        )
        self._process.start()

    @property
    def running(self) -> bool:
        return self._process.is_alive()

    @property
    def state(self) -> str:
        """``running``, ``stopping``, ``finished``, ``stopped`` or ``failed``."""
        if self._process.is_alive():
            return "stopping" if self._stop.is_set() else "running"
        if self._process.exitcode != 0 or (self.out_dir / ERROR_NAME).exists():
            return "failed"
        return "stopped" if self._stop.is_set() else "finished"

    def stop(self, timeout_s: float | None = None) -> str:
        """Ask the trainer to save and return after its current step; wait up to ``timeout_s`` (None: don't wait)."""
        self._stop.set()
        if timeout_s is not None:
            self._process.join(timeout_s)
        return self.state

    def kill(self) -> None:
        """End the process now (the last saved checkpoint stays; the current step is lost)."""
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(10)

    def wait(self, timeout_s: float | None = None) -> str:
        self._process.join(timeout_s)
        return self.state

    def metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` so far (step, time, total, ... and validation records)."""
        return read_metrics(self.out_dir)

    def error(self) -> str | None:
        path = self.out_dir / ERROR_NAME
        return path.read_text() if path.exists() else None

    def error_message(self) -> str | None:
        """The failure in one line (``ValueError: ...``), without the traceback that :meth:`error` keeps."""
        text = self.error()
        if text is None:
            return None
        return text.split("\n\n", 1)[0].strip().splitlines()[0] if text.strip() else None

    def log_tail(self, lines: int = 20) -> str:
        path = self.out_dir / LOG_NAME
        if not path.exists():
            return ""
        text = path.read_text(errors="replace").replace("\r", "\n")
        return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])

    def progress(self) -> dict[str, Any]:
        """State, step of the last logged record, total steps, last training loss and elapsed seconds."""
        records = [r for r in self.metrics() if "total" in r]
        last = records[-1] if records else {}
        return {
            "kind": self.kind,
            "state": self.state,
            "step": int(last.get("step", 0)),
            "steps": self.config.steps,
            "loss": last.get("total"),
            "elapsed_s": round(time.time() - self.started, 1),
            "out_dir": str(self.out_dir),
            "checkpoint": str(self.out_dir / "last.pt") if (self.out_dir / "last.pt").exists() else None,
        }


def read_metrics(out_dir: str | Path) -> list[dict[str, Any]]:
    """Parsed ``metrics.jsonl`` of a run folder; a line being written (incomplete) is skipped."""
    path = Path(out_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def start_training(config: TrainConfig) -> TrainingRun:
    """Start ``config``'s trainer in a background process (config validated already by its dataclass)."""
    return TrainingRun(config)


__all__ = ["TrainingRun", "read_metrics", "start_training"]
