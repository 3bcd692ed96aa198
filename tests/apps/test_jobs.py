"""The durable job manager: what a restart finds, cancelled slots, retry, retention, shutdown."""

from __future__ import annotations

import shutil
import time

import pytest

from edgescene.apps.job_store import Job, SQLiteJobStore
from edgescene.apps.jobs import INTERRUPTED, JobManager, QueueFull, Retention, new_job_id
from edgescene.assets import default_model_dir, sample_dir
from edgescene.runtime.reconstruct import ReconstructConfig

MODEL = default_model_dir()
CONFIG = ReconstructConfig(max_frames=4, window=4, overlap=2)


def _inputs(jobs: JobManager, job_id: str) -> None:
    jobs.input_dir(job_id).mkdir(parents=True)
    shutil.copy(sample_dir() / "sample.mp4", jobs.input_dir(job_id) / "0000_sample.mp4")


def _submit(jobs: JobManager) -> str:
    job_id = new_job_id()
    _inputs(jobs, job_id)
    jobs.submit(job_id, "video", "bundled", MODEL, CONFIG)
    return job_id


def test_a_restart_finds_finished_interrupted_and_queued_jobs(tmp_path):
    root = tmp_path / "jobs"
    first = JobManager(root, queue_size=4)
    done = _submit(first)
    assert first.wait(done).status == "done"
    first.shutdown(grace_s=0)
    # what a kill -9 leaves: a record still "running" with a partial staging folder, and a queued job
    store = SQLiteJobStore(root / "jobs.sqlite3")
    running, queued = new_job_id(), new_job_id()
    for job_id, status in ((running, "running"), (queued, "queued")):
        (root / job_id).mkdir()
        shutil.copytree(root / done / "input", root / job_id / "input")
        store.add(Job(id=job_id, kind="video", model="bundled", config=vars(CONFIG).copy(), status=status), str(MODEL))
    (root / running / ".output.staging-1234").mkdir()
    (root / running / ".output.staging-1234" / "points.ply").write_bytes(b"partial")

    again = JobManager(root, queue_size=4)
    assert again.get(done).status == "done" and (again.output_dir(done) / "report.json").is_file()
    assert again.get(running).status == "interrupted" and again.get(running).message == INTERRUPTED
    assert not (root / running / ".output.staging-1234").exists()
    assert again.wait(queued).status == "done"  # queued before the restart: runs after it
    assert again.retry(running).status == "queued"
    assert again.wait(running).status == "done"
    again.shutdown(grace_s=0)


def test_cancelled_queued_jobs_free_their_slot_at_once(tmp_path):
    jobs = JobManager(tmp_path / "jobs", queue_size=1, workers=1)
    jobs.shutdown(grace_s=0)  # no worker takes anything: the queue only fills
    jobs._stopping = False  # accept submissions again, but nothing runs them
    first = _submit(jobs)
    assert not jobs.has_room()
    with pytest.raises(QueueFull, match="1 jobs are already waiting"):
        _submit(jobs)
    assert jobs.cancel(first).status == "cancelled"
    assert jobs.has_room()  # the slot is free as soon as the job is cancelled
    second = _submit(jobs)
    assert jobs.get(second).status == "queued"


def test_delete_removes_a_finished_job_and_retention_bounds_the_rest(tmp_path):
    root = tmp_path / "jobs"
    jobs = JobManager(root, queue_size=4, retention=Retention(keep_jobs=2))
    ids = []
    for _ in range(4):
        ids.append(_submit(jobs))
        assert jobs.wait(ids[-1]).status == "done"
    time.sleep(0.2)  # the worker prunes right after a job
    kept = [j.id for j in jobs.list()]
    assert kept == ids[-2:] and all((root / i).is_dir() for i in kept)
    assert not any((root / i).exists() for i in ids[:2])
    assert jobs.delete(ids[-1]) is True and not (root / ids[-1]).exists() and jobs.get(ids[-1]) is None
    jobs.shutdown(grace_s=0)
    with pytest.raises(ValueError, match="keep_jobs must be >= 0"):
        Retention(keep_jobs=-1)


def test_failed_jobs_have_their_own_bound_and_never_push_out_results(tmp_path):
    """The reported case: --keep-jobs 3, then three junk uploads deleted three good results."""
    from edgescene.apps.job_store import Job

    root = tmp_path / "jobs"
    jobs = JobManager(root, queue_size=8, retention=Retention(keep_jobs=3, keep_failed=2))
    good = []
    for _ in range(3):
        good.append(_submit(jobs))
        assert jobs.wait(good[-1]).status == "done"
    jobs.shutdown(grace_s=30)  # the worker has pruned after its last job: prune() below is the only one
    junk = []
    for _ in range(4):  # what a broken upload leaves: a failed job with its folder
        job_id = new_job_id()
        _inputs(jobs, job_id)
        jobs.store.add(Job(id=job_id, kind="video", model="bundled", config={}, status="failed"), str(MODEL))
        junk.append(job_id)
    removed = jobs.prune()
    assert sorted(removed) == sorted(junk[:2])  # the two oldest failures, no result
    statuses = {j.id: j.status for j in jobs.list()}
    assert all(statuses[g] == "done" for g in good) and set(junk[2:]) <= set(statuses)
    assert all((root / g / "output" / "report.json").is_file() for g in good)
    assert Retention(keep_jobs=3).failed_bound == 3 and Retention(keep_jobs=50).failed_bound == 10
    assert Retention().failed_bound is None and not Retention().bounded
    with pytest.raises(ValueError, match="keep_failed must be >= 0"):
        Retention(keep_failed=-1)


def test_shutdown_lets_a_running_job_finish_within_the_grace(tmp_path):
    jobs = JobManager(tmp_path / "jobs", queue_size=2)
    job_id = _submit(jobs)
    deadline = time.monotonic() + 30
    while jobs.get(job_id).status == "queued" and time.monotonic() < deadline:
        time.sleep(0.01)
    jobs.shutdown(grace_s=60)
    assert jobs.get(job_id).status == "done"
    with pytest.raises(QueueFull, match="shutting down"):
        _submit(jobs)


def test_paging_and_status_filter(tmp_path):
    store = SQLiteJobStore(tmp_path / "s.sqlite3")
    for i in range(5):
        store.add(
            Job(
                id=f"j{i}", kind="video", model="m", config={}, created=100.0 + i, status="done" if i % 2 else "failed"
            ),
            "ref",
        )
    assert [j.id for j in store.list(offset=1, limit=2)] == ["j1", "j2"]
    assert [j.id for j in store.list("done")] == ["j1", "j3"]
    assert store.count("failed") == 3 and store.model_ref("j0") == "ref"
    with pytest.raises(ValueError, match="status must be one of"):
        store.update("j0", status="exploded")


def test_a_failed_job_names_no_server_folder(tmp_path):
    jobs = JobManager(tmp_path / "jobs", queue_size=2)
    job_id = new_job_id()
    _inputs(jobs, job_id)
    jobs.submit(job_id, "video", "gone", tmp_path / "models" / "gone", CONFIG)  # a model folder that vanished
    job = jobs.wait(job_id)
    assert job.status == "failed" and "gone" in job.error
    assert str(tmp_path) not in job.error
    jobs.shutdown(grace_s=0)
