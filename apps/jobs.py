"""Reconstruction jobs for the service: a durable store, a bounded queue, worker threads, one folder a job.

    jobs = JobManager(Path("jobs"), queue_size=4, workers=1)
    job = jobs.submit(job_id, "video", "vggt_small_synthetic", model_path, ReconstructConfig(every_s=0.5))
    jobs.get(job.id).status       # queued -> running -> done | failed | cancelled (interrupted: see below)

Each job owns ``jobs_dir/<id>/``: ``input/`` (the uploads) and ``output/`` (what
:func:`edgescene.runtime.reconstruct.reconstruct_to_folder` writes: scene.glb, points.ply,
cameras.json, trajectory.tum, depth/*.npz, report.json). The records live in a
:class:`~edgescene.apps.job_store.JobStore` (by default SQLite, ``jobs_dir/jobs.sqlite3``): every
state change is committed before it is reported, so after a restart (``kill -9`` included)

- finished jobs are listed and their outputs served;
- jobs the previous process left running are ``interrupted`` (``retry`` queues them again), and
  their partial output staging folders are removed;
- queued jobs run.

The queue holds at most ``queue_size`` *queued* jobs (a cancelled one frees its slot at once).
:meth:`JobManager.shutdown` stops taking jobs, lets running ones finish within a grace period and
marks the rest interrupted. :class:`Retention` bounds what finished jobs keep on disk (count,
age, total size; the oldest go first). Workers are threads: onnxruntime and torch release the GIL
while the model runs, so the API stays responsive.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from edgescene.apps.job_store import FINISHED, Job, JobStore, SQLiteJobStore
from edgescene.apps.memory import release_memory
from edgescene.apps.uploads import client_name
from edgescene.runtime.outputs import redact_paths
from edgescene.runtime.progress import Progress
from edgescene.runtime.reconstruct import ReconstructConfig, metric_note, model_notes, reconstruct_to_folder

log = logging.getLogger(__name__)

# how a client of the service reaches VGGT-1B (the demo model's note), in the API's words
SERVICE_REAL_MODEL = (
    "for real footage use VGGT-1B: send model=<its name> as GET /models lists it (the server's operator "
    "offers it with serve --vggt VGGT-1B=facebook/VGGT-1B)"
)
INTERRUPTED = "the server stopped while this job ran; POST /jobs/{id}/retry runs it again"


class QueueFull(RuntimeError):
    """Every queue slot is taken; the client should retry later (HTTP 429)."""


class JobCancelled(Exception):
    pass


@dataclass(frozen=True)
class Retention:
    """How much finished jobs may keep. Results (``done`` jobs): at most ``keep_jobs``; the others
    (failed, cancelled, interrupted, lost) have their own, smaller bound, ``keep_failed`` (None: the
    smaller of ``keep_jobs`` and 10), so junk uploads never push out good results. None of either
    older than ``keep_days``; all job folders together under ``max_disk_gb`` (unsuccessful jobs go
    before results). None: no bound. The oldest go first."""

    keep_jobs: int | None = None
    keep_days: float | None = None
    max_disk_gb: float | None = None
    keep_failed: int | None = None

    def __post_init__(self) -> None:
        for name in ("keep_jobs", "keep_failed"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name in ("keep_days", "max_disk_gb"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")

    @property
    def failed_bound(self) -> int | None:
        """The most unsuccessful jobs kept (``keep_failed``, else the smaller of ``keep_jobs`` and 10)."""
        if self.keep_failed is not None:
            return self.keep_failed
        return None if self.keep_jobs is None else min(self.keep_jobs, 10)

    @property
    def bounded(self) -> bool:
        return any(v is not None for v in (self.keep_jobs, self.keep_days, self.max_disk_gb, self.keep_failed))


def new_job_id() -> str:
    return uuid.uuid4().hex


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


class JobManager:
    """Runs :func:`reconstruct_to_folder` jobs from a durable bounded queue on ``workers`` threads."""

    def __init__(
        self,
        jobs_dir: Path,
        queue_size: int = 4,
        workers: int = 1,
        retention: Retention = Retention(),
        store: JobStore | None = None,
        max_frames: int | None = None,
        rebuild_index: bool = False,
    ) -> None:
        if queue_size < 1 or workers < 1:
            raise ValueError(f"queue_size and workers must be >= 1, got {queue_size} and {workers}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
        self.max_frames = max_frames  # the most frames a job decodes, whatever it asked (a hard stop)
        self.jobs_dir = Path(jobs_dir)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.queue_size = queue_size
        self.retention = retention
        self.store = (
            store
            if store is not None
            else SQLiteJobStore(self.jobs_dir / "jobs.sqlite3", folders=self.jobs_dir, rebuild=rebuild_index)
        )
        # the index and the job folders made to agree: what was re-indexed, lost, orphaned (see /health)
        self.index_report = self.store.reconcile()
        self._wake = threading.Condition()
        self._cancel: set[str] = set()
        self._live: dict[str, dict] = {}  # running jobs' progress, kept in memory (not a state change)
        self._stopping = False
        for job_id in self.store.mark_running_interrupted(INTERRUPTED):
            log.warning("job %s was running when the server stopped: marked interrupted", job_id)
        self._remove_staging()
        self.prune()
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

    def _remove_staging(self) -> None:
        """Partial outputs of interrupted runs (the hidden staging folders the runtime writes into)."""
        for staging in self.jobs_dir.glob("*/.output.staging-*"):
            shutil.rmtree(staging, ignore_errors=True)
            log.info("removed the partial outputs %s", staging.relative_to(self.jobs_dir))

    # -- API -----------------------------------------------------------------------------------
    def has_room(self) -> bool:
        return not self._stopping and self.store.count("queued") < self.queue_size

    def submit(self, job_id: str, kind: str, model: str, model_ref: str | Path, config: ReconstructConfig) -> Job:
        """Queue a job whose inputs are already in ``input_dir(job_id)``; :class:`QueueFull` if no slot.

        ``model`` is the name clients see; ``model_ref`` what runs it (never shown to them).
        """
        job = Job(id=job_id, kind=kind, model=model, config=asdict(config))
        with self._wake:
            if self._stopping:
                raise QueueFull("the server is shutting down; retry in a moment")
            if not self.has_room():
                raise QueueFull(f"{self.queue_size} jobs are already waiting; retry when one has finished")
            self.store.add(job, str(model_ref))
            self._wake.notify()
        return job

    def get(self, job_id: str) -> Job | None:
        job = self.store.get(job_id)
        if job is not None and job.id in self._live:
            for key, value in self._live[job.id].items():
                setattr(job, key, value)
        return job

    def list(self, status: str | None = None, offset: int = 0, limit: int | None = None) -> list[Job]:
        jobs = self.store.list(status, offset, limit)
        for job in jobs:
            for key, value in self._live.get(job.id, {}).items():
                setattr(job, key, value)
        return jobs

    def cancel(self, job_id: str) -> Job | None:
        """A queued job is cancelled at once (its slot is free); a running one stops at its next frame."""
        with self._wake:
            job = self.store.get(job_id)
            if job is None:
                return None
            if job.status == "queued":
                return self.store.update(
                    job_id, status="cancelled", message="cancelled before it started", finished=time.time()
                )
            if job.status == "running":
                self._cancel.add(job_id)
            return self.get(job_id)

    def delete(self, job_id: str) -> bool:
        """Remove a finished job's files and record; False if it is queued or running (cancel it first)."""
        job = self.store.get(job_id)
        if job is None:
            raise KeyError(job_id)
        if job.status not in FINISHED:
            return False
        shutil.rmtree(self.folder(job_id), ignore_errors=True)
        self.store.delete(job_id)
        return True

    def retry(self, job_id: str) -> Job:
        """Queue an interrupted, failed or cancelled job again (its inputs are still on disk)."""
        with self._wake:
            job = self.store.get(job_id)
            if job is None:
                raise KeyError(job_id)
            if job.status not in ("interrupted", "failed", "cancelled"):
                raise ValueError(
                    f"job {job_id} is {job.status}; only interrupted, failed or cancelled jobs are retried"
                )
            if not self.input_dir(job_id).is_dir():
                raise ValueError(f"job {job_id} has no inputs left (retention removed them); submit it again")
            if not self.has_room():
                raise QueueFull(f"{self.queue_size} jobs are already waiting; retry when one has finished")
            shutil.rmtree(self.output_dir(job_id), ignore_errors=True)
            job = self.store.update(
                job_id,
                status="queued",
                progress=0.0,
                frames_seen=0,
                frames_expected=None,
                started=None,
                finished=None,
                outputs=[],
                error=None,
                message="waiting in the queue (retried)",
            )
            self._wake.notify()
            return job

    def wait(self, job_id: str, timeout_s: float = 60.0) -> Job | None:
        """Block until the job is finished (tests, scripts)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            job = self.get(job_id)
            if job is None or job.status in FINISHED:
                return job
            time.sleep(0.05)
        raise TimeoutError(f"job {job_id} still running after {timeout_s} s")

    def shutdown(self, grace_s: float = 30.0) -> None:
        """Take no more jobs; running ones get ``grace_s`` seconds to finish, then stop and are marked
        interrupted (queued ones stay queued and run after the next start)."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        end = time.monotonic() + grace_s
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        still = [j.id for j in self.store.list("running")]
        for job_id in still:
            self._cancel.add(job_id)
        for t in self._threads:
            t.join(5.0)
        for job_id in still:
            self.store.update(job_id, status="interrupted", finished=time.time(), message=INTERRUPTED)
        self.store.checkpoint()  # the database file alone holds every record

    # -- retention ---------------------------------------------------------------------------
    def prune(self) -> list[str]:
        """Delete the oldest finished jobs past the retention bounds (:class:`Retention`); returns their ids."""
        r = self.retention
        if not r.bounded:
            return []
        finished = [j for j in self.store.list() if j.status in FINISHED]  # oldest first
        doomed: list[Job] = []
        if r.keep_days is not None:
            cutoff = time.time() - r.keep_days * 86400
            doomed += [j for j in finished if (j.finished or j.created) < cutoff]
        results = [j for j in finished if j not in doomed and j.status == "done"]
        others = [j for j in finished if j not in doomed and j.status != "done"]
        for group, bound in ((results, r.keep_jobs), (others, r.failed_bound)):
            if bound is not None and len(group) > bound:
                doomed += group[: len(group) - bound]
                del group[: len(group) - bound]
        if r.max_disk_gb is not None:
            limit = r.max_disk_gb * 2**30
            left = others + results  # unsuccessful jobs go first, then the oldest results
            sizes = {j.id: _folder_bytes(self.folder(j.id)) for j in left}
            total = sum(_folder_bytes(p) for p in self.jobs_dir.iterdir() if p.is_dir())
            for job in left:
                if total <= limit:
                    break
                doomed.append(job)
                total -= sizes[job.id]
        for job in doomed:
            self.delete(job.id)
        if doomed:
            log.info("retention removed %d finished job(s)", len(doomed))
        return [j.id for j in doomed]

    # -- worker ----------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and (job := self.store.claim_next()) is None:
                    self._wake.wait(timeout=1.0)
                if self._stopping:
                    return
            self._run(job)
            self.prune()

    def _run(self, job: Job) -> None:
        inputs = sorted(p for p in self.input_dir(job.id).iterdir() if p.is_file())
        source = inputs[0] if job.kind == "video" else inputs
        live = self._live.setdefault(job.id, {})

        def on_progress(p: Progress) -> None:
            if job.id in self._cancel:
                raise JobCancelled
            live.update(
                frames_seen=p.frames_seen,
                frames_expected=p.frames_expected,
                progress=round(min(p.fraction or 0.0, 0.99), 4),  # 1.0 when the job is recorded done
                message=p.message(),
                stage=p.stage,
                eta_s=round(p.eta_s, 1) if p.eta_s is not None else None,
            )

        try:
            model_ref = self.store.model_ref(job.id)
            config = ReconstructConfig(**job.config)
            budget = self.max_frames
            capped = budget is not None and (config.max_frames is None or config.max_frames > budget)
            if capped:  # a video whose header did not say how long it is: stopped at the budget
                config = replace(config, max_frames=budget)
            solver = None
            if config.loop_closure:
                from edgescene.mapping.pose_graph import solve as solver
            report = reconstruct_to_folder(
                source,
                model_ref,
                self.output_dir(job.id),
                config,
                progress=False,
                on_progress=on_progress,
                hide_paths=True,
                solver=solver,
            )
            outputs = sorted(
                str(p.relative_to(self.output_dir(job.id))) for p in self.output_dir(job.id).rglob("*") if p.is_file()
            )
            notes = [
                f"{report['keyframes']} keyframes, {report['points']} points",
                *model_notes(report["model"], SERVICE_REAL_MODEL),
            ]
            if report.get("metric") is not None:  # where the outputs' metres came from, in the job's one line
                notes.append(metric_note(report["metric"]))
            if capped and report["frames_seen"] >= budget:
                notes.append(f"stopped at the server's limit of {budget} frames: sample the video with every_s")
            message = "; ".join(notes)
            self.store.update(
                job.id,
                status="done",
                progress=1.0,
                finished=time.time(),
                outputs=outputs,
                message=message,
                frames_seen=live.get("frames_seen", 0),
                frames_expected=live.get("frames_expected"),
            )
        except JobCancelled:
            stopped = "interrupted" if self._stopping else "cancelled"
            self.store.update(
                job.id,
                status=stopped,
                finished=time.time(),
                message=INTERRUPTED if self._stopping else "cancelled while running",
            )
        except Exception as exc:
            log.exception("job %s failed", job.id)
            error = redact_paths(f"{type(exc).__name__}: {exc}")  # the client's file names, never our folders
            for path in inputs:  # "0000_clip.mp4" as saved -> "clip.mp4" as sent
                error = error.replace(path.name, client_name(path))
            self.store.update(job.id, status="failed", finished=time.time(), error=error, message="failed")
        finally:
            self._live.pop(job.id, None)
            self._cancel.discard(job.id)
            release_memory()  # the job's frames, model buffers and map, back to the system


__all__ = ["INTERRUPTED", "Job", "JobCancelled", "JobManager", "QueueFull", "Retention", "new_job_id"]
