"""Secrets out of the server's logs: a :class:`logging.Filter` that replaces the value of every
``token=`` query parameter and ``Authorization`` credential in a log record with ``[redacted]``.

Browsers cannot set headers on a websocket, so ``/stream`` takes the API token as ``?token=``, and
uvicorn's access log writes every request line, query string included ("WebSocket
/stream?token=... [accepted]"). :func:`uvicorn_log_config` is uvicorn's own logging configuration
with this filter on both of its handlers, so nothing uvicorn or edgescene logs through them shows a
token. Standard library only (the configuration dict is uvicorn's, read at call time).
"""

from __future__ import annotations

import copy
import logging
import re

__all__ = ["REDACTED", "RedactSecrets", "redact_secrets", "uvicorn_log_config"]

REDACTED = "[redacted]"
# token=VALUE in a query string (up to &, whitespace, a quote or '#'), any letter case; and a bearer
# or basic credential after "Authorization:" or on its own
_SECRETS = (
    re.compile(r"(?i)(\btoken=)[^&\s\"'#]+"),
    re.compile(r"(?i)(\bauthorization:?\s*(?:bearer|basic)\s+)\S+"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
)


def redact_secrets(text: str) -> str:
    """``text`` with every token / credential value replaced by :data:`REDACTED`."""
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class RedactSecrets(logging.Filter):
    """Redact secrets in a record's message and in its string arguments (uvicorn passes the request
    line as an argument); always lets the record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_secrets(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_secrets(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact_secrets(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def uvicorn_log_config() -> dict:
    """uvicorn's default logging configuration with :class:`RedactSecrets` on every handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_secrets"] = {"()": RedactSecrets}
    for handler in config.get("handlers", {}).values():
        handler["filters"] = [*handler.get("filters", []), "redact_secrets"]
    return config
