"""Reliability figures of a real `edgescene serve` process on 127.0.0.1 (docs/apps.md, "Reliability").

    python scripts/service_reliability.py out/reliability      # about 5 minutes on 2 cores

Starts the server as a user would (a subprocess, the bundled model, the sample video) and measures:

1. 30 concurrent submissions (queue 4, one worker): accepted / 429 counts, ``/health`` p50 / p95
   sampled meanwhile;
2. 10 concurrent ``/stream`` clients: ``/health`` p95 and worst latency meanwhile;
3. ``kill -9`` in the middle of a job, then a restart: finished jobs kept, the interrupted one
   marked, no partial output folders;
4. 200 sequential jobs with ``--keep-jobs 20``: the jobs folder's size stays bounded;
5. schemathesis against the live server's OpenAPI schema: server errors (5xx) found;
6. memory: the server's resident memory after its first sample job, then after 50 more with the
   attack inputs among them (a PNG pixel bomb, video bombs early and late in the file, a corrupt
   JPEG, a video without a duration, live streams): their ratio, and the peak.

``python scripts/service_reliability.py OUT memory`` runs one section (names as in reliability.json).

Writes ``reliability.json`` into the folder given and prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT / "edgescene" / "assets" / "sample" / "sample.mp4"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, jobs_dir: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(jobs_dir.parent / "server.log", "a")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env.pop("EDGESCENE_API_TOKEN", None)
        command = [sys.executable, "-m", "edgescene", "serve", "--port", str(self.port), "--jobs-dir", str(jobs_dir)]
        self.proc = subprocess.Popen([*command, *extra], stdout=self.log, stderr=subprocess.STDOUT, env=env)
        end = time.monotonic() + 90
        while time.monotonic() < end:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=120)
        self.log.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class HealthProbe:
    """Samples /health latency in the background."""

    def __init__(self, url: str) -> None:
        self.url, self.samples, self._stop = url, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                start = time.perf_counter()
                client.get(self.url + "/health")
                self.samples.append(1000 * (time.perf_counter() - start))
                time.sleep(0.05)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {
            "samples": len(self.samples),
            "p50_ms": round(percentile(self.samples, 50), 1),
            "p95_ms": round(percentile(self.samples, 95), 1),
            "max_ms": round(max(self.samples), 1),
        }


def submit(url: str, **data) -> httpx.Response:
    files = {"files": ("sample.mp4", VIDEO.read_bytes(), "video/mp4")}
    return httpx.post(url + "/jobs", files=files, data={k: str(v) for k, v in data.items()}, timeout=60)


def wait_idle(url: str, timeout_s: float = 600) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        health = httpx.get(url + "/health").json()
        if health["queued"] == 0 and health["running"] == 0:
            return
        time.sleep(0.3)


def concurrent_submissions(work: Path) -> dict:
    server = Server(work / "jobs", "--queue-size", "4", "--workers", "1")
    try:
        probe = HealthProbe(server.url)
        with ThreadPoolExecutor(30) as pool:
            codes = list(pool.map(lambda _: submit(server.url, max_frames=8, window=4).status_code, range(30)))
        wait_idle(server.url)
        health = probe.stop()
    finally:
        server.stop()
    return {
        "accepted_202": codes.count(202),
        "refused_429": codes.count(429),
        "other": len(codes) - codes.count(202) - codes.count(429),
        "health": health,
    }


def concurrent_streams(work: Path) -> dict:
    import cv2
    from websockets.sync.client import connect

    from edgescene.runtime.frames import open_frames

    jpegs = [cv2.imencode(".jpg", f.rgb[..., ::-1])[1].tobytes() for f in open_frames(VIDEO, max_frames=16)]
    server = Server(work / "jobs")
    errors: list[str] = []

    def client(_: int) -> int:
        with connect(f"ws://127.0.0.1:{server.port}/stream?window=4", max_size=None) as ws:
            for data in jpegs:
                ws.send(data)
                if json.loads(ws.recv(timeout=120))["type"] == "error":
                    errors.append("error reply")
            ws.send("finish")
            return json.loads(ws.recv(timeout=120))["points"]

    try:
        with connect(f"ws://127.0.0.1:{server.port}/stream?window=4") as ws:  # open and warm the model once
            ws.send(jpegs[0])
            ws.recv(timeout=120)
        probe = HealthProbe(server.url)
        start = time.perf_counter()
        with ThreadPoolExecutor(10) as pool:
            points = list(pool.map(client, range(10)))
        elapsed = time.perf_counter() - start
        health = probe.stop()
    finally:
        server.stop()
    return {
        "clients": 10,
        "frames_each": len(jpegs),
        "seconds": round(elapsed, 1),
        "errors": len(errors),
        "same_map_for_every_client": len(set(points)) == 1,
        "health": health,
    }


def kill_mid_job(work: Path) -> dict:
    jobs_dir = work / "jobs"
    server = Server(jobs_dir)
    finished = submit(server.url, max_frames=8, window=4).json()["id"]
    wait_idle(server.url)
    running = submit(server.url).json()["id"]  # the whole video: about a second of work
    deadline = time.monotonic() + 60
    while httpx.get(f"{server.url}/jobs/{running}").json()["status"] == "queued" and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    server.stop(signal.SIGKILL)
    server = Server(jobs_dir)
    try:
        jobs = {j["id"]: j["status"] for j in httpx.get(server.url + "/jobs").json()}
        report = httpx.get(f"{server.url}/jobs/{finished}/files/report.json").status_code
    finally:
        server.stop()
    return {
        "finished_job": jobs.get(finished),
        "finished_report_http": report,
        "killed_job": jobs.get(running),
        "partial_folders_left": len(list(jobs_dir.glob("*/.output.staging-*"))),
    }


def _folder_mb(folder: Path) -> float:
    """MiB of the files under ``folder``; files retention removes meanwhile are skipped."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total / 2**20


