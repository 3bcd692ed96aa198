"""The job index and each job folder's own record: what a lost WAL, a truncated or corrupt database,
a removed folder or a stray one leave after a restart."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys

import pytest

from edgescene.apps.job_store import LOST, RECORD, Job, JobIndexError, SQLiteJobStore


def _job(root, job_id: str, **fields) -> Job:
    (root / job_id / "input").mkdir(parents=True)
    return Job(id=job_id, kind="video", model="bundled", config={"window": 4}, **fields)


def _store(root) -> SQLiteJobStore:
    return SQLiteJobStore(root / "jobs.sqlite3", folders=root)


def test_every_change_is_also_in_the_job_folder_record(tmp_path):
    store = _store(tmp_path)
    store.add(_job(tmp_path, "a1"), "/models/vggt")
    record = json.loads((tmp_path / "a1" / RECORD).read_text())
    assert record["status"] == "queued" and record["model_ref"] == "/models/vggt" and record["config"] == {"window": 4}
    assert store.claim_next().id == "a1"
    assert json.loads((tmp_path / "a1" / RECORD).read_text())["status"] == "running"
    store.update("a1", status="done", outputs=["points.ply"], message="8 keyframes")
    record = json.loads((tmp_path / "a1" / RECORD).read_text())
    assert (record["status"], record["outputs"], record["message"]) == ("done", ["points.ply"], "8 keyframes")
    assert store.mark_running_interrupted("x") == []
    store.close()


def _fill(root) -> None:
    store = _store(root)
    for i, status in enumerate(("done", "failed", "queued")):
        store.add(_job(root, f"job{i}", created=1000.0 + i), f"ref{i}")
        store.update(f"job{i}", status=status, message=f"m{i}")
    store.close()


def _states(store: SQLiteJobStore) -> list[tuple]:
    return [(j.id, j.status, j.message, store.model_ref(j.id)) for j in store.list()]


EXPECTED = [("job0", "done", "m0", "ref0"), ("job1", "failed", "m1", "ref1"), ("job2", "queued", "m2", "ref2")]


def test_a_truncated_database_is_rebuilt_from_the_folders(tmp_path):
    _fill(tmp_path)
    (tmp_path / "jobs.sqlite3").write_bytes(b"")  # truncated to 0 bytes: SQLite opens it as a new, empty index
    store = _store(tmp_path)
    assert store.list() == []
    found = store.reconcile()
    assert found.reindexed == ["job0", "job1", "job2"] and not found.lost and not found.orphans
    assert _states(store) == EXPECTED


def test_a_lost_wal_after_a_kill_is_rebuilt_from_the_folders(tmp_path):
    """A process killed before any checkpoint has its records in the WAL only; the WAL is then lost."""
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, {tests!r});"
        "from test_job_store import _job; from edgescene.apps.job_store import SQLiteJobStore;"
        "root = Path({root!r}); s = SQLiteJobStore(root / 'jobs.sqlite3', folders=root);"
        "[s.add(_job(root, f'job{{i}}', created=1000.0 + i), f'ref{{i}}') for i in range(3)];"
        "[s.update(f'job{{i}}', status=st, message=f'm{{i}}') for i, st in enumerate(('done', 'failed', 'queued'))];"
        "import os; os._exit(0)"  # no close, no checkpoint: what kill -9 leaves
    ).format(tests=str(__import__("pathlib").Path(__file__).parent), root=str(tmp_path))
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "jobs.sqlite3-wal").stat().st_size > 0
    (tmp_path / "jobs.sqlite3-wal").unlink()
    (tmp_path / "jobs.sqlite3-shm").unlink(missing_ok=True)
    store = _store(tmp_path)
    assert store.reconcile().reindexed == ["job0", "job1", "job2"]
    assert _states(store) == EXPECTED


def test_a_corrupt_database_is_set_aside_and_rebuilt_with_a_warning(tmp_path, caplog):
    _fill(tmp_path)
    db = tmp_path / "jobs.sqlite3"
    db.write_bytes(b"this is not an SQLite database, an operator's mistake" * 100)
    with caplog.at_level(logging.WARNING, logger="edgescene.apps.job_store"):
        store = _store(tmp_path)
        found = store.reconcile()
    aside = [p for p in tmp_path.glob("jobs.sqlite3.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")  # kept, never deleted
    assert found.rebuilt_from == aside[0].name and found.summary()["rebuilt"] is True
    assert _states(store) == EXPECTED
    warning = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(warning) == 1 and str(db) in warning[0] and aside[0].name in warning[0]
    assert "re-indexed" in caplog.text
    store.close()
    db.write_bytes(b"corrupt again" * 100)  # the same second: the earlier copy is kept
    SQLiteJobStore(db, folders=tmp_path)
    kept = sorted(
        p.read_bytes()[:13] for p in tmp_path.glob("jobs.sqlite3.corrupt-*") if p.name[-4:] not in ("-wal", "-shm")
    )
    assert kept == [b"corrupt again", b"this is not a"]


def test_rebuild_on_request_and_a_corrupt_database_without_folders(tmp_path):
    _fill(tmp_path)
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3", folders=tmp_path, rebuild=True)
    assert store.list() == [] and store.reconcile().reindexed == ["job0", "job1", "job2"]
    store.close()
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "jobs.sqlite3").write_bytes(b"\x00garbage" * 512)
    with pytest.raises(JobIndexError, match=r"the job index .*bare/jobs\.sqlite3 cannot be read .*move it aside"):
        SQLiteJobStore(bare / "jobs.sqlite3")


def test_a_row_without_a_folder_is_lost_and_a_stray_folder_is_an_orphan(tmp_path):
    _fill(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "job1")
    (tmp_path / "holiday-photos").mkdir()  # not a job's: left alone
    (tmp_path / "holiday-photos" / "a.jpg").write_bytes(b"x")
    (tmp_path / "job9").mkdir()
    (tmp_path / "job9" / RECORD).write_text("{not json")  # an unreadable record: an orphan, not a job
    store = _store(tmp_path)
    found = store.reconcile()
    assert found.lost == ["job1"] and found.orphans == ["holiday-photos", "job9"] and not found.reindexed
    assert store.get("job1").status == "lost" and store.get("job1").message == LOST
    assert (tmp_path / "holiday-photos" / "a.jpg").exists()
    assert store.reconcile().lost == []  # marked once


def test_a_graceful_close_leaves_one_self_contained_file(tmp_path):
    _fill(tmp_path)  # closes the store
    wal = tmp_path / "jobs.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    copy = tmp_path / "copy.sqlite3"
    copy.write_bytes((tmp_path / "jobs.sqlite3").read_bytes())  # the file alone, as a backup takes it
    rows = sqlite3.connect(copy).execute("SELECT id, status FROM jobs ORDER BY id").fetchall()
    assert rows == [("job0", "done"), ("job1", "failed"), ("job2", "queued")]


def test_a_folder_of_an_older_server_gets_its_record(tmp_path):
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")  # no folders: no records written
    store.add(_job(tmp_path, "old1"), "ref")
    assert not (tmp_path / "old1" / RECORD).exists()
    store.close()
    store = _store(tmp_path)
    found = store.reconcile()
    assert not (found.reindexed or found.lost or found.orphans)
    assert json.loads((tmp_path / "old1" / RECORD).read_text())["model_ref"] == "ref"
