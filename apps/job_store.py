"""Where the service keeps its jobs: a small interface and its embedded default, one SQLite file.

:class:`JobStore` is all the job manager needs; :class:`SQLiteJobStore` keeps the records in
``<jobs_dir>/jobs.sqlite3`` (WAL journal, one connection guarded by a lock, every change committed
before the call returns), so the service lists, serves and resumes its jobs after any restart,
``kill -9`` included. Another store (PostgreSQL, Redis) implements the same methods.

A record is a :class:`Job` plus ``model_ref``, the server-side model location the job runs (an
artifact folder, a checkpoint, a Hub id): kept to resume queued jobs, never shown to clients.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Protocol

STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINISHED = ("done", "failed", "cancelled", "interrupted")


@dataclass
class Job:
    id: str
    kind: str  # images | video
    model: str  # the model's name (see /models)
    config: dict
    status: str = "queued"  # queued -> running -> done | failed | cancelled; running -> interrupted (restart)
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


class JobStore(Protocol):
    def add(self, job: Job, model_ref: str) -> None: ...

    def update(self, job_id: str, **changes) -> Job: ...

    def get(self, job_id: str) -> Job | None: ...

    def model_ref(self, job_id: str) -> str | None: ...

    def list(self, status: str | None = None, offset: int = 0, limit: int | None = None) -> list[Job]: ...

    def count(self, status: str) -> int: ...

    def claim_next(self) -> Job | None: ...

    def mark_running_interrupted(self, message: str) -> list[str]: ...

    def delete(self, job_id: str) -> None: ...


_COLUMNS = [f.name for f in fields(Job)]
_JSON = {"config", "outputs"}


class SQLiteJobStore:
    """Jobs in one SQLite file; safe to use from several threads of one process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a committed change survives a power cut too
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, kind TEXT, model TEXT, config TEXT, status TEXT,"
            " progress REAL, frames_seen INTEGER, frames_expected INTEGER, message TEXT, created REAL,"
            " started REAL, finished REAL, outputs TEXT, error TEXT, model_ref TEXT)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS jobs_status_created ON jobs (status, created)")

    def _row(self, row: tuple) -> Job:
        values = dict(zip(_COLUMNS, row, strict=True))
        for key in _JSON:
            values[key] = json.loads(values[key])
        return Job(**values)

    def add(self, job: Job, model_ref: str) -> None:
        record = job.public()
        for key in _JSON:
            record[key] = json.dumps(record[key])
        names = ", ".join([*_COLUMNS, "model_ref"])
        marks = ", ".join("?" for _ in range(len(_COLUMNS) + 1))
        with self._lock:
            self._db.execute(
                f"INSERT INTO jobs ({names}) VALUES ({marks})", [record[c] for c in _COLUMNS] + [model_ref]
            )

    def update(self, job_id: str, **changes) -> Job:
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job fields {sorted(unknown)}")
        if "status" in changes and changes["status"] not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {changes['status']!r}")
        values = [json.dumps(v) if k in _JSON else v for k, v in changes.items()]
        with self._lock:
            if changes:
                assignments = ", ".join(f"{k} = ?" for k in changes)
                self._db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", [*values, job_id])
            row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", [job_id]).fetchone()
        if row is None:
            raise KeyError(job_id)
        return self._row(row)

    def claim_next(self) -> Job | None:
        """The oldest queued job, marked running in the same transaction (one worker gets each job)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1"
                ).fetchone()
                if row is not None:
                    self._db.execute(
                        "UPDATE jobs SET status = 'running', started = ?, message = 'reconstructing' WHERE id = ?",
                        [time.time(), row[0]],
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if row is None:
            return None
        job = self._row(row)
        job.status, job.message = "running", "reconstructing"
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id = ?", [job_id]).fetchone()
        return None if row is None else self._row(row)

    def model_ref(self, job_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT model_ref FROM jobs WHERE id = ?", [job_id]).fetchone()
        return None if row is None else row[0]

    def list(self, status: str | None = None, offset: int = 0, limit: int | None = None) -> list[Job]:
        """Jobs, oldest first, optionally of one status, paged by ``offset`` / ``limit``."""
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        page = " LIMIT ? OFFSET ?" if limit is not None else (" LIMIT -1 OFFSET ?" if offset else "")
        args += [limit, offset] if limit is not None else ([offset] if offset else [])
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM jobs {where} ORDER BY created, id{page}", args
            ).fetchall()
        return [self._row(r) for r in rows]

    def count(self, status: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", [status]).fetchone()[0])

    def mark_running_interrupted(self, message: str) -> list[str]:
        """At start: jobs a previous process left running are ``interrupted``; returns their ids."""
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE status = 'running'").fetchall()]
            self._db.execute(
                "UPDATE jobs SET status = 'interrupted', finished = ?, message = ? WHERE status = 'running'",
                [time.time(), message],
            )
        return ids

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", [job_id])

    def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = ["FINISHED", "STATUSES", "Job", "JobStore", "SQLiteJobStore"]
