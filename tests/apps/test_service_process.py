"""The real `edgescene serve` process on 127.0.0.1 with a real HTTP client: jobs survive kill -9 and
a restart, SIGTERM stops it cleanly, and the websocket upgrade is answered (the apps extra brings
the websocket library)."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

from pixel_bomb import bomb_png
from service_server import Server

from edgescene.assets import sample_dir

pytestmark = pytest.mark.service


def _wait(url: str, job_id: str, timeout_s: float = 120) -> dict:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        job = httpx.get(f"{url}/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise TimeoutError(job)


def _one_job_then_kill(jobs_dir: Path, log: Path) -> dict:
    """A real server runs one sample job to done, then is killed with SIGKILL; returns the job."""
    server = Server(jobs_dir, log)
    try:
        video = {"files": ("sample.mp4", (sample_dir() / "sample.mp4").read_bytes(), "video/mp4")}
        job = httpx.post(server.url + "/jobs", files=video, data={"max_frames": "8", "window": "4"}).json()
        assert _wait(server.url, job["id"])["status"] == "done"
    finally:
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    return job


def test_finished_jobs_survive_kill_9_and_a_restart(tmp_path):
    jobs_dir = tmp_path / "jobs"
    job = _one_job_then_kill(jobs_dir, tmp_path / "server.log")
    server = Server(jobs_dir, tmp_path / "server.log")
    try:
        listed = httpx.get(server.url + "/jobs").json()
        assert [j["id"] for j in listed] == [job["id"]] and listed[0]["status"] == "done"
        report = httpx.get(f"{server.url}/jobs/{job['id']}/files/report.json")
        assert report.status_code == 200 and report.json()["keyframes"] >= 2
        assert not list(jobs_dir.glob("*/.output.staging-*"))
        assert httpx.get(server.url + "/jobs", params={"status": "failed"}).json() == []
    finally:
        server.stop_cleanly(tmp_path / "server.log")


def test_the_websocket_upgrade_is_answered(tmp_path):
    server = Server(tmp_path / "jobs", tmp_path / "server.log")
    try:
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(
                (
                    f"GET /stream HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            status_line = s.recv(1024).split(b"\r\n", 1)[0]
        assert status_line == b"HTTP/1.1 101 Switching Protocols", status_line
    finally:
        server.stop_cleanly(tmp_path / "server.log")


def test_the_real_server_enforces_its_token(tmp_path):
    token = "a-token-long-enough-1234"
    server = Server(tmp_path / "jobs", tmp_path / "server.log", token=token)
    try:
        assert httpx.get(server.url + "/jobs").status_code == 401
        assert httpx.get(server.url + "/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert token not in (tmp_path / "server.log").read_text()  # never printed
    finally:
        server.stop_cleanly(tmp_path / "server.log")


def test_the_stream_token_never_reaches_the_real_server_log(tmp_path):
    sync_client = pytest.importorskip("websockets.sync.client")
    token = "stream-token-0123456789abcdef"
    log = tmp_path / "server.log"
    server = Server(tmp_path / "jobs", log, token=token)
    try:
        with sync_client.connect(f"ws://127.0.0.1:{server.port}/stream?window=4&token={token}", max_size=None) as ws:
            ws.send(b"")  # an authenticated session: answered
            assert "empty message" in json.loads(ws.recv(timeout=30))["detail"]
        wrong = f"ws://127.0.0.1:{server.port}/stream?token=wrong-{token}"
        with pytest.raises(Exception, match="1008|403"), sync_client.connect(wrong) as ws:  # refused, logged redacted
            ws.recv(timeout=10)
        r = httpx.get(f"{server.url}/jobs?token={token}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
    finally:
        server.stop_cleanly(log)
    text = log.read_text()
    assert "/stream?window=4&token=[redacted]" in text and "/jobs?token=[redacted]" in text, text[-3000:]
    assert token not in text
    assert "ServiceConfig(" not in text and "edgescene serve: access: API token required; hosts 127.0.0.1" in text


def test_the_real_server_answers_empty_and_20_mib_stream_messages(tmp_path):
    sync_client = pytest.importorskip("websockets.sync.client")
    server = Server(tmp_path / "jobs", tmp_path / "server.log")
    try:
        with sync_client.connect(f"ws://127.0.0.1:{server.port}/stream?window=4", max_size=None) as ws:
            ws.send(b"")
            assert "empty message" in json.loads(ws.recv(timeout=30))["detail"]
            ws.send(b"\x00" * (20 * 2**20))  # the documented limit: answered, not dropped by the server
            assert "not a decodable image" in json.loads(ws.recv(timeout=60))["detail"]
            ws.send("finish")
            assert json.loads(ws.recv(timeout=30))["type"] == "error"  # no frames before finish
        from websockets.exceptions import ConnectionClosed

        with sync_client.connect(f"ws://127.0.0.1:{server.port}/stream?window=4", max_size=None) as ws:
            ws.send(b"\x00" * (22 * 2**20))  # over the 20 MiB frame limit and uvicorn's cap (21 MiB)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=60)
        assert ws.close_code == 1009 and "exceeds limit" in ws.close_reason  # a close frame with a reason
    finally:
        server.stop_cleanly(tmp_path / "server.log")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's peak memory from /proc")
def test_a_pixel_bomb_is_refused_by_the_real_server_without_a_memory_spike(tmp_path):
    server = Server(tmp_path / "jobs", tmp_path / "server.log")
    try:
        before = _peak_rss_mb(server.proc.pid)
        r = httpx.post(server.url + "/jobs", files={"files": ("huge.png", bomb_png(30_000, 30_000), "image/png")})
        assert r.status_code == 413 and "megapixels" in r.json()["detail"]
        assert _peak_rss_mb(server.proc.pid) - before < 50  # decoded, 30000^2 RGB would be 2.7 GB
    finally:
        server.stop_cleanly(tmp_path / "server.log")


def test_a_cancelled_job_frees_its_slot_on_the_real_server(tmp_path):
    server = Server(tmp_path / "jobs", tmp_path / "server.log", "--queue-size", "1")
    video = {"files": ("sample.mp4", (sample_dir() / "sample.mp4").read_bytes(), "video/mp4")}
    try:
        for _ in range(20):  # submit until the one queue slot is taken (a 429 says so)
            r = httpx.post(server.url + "/jobs", files=video)
            if r.status_code == 429:
                break
            assert r.status_code == 202
        assert r.status_code == 429 and r.headers["retry-after"] == "10"
        queued = httpx.get(server.url + "/jobs", params={"status": "queued"}).json()
        assert len(queued) == 1  # the job holding the slot
        assert httpx.delete(f"{server.url}/jobs/{queued[0]['id']}").json()["status"] == "cancelled"
        assert httpx.post(server.url + "/jobs", files=video).status_code == 202  # the slot is free at once
    finally:
        server.stop_cleanly(tmp_path / "server.log")


def test_two_concurrent_streams_on_one_model_equal_a_serial_one(tmp_path):
    import threading

    import cv2
    from websockets.sync.client import connect

    from edgescene.runtime.frames import open_frames

    jpegs = [
        cv2.imencode(".jpg", f.rgb[..., ::-1])[1].tobytes()
        for f in open_frames(sample_dir() / "sample.mp4", max_frames=12)
    ]
    server = Server(tmp_path / "jobs", tmp_path / "server.log")

    def run_stream() -> dict:
        with connect(f"ws://127.0.0.1:{server.port}/stream?window=4", max_size=None) as ws:
            for data in jpegs:
                ws.send(data)
                ws.recv(timeout=120)
            ws.send("finish")
            return json.loads(ws.recv(timeout=120))

    try:
        serial = run_stream()
        results: list[dict] = []
        threads = [threading.Thread(target=lambda: results.append(run_stream())) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        server.stop_cleanly(tmp_path / "server.log")
    assert len(results) == 2
    for result in results:
        assert result["points"] == serial["points"] and result["keyframes"] == serial["keyframes"]
        assert result["extrinsics"] == serial["extrinsics"]


def _sample_jpegs(n: int) -> list[bytes]:
    import cv2

    from edgescene.runtime.frames import open_frames

    return [
        cv2.imencode(".jpg", f.rgb[..., ::-1])[1].tobytes()
        for f in open_frames(sample_dir() / "sample.mp4", max_frames=n)
    ]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's peak memory from /proc")
def test_video_bombs_and_a_video_without_a_duration_are_held_to_the_limits_by_the_real_server(tmp_path):
    """A Matroska of motion-JPEG frames whose header and first frames are small and whose later frame
    is 12000 x 10000 (1.4 MB of file, 360 MB as RGB): refused with 413 when it comes among the frames
    probed at submission, a failed job when it comes later, and never decoded either way; a video
    whose header has no duration decodes only up to the server's frame budget."""
    from pixel_bomb import big_jpeg, mjpeg_mkv

    frames, big = _sample_jpegs(24), big_jpeg(12000, 10000)
    early = mjpeg_mkv(tmp_path / "early.mkv", [frames[0], big, *frames[1:8]]).read_bytes()
    late = mjpeg_mkv(tmp_path / "late.mkv", [*frames[:8], big, *frames[8:11]]).read_bytes()  # 12 frames
    endless = mjpeg_mkv(tmp_path / "live.mkv", frames * 2, duration_in_header=False).read_bytes()
    server = Server(tmp_path / "jobs", tmp_path / "server.log", "--max-job-frames", "12", "--probe-frames", "4")
    try:
        r = httpx.post(
            server.url + "/jobs", files={"files": ("live.mkv", endless, "video/x-matroska")}, data={"window": "4"}
        )
        assert r.status_code == 202 and r.json()["frames_expected"] is None, r.text  # nothing says how long
        job = _wait(server.url, r.json()["id"])
        assert job["status"] == "done" and job["frames_seen"] == 12, job  # of 48 frames: stopped at the budget
        assert "stopped at the server's limit of 12 frames" in job["message"]

        before = _peak_rss_mb(server.proc.pid)  # after a job: the model is loaded, the buffers exist
        r = httpx.post(server.url + "/jobs", files={"files": ("early.mkv", early, "video/x-matroska")})
        assert r.status_code == 413, r.text
        assert "frame 1 of video early.mkv" in r.json()["detail"] and "100.0 megapixels" in r.json()["detail"]

        r = httpx.post(
            server.url + "/jobs", files={"files": ("late.mkv", late, "video/x-matroska")}, data={"window": "4"}
        )
        assert r.status_code == 202, r.text  # its first 4 frames are fine
        job = _wait(server.url, r.json()["id"])
        assert job["status"] == "failed" and "frame 8 of video late.mkv" in job["error"], job
        assert "100.0 megapixels" in job["error"]
        assert str(tmp_path) not in job["error"]
        assert _peak_rss_mb(server.proc.pid) - before < 200  # the bomb frame was never decoded (360 MB as RGB)

        corrupt = {"files": ("corrupt.jpg", b"\xff\xd8\xff\xe0" + bytes(300), "image/jpeg")}
        r = httpx.post(server.url + "/jobs", files=corrupt)  # reported: its 422 named the server's upload path
        assert r.status_code == 422 and "image corrupt.jpg cannot be read" in r.json()["detail"], r.text
        assert str(tmp_path) not in r.text and "/input/" not in r.text
    finally:
        server.stop_cleanly(tmp_path / "server.log")


