"""Where the service keeps its jobs: a small interface and its embedded default, one SQLite file
indexing a record in each job's folder.

:class:`JobStore` is all the job manager needs; :class:`SQLiteJobStore` keeps the records in
``<jobs_dir>/jobs.sqlite3`` (WAL journal, ``synchronous=FULL``, one connection guarded by a lock,
every change committed before the call returns), so the service lists, serves and resumes its jobs
after any restart, ``kill -9`` included. Another store (PostgreSQL, Redis) implements the same methods.

The database is an index, not the only copy. With ``folders`` (the jobs folder), every change is also
written, atomically, to the job's own ``<folders>/<id>/job.json``, so what disks and operators do to
the one file cannot lose the jobs:

- :meth:`SQLiteJobStore.reconcile` (at start-up) re-indexes a folder whose job has no row (a lost
  WAL, a database truncated or replaced), marks a row whose folder is gone ``lost``, and counts the
  folders that are neither (orphans, left alone);
- a database SQLite cannot read is moved aside (``jobs.sqlite3.corrupt-<time>``, never deleted) and
  rebuilt from the folders, with a warning; ``rebuild=True`` (``edgescene serve --rebuild-index``)
  does the same on purpose;
- :meth:`SQLiteJobStore.close` checkpoints the WAL into the database file (a graceful stop leaves one
  self-contained file).

A record is a :class:`Job` plus ``model_ref``, the server-side model location the job runs (an
artifact folder, a checkpoint, a Hub id): kept to resume queued jobs, never shown to clients (the
job.json beside the inputs is never served: downloads come from the job's output folder only).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Protocol

from edgescene.core.atomic import atomic_write_text
from edgescene.runtime.outputs import redact_paths

log = logging.getLogger(__name__)

# lost: the index had the job, but its folder (inputs, outputs, record) is gone
STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted", "lost")
FINISHED = ("done", "failed", "cancelled", "interrupted", "lost")
RECORD = "job.json"  # each job folder's own record
LOST = "lost: its folder was removed outside the server; submit the job again"


@dataclass
class Job:
    id: str
    kind: str  # images | video
    model: str  # the model's name (see /models)
    config: dict
    status: str = "queued"  # queued -> running -> done | failed | cancelled; running -> interrupted (restart)
    progress: float = 0.0  # 0..1 of the run (edgescene.runtime.progress): 1.0 once the outputs are written
    frames_seen: int = 0
    frames_expected: int | None = None
    message: str = "waiting in the queue"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    # a running job's stage (edgescene.runtime.progress.STAGES) and seconds left: kept in memory only
    stage: str | None = field(default=None, metadata={"live": True})
    eta_s: float | None = field(default=None, metadata={"live": True})

    def public(self) -> dict:
        return asdict(self)

    def for_client(self) -> dict:
        """What a client sees: the job, the server's paths in its options reduced to file names."""
        return redact_paths(self.public())


class JobStore(Protocol):
    def add(self, job: Job, model_ref: str) -> None: ...

    def update(self, job_id: str, **changes) -> Job: ...

    def get(self, job_id: str) -> Job | None: ...

    def model_ref(self, job_id: str) -> str | None: ...

    def list(self, status: str | None = None, offset: int = 0, limit: int | None = None) -> list[Job]: ...

    def count(self, status: str | None = None) -> int: ...

    def claim_next(self) -> Job | None: ...

    def mark_running_interrupted(self, message: str) -> list[str]: ...

    def delete(self, job_id: str) -> None: ...

    def reconcile(self) -> Reconciliation: ...

    def checkpoint(self) -> None: ...


_COLUMNS = [f.name for f in fields(Job) if not f.metadata.get("live")]  # what the index stores
_JSON = {"config", "outputs"}


class JobIndexError(RuntimeError):
    """The job index cannot be opened or rebuilt; the message names the file and what to do."""


