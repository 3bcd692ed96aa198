"""The Host check shared by the service and the web app, and login throttling, on raw ASGI scopes."""

from __future__ import annotations

import asyncio

import pytest

from edgescene.apps.http_guards import HostGuard, LoginThrottle, host_allowed

ALLOWED = ("127.0.0.1", "localhost", "::1", "scene.example")


def _scope(*hosts: str, path: str = "/", method: str = "GET", client: str = "10.0.0.1") -> dict:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"host", h.encode()) for h in hosts],
        "client": (client, 5000),
    }


@pytest.mark.parametrize(
    ("hosts", "ok"),
    [
        (("127.0.0.1:7860",), True),
        (("localhost",), True),
        (("[::1]:8000",), True),
        (("Scene.Example:443",), True),
        (("evil.example",), False),
        (("127.0.0.1:evil.example",), False),  # reported: passed as 127.0.0.1
        (("evil.example", "127.0.0.1"), False),  # reported: two Host headers passed when the allowed one was last
        (("127.0.0.1", "127.0.0.1"), False),
        ((), False),
        (("127.0.0.1:80:80",), False),
        (("[::1",), False),
        (("127.0.0.1 evil",), False),
    ],
)
def test_host_allowed(hosts, ok):
    assert host_allowed(_scope(*hosts), ALLOWED)[0] is ok
    well_formed = ok or hosts == ("evil.example",)  # "*" allows any one well-formed Host
    assert host_allowed(_scope(*hosts), ("*",))[0] is well_formed


class _App:
    """A login route: 200 for the right password, 400 otherwise (Gradio's answers)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope, receive, send):
        self.calls += 1
        status = 200 if scope.get("password") == "right" else 400
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def _post(guard, password: str = "wrong", client: str = "10.0.0.1") -> tuple[int, dict]:
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {**_scope("127.0.0.1", path="/login", method="POST", client=client), "password": password}
    asyncio.run(guard(scope, receive, send))
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start.get("headers", [])}


def test_login_throttle_backs_off_exponentially_per_client_and_resets_on_success():
    now = [1000.0]
    app = _App()
    guard = LoginThrottle(app, free=5, max_wait_s=300, clock=lambda: now[0])
    for _ in range(5):  # the first five wrong passwords are answered at once
        assert _post(guard)[0] == 400
    status, headers = _post(guard)  # the sixth must wait 1 s
    assert status == 429 and headers["retry-after"] == "1" and app.calls == 5  # not checked at all
    assert _post(guard, client="10.0.0.2")[0] == 400  # another client is not held back
    now[0] += 1.0
    assert _post(guard)[0] == 400  # sixth failure: now 2 s
    assert guard.wait_s("10.0.0.1") == pytest.approx(2.0)
    now[0] += 2.0
    assert _post(guard)[0] == 400
    assert guard.wait_s("10.0.0.1") == pytest.approx(4.0)
    for _ in range(20):  # a long attack: capped at max_wait_s
        now[0] += guard.wait_s("10.0.0.1")
        _post(guard)
    assert guard.wait_s("10.0.0.1") == pytest.approx(300.0)
    now[0] += 300.0
    assert _post(guard, password="right")[0] == 200 and guard.wait_s("10.0.0.1") == 0.0  # reset
    assert _post(guard)[0] == 400 and guard.wait_s("10.0.0.1") == 0.0


def test_other_routes_pass_untouched_and_memory_is_bounded():
    app = _App()
    guard = LoginThrottle(app, free=1, max_clients=3, clock=lambda: 0.0)
    for n in range(10):
        _post(guard, client=f"10.0.1.{n}")
    assert len(guard._clients) == 3
    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(guard(_scope("127.0.0.1", path="/config"), None, send))  # a GET: straight through
    assert sent[0]["status"] == 400 and app.calls == 11


def test_host_guard_refuses_a_foreign_host():
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    app = _App()
    asyncio.run(HostGuard(app, ALLOWED)(_scope("evil.example"), receive, send))
    assert sent[0]["status"] == 400 and app.calls == 0
    assert b"evil.example" in sent[1]["body"] and b"--allowed-hosts" in sent[1]["body"]