def retention(work: Path, jobs: int = 200, keep: int = 20) -> dict:
    jobs_dir = work / "jobs"
    server = Server(jobs_dir, "--keep-jobs", str(keep), "--queue-size", "8")
    sizes = []
    try:
        for i in range(jobs):
            while submit(server.url, max_frames=4, window=4).status_code == 429:
                time.sleep(0.2)
            if i % 20 == 19:
                wait_idle(server.url)
                sizes.append(_folder_mb(jobs_dir))
        wait_idle(server.url)
        listed = len(httpx.get(server.url + "/jobs", params={"limit": 1000}).json())
    finally:
        server.stop()
    return {
        "jobs": jobs,
        "keep_jobs": keep,
        "listed_at_end": listed,
        "folder_mb_every_20_jobs": [round(s, 1) for s in sizes],
    }


def schemathesis_live(work: Path) -> dict:
    server = Server(work / "jobs")
    try:
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "30",
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        )
    finally:
        server.stop()
    tail = [line for line in done.stdout.splitlines() if line.strip()][-6:]
    return {"returncode": done.returncode, "summary": tail}


def _rss_mb(pid: int, field: str = "VmRSS", settle_s: float = 1.0) -> float:
    time.sleep(settle_s)  # a job's memory is released right after it is reported done
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def _attacks(work: Path) -> list[tuple[str, bytes, str]]:
    """The hostile uploads of the service attack (tests/pixel_bomb.py builds them)."""
    import cv2

    sys.path.insert(0, str(ROOT / "tests"))
    from pixel_bomb import big_jpeg, bomb_png, mjpeg_mkv

    from edgescene.runtime.frames import open_frames

    jpegs = [cv2.imencode(".jpg", f.rgb[..., ::-1])[1].tobytes() for f in open_frames(VIDEO, max_frames=12)]
    big = big_jpeg(12000, 10000)
    return [
        ("bomb.png", bomb_png(30_000, 30_000), "image/png"),
        ("early.mkv", mjpeg_mkv(work / "early.mkv", [jpegs[0], big, *jpegs[1:6]]).read_bytes(), "video/x-matroska"),
        ("late.mkv", mjpeg_mkv(work / "late.mkv", [*jpegs[:40], big]).read_bytes(), "video/x-matroska"),
        ("corrupt.jpg", b"\xff\xd8\xff\xe0" + bytes(300), "image/jpeg"),
        (
            "live.mkv",
            mjpeg_mkv(work / "live.mkv", jpegs * 4, duration_in_header=False).read_bytes(),
            "video/x-matroska",
        ),
    ]


