"""The real `edgescene serve` process on 127.0.0.1 with a real HTTP client: jobs survive kill -9 and
a restart, SIGTERM stops it cleanly, and the websocket upgrade is answered (the apps extra brings
the websocket library)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

from edgescene.assets import sample_dir

pytestmark = pytest.mark.service


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, jobs_dir: Path, log: Path, token: str | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env.pop("EDGESCENE_API_TOKEN", None)
        if token:
            env["EDGESCENE_API_TOKEN"] = token
        self._log = open(log, "a")  # noqa: SIM115 - the server writes it until stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgescene",
                "serve",
                "--port",
                str(self.port),
                "--jobs-dir",
                str(jobs_dir),
                "--shutdown-grace-s",
                "20",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"the server did not start: {log.read_text()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self._log.close()
        return code

    def stop_cleanly(self, log: Path) -> None:
        """SIGTERM: uvicorn shuts the app down (the lifespan lets jobs finish), then re-raises the signal."""
        code = self.stop(signal.SIGTERM)
        assert code in (0, -signal.SIGTERM), code
        assert "Application shutdown complete." in log.read_text()


def _wait(url: str, job_id: str, timeout_s: float = 120) -> dict:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        job = httpx.get(f"{url}/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise TimeoutError(job)


def test_finished_jobs_survive_kill_9_and_a_restart(tmp_path):
    jobs_dir = tmp_path / "jobs"
    server = Server(jobs_dir, tmp_path / "server.log")
    try:
        video = {"files": ("sample.mp4", (sample_dir() / "sample.mp4").read_bytes(), "video/mp4")}
        job = httpx.post(server.url + "/jobs", files=video, data={"max_frames": "8", "window": "4"}).json()
        assert _wait(server.url, job["id"])["status"] == "done"
    finally:
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
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
    finally:
        server.stop_cleanly(tmp_path / "server.log")
