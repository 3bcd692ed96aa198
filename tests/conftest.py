"""Shared pytest fixtures: reference key tables and a network-free Hugging Face Hub."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# The official checkpoints' key/shape tables, copied into the repository so a plain clone tests itself.
REFERENCE_DIR = Path(__file__).resolve().parent / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download during tests


def _reference(name: str) -> dict:
    path = REFERENCE_DIR / name
    if not path.is_file():
        pytest.fail(f"{path} is missing from the checkout (tests/data holds the official key tables)")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def dinov3_reference() -> dict:
    return _reference("dinov3_keys.json")


@pytest.fixture(scope="session")
def vggt_reference() -> dict:
    return _reference("vggt_1b_keys.json")


@pytest.fixture
def trt_stand_ins(monkeypatch):
    """tensorrt and cuda-python stand-ins computing on the host (tests/trt_stand_ins.py)."""
    import trt_stand_ins

    return trt_stand_ins.install(monkeypatch)


@pytest.fixture(scope="module")
def one_thread():
    """The tiny models gain nothing from threads, and threads make them crawl on a shared, busy CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
