"""The real `edgescene serve` process on 127.0.0.1 for tests: started on a free port, waited for
(/health), stopped by a signal. Used by the service-process and the stream-viewer tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from ports import free_port


class Server:
    def __init__(self, jobs_dir: Path, log: Path, *extra: str, token: str | None = None) -> None:
        self.port = free_port()
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
                *extra,
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
