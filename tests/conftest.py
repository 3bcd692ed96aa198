"""Shared pytest fixtures: reference key tables and a network-free Hugging Face Hub."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download during tests


def _reference(name: str) -> dict:
    path = REFERENCE_DIR / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: the tests need ../shared/reference beside the checkout")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def dinov3_reference() -> dict:
    return _reference("dinov3_keys.json")


@pytest.fixture(scope="session")
def vggt_reference() -> dict:
    return _reference("vggt_1b_keys.json")
