"""Reconstruction jobs for the service: a bounded queue, worker threads, one folder per job.

    jobs = JobManager(Path("jobs"), queue_size=4, workers=1)
    job = jobs.submit(job_id, "video", model_path, ReconstructConfig(every_s=0.5))   # QueueFull when busy
    jobs.get(job.id).status       # queued -> running -> done | failed | cancelled

Each job owns ``jobs_dir/<id>/``: ``input/`` (the uploads), ``output/`` (what
:func:`edgescene.runtime.reconstruct.reconstruct_to_folder` writes: scene.glb, points.ply,
cameras.json, trajectory.tum, depth/*.npz, report.json) and ``job.json`` (its record). Workers are
threads: onnxruntime releases the GIL while the model runs, so the API stays responsive.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgescene.runtime.reconstruct import ReconstructConfig, reconstruct_to_folder

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """Every queue slot is taken; the client should retry later (HTTP 429)."""


class JobCancelled(Exception):
    pass


@dataclass
class Job:
    id: str
    kind: str  # images | video
    model: str  # the model's name (see /models)
    config: dict
    status: str = "queued"  # queued -> running -> done | failed | cancelled
    progress: float = 0.0  # 0..1 of the expected input frames
    frames_seen: int = 0
    frames_expected: int | None = None
    message: str = "waiting in the queue"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    outputs: list[str] = field(default_factory=list)
    error: str | None = None

    def public(self) -> dict:
        return asdict(self)


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobManager:
    """Runs :func:`reconstruct_to_folder` jobs from a bounded queue on ``workers`` threads."""

    def __init__(self, jobs_dir: Path, queue_size: int = 4, workers: int = 1) -> None:
        if queue_size < 1 or workers < 1:
            raise ValueError(f"queue_size and workers must be >= 1, got {queue_size} and {workers}")
        self.jobs_dir = Path(jobs_dir)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=queue_size)
        self._jobs: dict[str, Job] = {}
        self._configs: dict[str, tuple[Path, ReconstructConfig]] = {}  # model folder, options: jobs not yet started
        self._cancel: set[str] = set()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"edgescene-job-{i}", daemon=True) for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    # -- folders -----------------------------------------------------------------------------
    def folder(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def input_dir(self, job_id: str) -> Path:
        return self.folder(job_id) / "input"

    def output_dir(self, job_id: str) -> Path:
        return self.folder(job_id) / "output"

    # -- API -----------------------------------------------------------------------------------
    def has_room(self) -> bool:
        return not self._queue.full()

    def submit(self, job_id: str, kind: str, model: str, model_path: Path, config: ReconstructConfig) -> Job:
        """Queue a job whose inputs are already in ``input_dir(job_id)``; :class:`QueueFull` if no slot.

        ``model`` is the name clients see; ``model_path`` the artifact folder (never shown to them).
        """
        job = Job(id=job_id, kind=kind, model=model, config=asdict(config))
        with self._lock:
            self._jobs[job_id], self._configs[job_id] = job, (Path(model_path), config)
            self._save(job)
            try:
                self._queue.put_nowait(job_id)
            except queue.Full:
                del self._jobs[job_id], self._configs[job_id]
                raise QueueFull(
                    f"{self._queue.maxsize} jobs are already waiting; retry when one has finished"
                ) from None
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def cancel(self, job_id: str) -> Job | None:
        """A queued job is dropped when a worker reaches it; a running one stops at its next frame."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.status in ("queued", "running"):
                self._cancel.add(job_id)
                if job.status == "queued":
                    job.status, job.message, job.finished = "cancelled", "cancelled before it started", time.time()
                    self._save(job)
            return job

    def wait(self, job_id: str, timeout_s: float = 60.0) -> Job:
        """Block until the job is done, failed or cancelled (tests, scripts)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            job = self.get(job_id)
            if job is None or job.status in ("done", "failed", "cancelled"):
                return job
            time.sleep(0.05)
        raise TimeoutError(f"job {job_id} still {self.get(job_id).status} after {timeout_s} s")

    def shutdown(self) -> None:
        for _ in self._threads:
            with contextlib.suppress(queue.Full):  # a full queue: the worker stops after its current job
                self._queue.put_nowait(None)

    # -- worker ----------------------------------------------------------------------------------
    def _save(self, job: Job) -> None:
        folder = self.folder(job.id)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "job.json.tmp"
        tmp.write_text(json.dumps(job.public(), indent=1))
        tmp.replace(folder / "job.json")

    def _update(self, job: Job, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(job, key, value)
            self._save(job)

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            job = self.get(job_id)
            if job is None or job_id in self._cancel:
                self._configs.pop(job_id, None)
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        self._update(job, status="running", started=time.time(), message="reconstructing")
        inputs = sorted(p for p in self.input_dir(job.id).iterdir() if p.is_file())
        source = inputs[0] if job.kind == "video" else inputs

        def on_frame(seen: int, expected: int | None) -> None:
            if job.id in self._cancel:
                raise JobCancelled
            progress = min(seen / expected, 0.99) if expected else 0.0
            with self._lock:
                job.frames_seen, job.frames_expected, job.progress = seen, expected, round(progress, 4)
                job.message = f"frame {seen}" + (f" of {expected}" if expected else "")

        try:
            model_path, config = self._configs.pop(job.id)
            report = reconstruct_to_folder(
                source, model_path, self.output_dir(job.id), config, progress=False, on_frame=on_frame
            )
            outputs = sorted(
                str(p.relative_to(self.output_dir(job.id))) for p in self.output_dir(job.id).rglob("*") if p.is_file()
            )
            self._update(
                job,
                status="done",
                progress=1.0,
                finished=time.time(),
                outputs=outputs,
                message="; ".join(
                    [f"{report['keyframes']} keyframes, {report['points']} points", *report.get("model_notes", [])]
                ),
            )
        except JobCancelled:
            self._update(job, status="cancelled", finished=time.time(), message="cancelled while running")
        except Exception as exc:
            log.exception("job %s failed", job.id)
            self._update(
                job, status="failed", finished=time.time(), error=f"{type(exc).__name__}: {exc}", message="failed"
            )


__all__ = ["Job", "JobCancelled", "JobManager", "QueueFull", "new_job_id"]