@dataclass
class Reconciliation:
    """What :meth:`SQLiteJobStore.reconcile` found: job ids re-indexed from their folders, rows marked
    lost (their folder is gone), and orphans (folder names with neither a row nor a readable record)."""

    reindexed: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    rebuilt_from: str | None = None  # the unreadable database moved aside, when the index was rebuilt

    def summary(self) -> dict:
        return {
            "reindexed": len(self.reindexed),
            "lost": len(self.lost),
            "orphans": len(self.orphans),
            "rebuilt": self.rebuilt_from is not None,
        }


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, kind TEXT, model TEXT, config TEXT, status TEXT,"
    " progress REAL, frames_seen INTEGER, frames_expected INTEGER, message TEXT, created REAL,"
    " started REAL, finished REAL, outputs TEXT, error TEXT, model_ref TEXT)"
)


class SQLiteJobStore:
    """Jobs in one SQLite file, each also in its folder's job.json when ``folders`` is given; safe to
    use from several threads of one process.

    ``rebuild=True`` moves the database aside and rebuilds it from the folders' records. A database
    that cannot be read is handled the same way, with a warning (needs ``folders``; without them it
    is a :class:`JobIndexError` naming the file)."""

    def __init__(self, path: str | Path, folders: str | Path | None = None, rebuild: bool = False) -> None:
        self.path = Path(path)
        self.folders = None if folders is None else Path(folders)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.rebuilt_from: str | None = None
        try:
            if rebuild:
                self._set_aside("rebuilt on request (--rebuild-index)")
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            if self.folders is None:
                raise JobIndexError(
                    f"the job index {self.path} cannot be read ({exc}); move it aside to start with an empty one"
                ) from exc
            try:
                self._set_aside(f"cannot be read ({exc})")
                self._db = self._connect()
            except (OSError, sqlite3.Error) as again:
                raise JobIndexError(
                    f"the job index {self.path} cannot be read ({exc}) and could not be rebuilt ({again}); "
                    "make its folder writable, then start the server with --rebuild-index"
                ) from again
        except OSError as exc:  # moving it aside failed (permissions)
            raise JobIndexError(
                f"the job index {self.path} could not be moved aside to rebuild it ({exc}); make its folder "
                "writable, then start the server with --rebuild-index"
            ) from exc

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a committed change survives a power cut too
            db.execute(_SCHEMA)
            db.execute("CREATE INDEX IF NOT EXISTS jobs_status_created ON jobs (status, created)")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check}")
        except BaseException:
            db.close()
            raise
        return db

    def _set_aside(self, why: str) -> None:
        """Move the database (and its WAL / shared memory) to ``<name>.corrupt-<time>``: kept, never deleted."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():  # never over an earlier one
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        moved = False
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                os.replace(source, f"{aside}{suffix}")
                moved = moved or suffix == ""
        if moved:
            self.rebuilt_from = aside.name
            log.warning("job index %s %s: moved to %s and rebuilt from the job folders", self.path, why, aside.name)

    # -- each job's own record
    def _record_path(self, job_id: str) -> Path | None:
        return None if self.folders is None else self.folders / job_id / RECORD

    def _write_record(self, job: Job, model_ref: str | None) -> None:
        path = self._record_path(job.id)
        if path is None or not path.parent.is_dir():  # a folder removed meanwhile: reconcile marks it lost
            return
        atomic_write_text(path, json.dumps({**job.public(), "model_ref": model_ref}, indent=1) + "\n")

    @staticmethod
    def _read_record(path: Path) -> tuple[Job, str | None] | None:
        """The record in ``path``, or None when it is missing or unreadable."""
        try:
            values = json.loads(path.read_text())
            model_ref = values.pop("model_ref", None)
            job = Job(**{k: v for k, v in values.items() if k in _COLUMNS})
        except (OSError, ValueError, TypeError):
            return None
        if job.status not in STATUSES or job.id != path.parent.name:
            return None
        return job, model_ref

    def reconcile(self) -> Reconciliation:
        """Make the index and the job folders agree (see the module docstring); logs what it did."""
        found = Reconciliation(rebuilt_from=self.rebuilt_from)
        if self.folders is None:
            return found
        folders = {p.name: p for p in self.folders.iterdir() if p.is_dir() and not p.name.startswith(".")}
        with self._lock:
            rows = {r[0]: r[1] for r in self._db.execute("SELECT id, model_ref FROM jobs").fetchall()}
        for name in sorted(folders):
            if name in rows:
                if not (folders[name] / RECORD).exists():  # a folder of an older server: give it its record
                    job = self.get(name)
                    if job is not None:
                        self._write_record(job, rows[name])
                continue
            record = self._read_record(folders[name] / RECORD)
            if record is None:
                found.orphans.append(name)
                continue
            job, model_ref = record
            self._insert(job, model_ref)
            found.reindexed.append(name)
        for job_id in sorted(set(rows) - set(folders)):
            job = self.get(job_id)
            if job is not None and job.status != "lost":
                self.update(job_id, status="lost", message=LOST, finished=job.finished or time.time())
                found.lost.append(job_id)
        if found.reindexed:
            log.warning("job index: %d job(s) re-indexed from their folders' %s", len(found.reindexed), RECORD)
        if found.lost:
            log.warning("job index: %d job(s) marked lost (their folders are gone): %s", len(found.lost), found.lost)
        if found.orphans:
            log.warning(
                "job index: %d folder(s) in %s are no job's (no readable %s), left as they are: %s",
                len(found.orphans), self.folders, RECORD, found.orphans[:10],
            )  # fmt: skip
        return found

    def _row(self, row: tuple) -> Job:
        values = dict(zip(_COLUMNS, row, strict=True))
        for key in _JSON:
            values[key] = json.loads(values[key])
        return Job(**values)

    def add(self, job: Job, model_ref: str) -> None:
        self._insert(job, model_ref)
        self._write_record(job, model_ref)

    def _insert(self, job: Job, model_ref: str | None) -> None:
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
            row = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)}, model_ref FROM jobs WHERE id = ?", [job_id]
            ).fetchone()
            if row is None:
                raise KeyError(job_id)
            job = self._row(row[:-1])
            if changes:  # under the lock: two threads' changes reach job.json in the order they were committed
                self._write_record(job, row[-1])
        return job

    def claim_next(self) -> Job | None:
        """The oldest queued job, marked running in the same transaction (one worker gets each job)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    f"SELECT {', '.join(_COLUMNS)}, model_ref FROM jobs"
                    " WHERE status = 'queued' ORDER BY created LIMIT 1"
                ).fetchone()
                started = time.time()
                if row is not None:
                    self._db.execute(
                        "UPDATE jobs SET status = 'running', started = ?, message = 'reconstructing' WHERE id = ?",
                        [started, row[0]],
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if row is None:
                return None
            job = self._row(row[:-1])
            job.status, job.message, job.started = "running", "reconstructing", started
            self._write_record(job, row[-1])
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

    def count(self, status: str | None = None) -> int:
        """Jobs of ``status`` (None: all of them)."""
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0])

    def mark_running_interrupted(self, message: str) -> list[str]:
        """At start: jobs a previous process left running are ``interrupted``; returns their ids."""
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE status = 'running'").fetchall()]
        for job_id in ids:
            self.update(job_id, status="interrupted", finished=time.time(), message=message)
        return ids

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", [job_id])

    def checkpoint(self) -> None:
        """Copy the WAL into the database file and empty it: the file alone holds every record."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Checkpoint, then close (a graceful stop)."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()


__all__ = [
    "FINISHED", "LOST", "RECORD", "STATUSES", "Job", "JobIndexError", "JobStore", "Reconciliation", "SQLiteJobStore",
]  # fmt: skip