def _stream(url: str, frames: int = 8) -> None:
    import cv2
    from websockets.sync.client import connect

    from edgescene.runtime.frames import open_frames

    port = url.rsplit(":", 1)[1]
    with connect(f"ws://127.0.0.1:{port}/stream?window=4", max_size=None) as ws:
        for f in open_frames(VIDEO, max_frames=frames):
            ws.send(cv2.imencode(".jpg", f.rgb[..., ::-1])[1].tobytes())
            ws.recv(timeout=120)
        ws.send("finish")
        ws.recv(timeout=120)


def memory(work: Path, jobs: int = 50) -> dict:
    server = Server(work / "jobs", "--queue-size", "8", "--probe-frames", "4")
    attacks = _attacks(work)
    statuses: dict[str, int] = {}
    try:
        start_mb = _rss_mb(server.proc.pid)
        submit(server.url)
        wait_idle(server.url)
        first_mb = _rss_mb(server.proc.pid)
        first_stream_mb: float | None = None
        after = []
        for i in range(jobs):
            while submit(server.url).status_code == 429:
                time.sleep(0.2)
            if i % 5 == 4:  # the attack inputs among the jobs, and a live stream
                name, data, kind = attacks[(i // 5) % len(attacks)]
                while (
                    r := httpx.post(server.url + "/jobs", files={"files": (name, data, kind)}, timeout=120)
                ).status_code == 429:
                    time.sleep(0.2)  # the queue is full: wait for room, as for the jobs
                statuses[f"{name} #{i // 5}"] = r.status_code
                _stream(server.url)
                if first_stream_mb is None:  # the stream's model session stays open (--stream-models)
                    wait_idle(server.url)
                    first_stream_mb = _rss_mb(server.proc.pid)
            if i % 10 == 9:
                wait_idle(server.url)
                after.append(round(_rss_mb(server.proc.pid), 1))
        wait_idle(server.url)
        end_mb = _rss_mb(server.proc.pid)
        peak_mb = _rss_mb(server.proc.pid, "VmHWM", settle_s=0.0)
        failed = [j["status"] for j in httpx.get(server.url + "/jobs", params={"limit": 1000}).json()]
    finally:
        server.stop()
    return {
        "rss_at_start_mb": round(start_mb, 1),
        "rss_after_first_job_mb": round(first_mb, 1),
        "rss_after_first_stream_mb": round(first_stream_mb or 0.0, 1),
        "rss_every_10_jobs_mb": after,
        "rss_after_all_mb": round(end_mb, 1),
        "ratio_to_first_job": round(end_mb / first_mb, 3),
        "peak_mb": round(peak_mb, 1),
        "jobs": 1 + jobs,
        "attack_answers": statuses,
        "job_statuses": {s: failed.count(s) for s in sorted(set(failed))},
    }


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/reliability")
    out.mkdir(parents=True, exist_ok=True)
    only = set(sys.argv[2:])  # section names to run (default: all)
    results = json.loads((out / "reliability.json").read_text()) if only and (out / "reliability.json").exists() else {}
    for name, run in (
        ("concurrent_submissions", concurrent_submissions),
        ("concurrent_streams", concurrent_streams),
        ("kill_mid_job", kill_mid_job),
        ("retention", retention),
        ("schemathesis", schemathesis_live),
        ("memory", memory),
    ):
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"edgescene-{name}-") as work:
            start = time.perf_counter()
            print(f"reliability: {name} ...", flush=True)
            results[name] = run(Path(work))
            results[name]["wall_s"] = round(time.perf_counter() - start, 1)
            print(json.dumps(results[name]), flush=True)
        (out / "reliability.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
