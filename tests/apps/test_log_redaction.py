"""Secrets out of log lines: ``token=`` values and Authorization credentials become [redacted]."""

from __future__ import annotations

import logging
import logging.config

import pytest

from edgescene.apps.log_redaction import RedactSecrets, redact_secrets, uvicorn_log_config


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '127.0.0.1:5 - "WebSocket /stream?token=abc123&window=4" [accepted]',
            '"WebSocket /stream?token=[redacted]&window=4"',
        ),
        ("GET /jobs?window=4&TOKEN=s3cr%20et HTTP/1.1", "/jobs?window=4&TOKEN=[redacted] HTTP/1.1"),
        ("/stream?x_token=abc#frag", "/stream?x_token=abc#frag"),  # another parameter that ends in 'token'
        ("Authorization: Bearer abcdefghij.klm", "Authorization: Bearer [redacted]"),
        ("authorization basic dXNlcjpwYXNz", "authorization basic [redacted]"),
        ("no secret here", "no secret here"),
    ],
)
def test_redact_secrets(line, expected):
    assert expected in redact_secrets(line)


def test_the_filter_redacts_message_and_arguments_and_keeps_the_record():
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s"', ("1.2.3.4", "GET", "/x?token=t0k3n"), None
    )
    assert RedactSecrets().filter(record) is True
    assert record.getMessage() == '1.2.3.4 - "GET /x?token=[redacted]"'
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "opened /stream?token=t0k3n", None, None)
    RedactSecrets().filter(record)
    assert record.getMessage() == "opened /stream?token=[redacted]"


def test_uvicorn_config_puts_the_filter_on_every_handler():
    pytest.importorskip("uvicorn")
    config = uvicorn_log_config()
    assert config["handlers"] and all("redact_secrets" in h["filters"] for h in config["handlers"].values())
    logging.config.dictConfig(config)  # a valid configuration
    handler = logging.getLogger("uvicorn.access").handlers[0]
    assert any(isinstance(f, RedactSecrets) for f in handler.filters)
