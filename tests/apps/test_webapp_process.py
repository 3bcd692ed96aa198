"""The real `edgescene app` process: a foreign Host is refused (DNS rebinding reaches the training,
export and workspace routes otherwise), and wrong passwords are throttled."""

from __future__ import annotations

import socket
import time

import pytest

httpx = pytest.importorskip("httpx")

from webapp_server import webapp


def test_the_web_app_refuses_a_foreign_host_and_throttles_failed_logins(tmp_path):
    with webapp(tmp_path, "--auth", "alice:correct-horse") as url:
        assert httpx.get(url).status_code == 200  # the login page
        for host in ("evil.example", "127.0.0.1:evil.example"):
            r = httpx.get(url + "config", headers={"Host": host})
            assert r.status_code == 400 and "is not served here" in r.json()["detail"], r.text
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # httpx will not send two Hosts
            s.sendall(b"GET /config HTTP/1.1\r\nHost: evil.example\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert s.recv(1024).split(b"\r\n", 1)[0] == b"HTTP/1.1 400 Bad Request"

        answers = [httpx.post(url + "login", data={"username": "alice", "password": f"guess{n}"}) for n in range(8)]
        statuses = [r.status_code for r in answers]
        assert statuses[:5] == [400] * 5 and 429 in statuses[5:], statuses  # reported: 30 answered at once
        refused = next(r for r in answers if r.status_code == 429)
        assert "too many failed logins" in refused.json()["detail"] and int(refused.headers["retry-after"]) >= 1
        time.sleep(int(refused.headers["retry-after"]) + 0.2)
        good = httpx.post(url + "login", data={"username": "alice", "password": "correct-horse"})
        assert good.status_code == 200 and good.json() == {"success": True}