def test_one_stream_client_cannot_close_another_s_model_session_on_the_real_server(tmp_path):
    """The reported attack: with two model sessions, a client opens window=3, then window=5, while a
    victim streams on window=8. The idle session (3) makes room, never the victim's; once both
    sessions are in use, a third client is told to retry (1013) and the victim finishes."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    jpegs = _sample_jpegs(12)
    server = Server(tmp_path / "jobs", tmp_path / "server.log", "--stream-models", "2")
    url = f"ws://127.0.0.1:{server.port}/stream"
    try:
        with connect(f"{url}?window=8", max_size=None) as victim:
            victim.send(jpegs[0])
            assert json.loads(victim.recv(timeout=120))["type"] == "ack"
            with connect(f"{url}?window=3", max_size=None) as other:
                other.send(jpegs[0])
                assert json.loads(other.recv(timeout=120))["type"] == "ack"
            with connect(f"{url}?window=5", max_size=None) as attacker:
                attacker.send(jpegs[0])
                assert json.loads(attacker.recv(timeout=120))["type"] == "ack"  # in the idle window=3's place
                with connect(f"{url}?window=4", max_size=None) as third:
                    busy = json.loads(third.recv(timeout=60))
                    assert "model sessions of the live stream are in use" in busy["detail"], busy
                    assert busy["retry_after_s"] == 5
                    with pytest.raises(ConnectionClosed):
                        third.recv(timeout=30)
                    assert third.close_code == 1013 and "retry" in third.close_reason
            for data in jpegs[1:]:
                victim.send(data)
                assert json.loads(victim.recv(timeout=120))["type"] in ("ack", "update")
            victim.send("finish")
            final = json.loads(victim.recv(timeout=120))
        assert final["type"] == "final" and final["keyframes"] >= 2, final
    finally:
        server.stop_cleanly(tmp_path / "server.log")


def test_the_job_index_survives_a_lost_wal_truncation_corruption_and_removed_folders(tmp_path):
    """What disks and operators do to jobs.sqlite3 between two runs of the real server: each job
    folder's job.json brings the records back, and /health says what start-up found."""
    jobs_dir, log = tmp_path / "jobs", tmp_path / "server.log"
    db = jobs_dir / "jobs.sqlite3"
    job = _one_job_then_kill(jobs_dir, log)
    server = None  # each restart below
    for suffix in ("-wal", "-shm"):  # a kill -9, then the WAL lost
        Path(f"{db}{suffix}").unlink(missing_ok=True)

    def restart_and_check(status: str = "done") -> dict:
        nonlocal server
        server = Server(jobs_dir, log)
        listed = httpx.get(server.url + "/jobs").json()
        assert [(j["id"], j["status"]) for j in listed] == [(job["id"], status)], listed
        if status == "done":
            assert httpx.get(f"{server.url}/jobs/{job['id']}/files/report.json").status_code == 200
        return httpx.get(server.url + "/health").json()["job_index"]

    try:
        restart_and_check()
    finally:
        server.stop_cleanly(log)
    wal = Path(f"{db}-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # a graceful stop checkpoints
    db.write_bytes(b"")  # truncated to 0 bytes
    try:
        assert restart_and_check() == {"reindexed": 1, "lost": 0, "orphans": 0, "rebuilt": False}
    finally:
        server.stop_cleanly(log)
    db.write_bytes(b"not a database " * 1000)  # corrupt
    try:
        assert restart_and_check() == {"reindexed": 1, "lost": 0, "orphans": 0, "rebuilt": True}
    finally:
        server.stop_cleanly(log)
    aside = [p for p in jobs_dir.glob("jobs.sqlite3.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"not a database")
    assert f"job index {db} cannot be read" in log.read_text() and aside[0].name in log.read_text()
    import shutil

    shutil.rmtree(jobs_dir / job["id"])  # an operator removes the job's folder
    (jobs_dir / "scratch").mkdir()  # and leaves a folder of their own
    try:
        assert restart_and_check("lost") == {"reindexed": 0, "lost": 1, "orphans": 1, "rebuilt": False}
        assert "folder was removed" in httpx.get(f"{server.url}/jobs/{job['id']}").json()["message"]
    finally:
        server.stop_cleanly(log)


def test_retention_on_the_real_server_keeps_results_when_junk_fails(tmp_path):
    from pixel_bomb import big_jpeg, mjpeg_mkv

    frames = _sample_jpegs(8)
    junk = mjpeg_mkv(tmp_path / "junk.mkv", [*frames[:6], big_jpeg(12000, 10000)]).read_bytes()  # fails in the job
    video = {"files": ("sample.mp4", (sample_dir() / "sample.mp4").read_bytes(), "video/mp4")}
    server = Server(
        tmp_path / "jobs", tmp_path / "server.log", "--keep-jobs", "2", "--keep-failed", "1", "--probe-frames", "2"
    )
    try:
        good = []
        for _ in range(2):
            job = httpx.post(server.url + "/jobs", files=video, data={"max_frames": "8", "window": "4"}).json()
            assert _wait(server.url, job["id"])["status"] == "done"
            good.append(job["id"])
        for _ in range(3):
            job = httpx.post(server.url + "/jobs", files={"files": ("junk.mkv", junk, "video/x-matroska")}).json()
            assert _wait(server.url, job["id"])["status"] == "failed"
        time.sleep(0.5)  # the worker prunes right after each job
        listed = {j["id"]: j["status"] for j in httpx.get(server.url + "/jobs").json()}
        assert [listed.get(g) for g in good] == ["done", "done"], listed
        assert sorted(listed.values()) == ["done", "done", "failed"], listed
        for g in good:
            assert httpx.get(f"{server.url}/jobs/{g}/files/points.ply").status_code == 200
    finally:
        server.stop_cleanly(tmp_path / "server.log")


@pytest.mark.parametrize("command", ["serve", "app"])
def test_a_busy_port_is_one_line_before_anything_else(tmp_path, command):
    import subprocess
    import sys

    pytest.importorskip("gradio" if command == "app" else "fastapi")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "edgescene",
                command,
                "--port",
                str(port),
                "--jobs-dir" if command == "serve" else "--workspace",
                str(tmp_path / "x"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"},
        )
    assert done.returncode == 2, done
    assert done.stdout == "", done.stdout  # nothing printed first ("API docs at ..." was)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        f"edgescene {command}: error: port {port} on 127.0.0.1 is already in use (another server is listening "
        f"there); pass a free one with --port, e.g. --port {port + 1}"
    ], done.stderr


def test_outputs_list_archive_and_paging_on_the_real_server(tmp_path):
    import io
    import zipfile

    server = Server(tmp_path / "jobs", tmp_path / "server.log")
    try:
        video = {"files": ("sample.mp4", (sample_dir() / "sample.mp4").read_bytes(), "video/mp4")}
        ids = [
            httpx.post(server.url + "/jobs", files=video, data={"max_frames": "4", "window": "4"}).json()["id"]
            for _ in range(3)
        ]
        job = _wait(server.url, ids[0])
        for other in ids[1:]:
            _wait(server.url, other)
        listing = httpx.get(server.url + job["files_url"])  # reported: 404 "no file ''"
        assert listing.status_code == 200, listing.text
        files = listing.json()["files"]
        assert sorted(f["name"] for f in files) == sorted(job["outputs"]) and len(files) >= 8
        archive = httpx.get(server.url + listing.json()["archive_url"])
        assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
        assert f'filename="edgescene-{job["id"]}.zip"' in archive.headers["content-disposition"]
        zipped = zipfile.ZipFile(io.BytesIO(archive.content))
        assert sorted(zipped.namelist()) == sorted(job["outputs"])
        for f in files[:3]:
            assert zipped.read(f["name"]) == httpx.get(server.url + f["url"]).content
            assert zipped.getinfo(f["name"]).file_size == f["bytes"]

        page = httpx.get(server.url + "/jobs", params={"limit": 2})
        assert [j["id"] for j in page.json()] == ids[:2] and page.headers["x-total-count"] == "3"
        assert page.headers["link"] == '</jobs?offset=2&limit=2>; rel="next"'
        last = httpx.get(server.url + "/jobs", params={"limit": 2, "offset": 2})
        assert [j["id"] for j in last.json()] == ids[2:] and "link" not in last.headers
        assert httpx.get(server.url + "/jobs", params={"status": "failed"}).headers["x-total-count"] == "0"
        assert httpx.get(f"{server.url}/jobs/nope/archive").status_code == 404
    finally:
        server.stop_cleanly(tmp_path / "server.log")
