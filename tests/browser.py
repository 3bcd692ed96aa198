"""Debian's Chromium driven by Playwright for the browser tests (never a downloaded browser)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("EDGESCENE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
# Chromium on a closed network: no background connections, no sandbox (root in CI), software GL.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]


@contextmanager
def chromium_page(width: int = 1400, height: int = 1100) -> Iterator:
    """A Playwright page in headless Chromium; skips (fails in CI) where Chromium is absent."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        reason = "Debian's chromium is not installed (make test installs it with apt where it can)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must run the browser test")
        pytest.skip(reason)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_context(viewport={"width": width, "height": height}).new_page()
        finally:
            browser.close()
