"""The real `edgescene app` process on 127.0.0.1 for tests: started on a free port with the given
arguments, waited for (its page answers), terminated at the end. Used by the browser test and the
web app's process tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ports import free_port


@contextlib.contextmanager
def webapp(tmp_path: Path, *extra: str) -> Iterator[str]:
    """``edgescene app --port P --workspace tmp_path/workspace *extra``; yields its URL."""
    pytest.importorskip("gradio")
    port = free_port()
    log_path = tmp_path / "app.log"
    log = open(log_path, "w")  # noqa: SIM115 - the server process writes it until the end
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    command = ["app", "--port", str(port), "--workspace", str(tmp_path / "workspace"), *extra]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgescene", *command], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"edgescene app exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail(f"edgescene app did not answer within 90 s:\n{log_path.read_text()}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
