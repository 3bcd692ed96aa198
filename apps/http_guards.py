"""ASGI guards shared by the service and the web app: the Host header, and login throttling.

- :func:`host_allowed`: a request names exactly one Host, ``name`` or ``name:port`` (digits only;
  IPv6 in brackets), and the name is an allowed one. A DNS-rebinding page reaches a server through
  its own domain name, which no allow-list holds; two Host headers, or ``127.0.0.1:evil.example``,
  are refused rather than read one way here and another way by a proxy.
- :class:`HostGuard`: that check as middleware (400, or websocket close 1008).
- :class:`LoginThrottle`: after ``free`` failed logins from one client address, each further attempt
  must wait twice as long as the last (1 s, 2 s, 4 s ... up to ``max_wait_s``); attempts within the
  wait get 429 with ``Retry-After``, without reaching the password check. A success resets the
  client. Failures are recognised by the login route's status (Gradio answers 400 to wrong
  credentials). State is in memory, bounded to ``max_clients`` addresses (the oldest forgotten).

Standard library and Starlette only.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Iterable

from starlette.responses import JSONResponse

__all__ = ["HostGuard", "LoginThrottle", "host_allowed"]

_HOST = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]\s]+))(?::(?P<port>\d{1,5}))?$")


def host_allowed(scope: dict, hosts: Iterable[str]) -> tuple[bool, str]:
    """(allowed, the Host as sent) for an ASGI ``scope``; ``hosts`` holds lower-case names, or ``*``."""
    values = [v.decode("latin-1") for k, v in scope.get("headers") or [] if k.lower() == b"host"]
    shown = ", ".join(values) if values else "(none)"
    if len(values) != 1:
        return False, shown
    match = _HOST.match(values[0].strip())
    if match is None:
        return False, shown
    allowed = set(hosts)
    if "*" in allowed:
        return True, shown
    name = (match.group("v6") or match.group("name") or "").lower()
    return name in allowed, shown


async def _refuse(scope, receive, send, status: int, detail: str, headers: dict | None = None) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
        return
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(scope, receive, send)


class HostGuard:
    """Refuse (400, or websocket close 1008) a request whose Host is not one of ``hosts``."""

    def __init__(self, app, hosts: Iterable[str]) -> None:
        self.app, self.hosts = app, frozenset(h.lower() for h in hosts)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        ok, host = host_allowed(scope, self.hosts)
        if not ok:
            return await _refuse(
                scope, receive, send, 400,
                f"host {host!r} is not served here: open the app by an allowed name (the server's "
                "--allowed-hosts), not through another domain",
            )  # fmt: skip
        return await self.app(scope, receive, send)


class LoginThrottle:
    """Exponential back-off per client address on ``POST paths`` (see the module docstring)."""

    def __init__(
        self,
        app,
        paths: Iterable[str] = ("/login", "/login/"),
        free: int = 5,
        max_wait_s: float = 300.0,
        max_clients: int = 10_000,
        clock=time.monotonic,
    ) -> None:
        self.app, self.paths = app, frozenset(paths)
        self.free, self.max_wait_s, self.max_clients, self.clock = free, max_wait_s, max_clients, clock
        self._clients: OrderedDict[str, tuple[int, float]] = OrderedDict()  # address -> (failures, not before)

    def wait_s(self, client: str) -> float:
        """Seconds ``client`` must still wait before its next attempt (0: it may try now)."""
        failures, not_before = self._clients.get(client, (0, 0.0))
        return max(0.0, not_before - self.clock()) if failures >= self.free else 0.0

    def _failed(self, client: str) -> None:
        failures, _ = self._clients.pop(client, (0, 0.0))
        failures += 1
        wait = min(self.max_wait_s, 2.0 ** (failures - self.free)) if failures >= self.free else 0.0
        self._clients[client] = (failures, self.clock() + wait)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.wait_s(client)
        if wait > 0:
            retry = max(1, round(wait))
            return await _refuse(
                scope, receive, send, 429,
                f"too many failed logins from this address; wait {retry} s before the next attempt",
                headers={"Retry-After": str(retry)},
            )  # fmt: skip
        status = 0

        async def watched(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watched)
        if 400 <= status < 500:
            self._failed(client)
        elif 200 <= status < 400:
            self._clients.pop(client, None)
