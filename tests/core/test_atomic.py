"""Tests for edgescene.core.atomic: the one atomic file writer, with real files."""

from __future__ import annotations

import os
import stat
import threading

import numpy as np
import pytest

from edgescene.core import atomic
from edgescene.core.atomic import atomic_write, atomic_write_bytes, atomic_write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- writing


def test_bytes_written_and_path_returned(tmp_path):
    target = tmp_path / "a.bin"
    assert atomic_write_bytes(target, b"\x00\x01payload") == target
    assert target.read_bytes() == b"\x00\x01payload"
    assert _names(tmp_path) == ["a.bin"]


def test_text_written_utf8_with_unix_newlines(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(str(target), "grüße\nline two\n")
    assert target.read_bytes() == "grüße\nline two\n".encode()


def test_buffers_written(tmp_path):
    atomic_write_bytes(tmp_path / "m", memoryview(b"view"))
    atomic_write_bytes(tmp_path / "n", np.arange(4, dtype=np.uint8))
    assert (tmp_path / "m").read_bytes() == b"view"
    assert (tmp_path / "n").read_bytes() == bytes([0, 1, 2, 3])


def test_context_manager_takes_writers_that_want_a_file(tmp_path):
    target = tmp_path / "arrays.npz"
    with atomic_write(target) as f:
        np.savez(f, depth=np.ones((2, 3), np.float32))
    with np.load(target) as data:
        np.testing.assert_array_equal(data["depth"], np.ones((2, 3), np.float32))
    assert _names(tmp_path) == ["arrays.npz"]  # np.savez appended no ".npz" to a temp name


def test_target_replaced(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old content, longer than the new one")
    with atomic_write(target, "w") as f:
        f.write("new")
    assert target.read_text() == "new"
    assert _names(tmp_path) == ["a.json"]


def test_temp_file_is_hidden_beside_the_target_until_the_block_ends(tmp_path):
    target = tmp_path / "model.engine"
    target.write_bytes(b"old")
    with atomic_write(target) as f:
        f.write(b"new")
        temps = [n for n in _names(tmp_path) if n != "model.engine"]
        assert len(temps) == 1
        assert temps[0].startswith(".model.engine.") and temps[0].endswith(".tmp")
        assert target.read_bytes() == b"old"  # nothing visible before the rename
    assert target.read_bytes() == b"new"


def test_fsync_before_replace(tmp_path, monkeypatch):
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    atomic_write_bytes(tmp_path / "a", b"x")
    assert calls == ["fsync", "replace"]


def test_long_name(tmp_path):
    target = tmp_path / ("ü" * 120 + ".json")  # 245 bytes: the temp name must be cut to fit
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}"
    assert _names(tmp_path) == [target.name]


# ----------------------------------------------------------------------------- failures


@pytest.mark.parametrize("exc", [RuntimeError("writer failed"), KeyboardInterrupt()])
def test_failure_mid_write_keeps_old_target_and_no_temp(tmp_path, exc):
    target = tmp_path / "checkpoint.pt"
    old = os.urandom(4096)
    target.write_bytes(old)
    with pytest.raises(type(exc)), atomic_write(target) as f:
        f.write(b"half of the new ")
        raise exc
    assert target.read_bytes() == old
    assert _names(tmp_path) == ["checkpoint.pt"]


@pytest.mark.parametrize("exc", [ValueError("bad"), KeyboardInterrupt()])
def test_failure_without_old_target_leaves_nothing(tmp_path, exc):
    with pytest.raises(type(exc)), atomic_write(tmp_path / "new.txt", "w") as f:
        f.write("partial")
        raise exc
    assert _names(tmp_path) == []


def test_failing_rename_removes_temp(tmp_path):
    (tmp_path / "taken").mkdir()  # a folder in the way: os.replace refuses
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "taken", b"data")
    assert _names(tmp_path) == ["taken"] and _names(tmp_path / "taken") == []


def test_missing_folder_named_in_error(tmp_path):
    target = tmp_path / "no" / "such" / "out.json"
    with pytest.raises(FileNotFoundError, match=r"folder .*no[/\\]such does not exist"):
        atomic_write_text(target, "{}")
    assert not (tmp_path / "no").exists()


def test_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        atomic_write_bytes(tmp_path / "file" / "out.bin", b"")


def test_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        atomic_write("x", "ab")


# ----------------------------------------------------------------------------- permissions


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_permissions_follow_umask_not_mkstemp(tmp_path, umask_022):
    target = tmp_path / "config.pbtxt"
    atomic_write_text(target, "name: 'm'")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    target.chmod(0o600)  # a replaced file gets a new file's mode, not the old one's
    atomic_write_text(target, "name: 'n'")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_permissions_under_a_stricter_umask(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write_bytes(tmp_path / "private", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600


# ----------------------------------------------------------------------------- readers


def test_concurrent_reader_never_sees_a_partial_file(tmp_path):
    target = tmp_path / "report.json"
    versions = [bytes([i]) * 200_000 for i in range(1, 4)]
    target.write_bytes(versions[0])
    stop = threading.Event()
    reads, bad = [0], []

    def read() -> None:
        while not stop.is_set():
            data = target.read_bytes()
            reads[0] += 1
            if data not in versions:
                bad.append(len(data))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for k in range(60):
            atomic_write_bytes(target, versions[k % len(versions)])
    finally:
        stop.set()
        reader.join()
    assert reads[0] > 0 and bad == []
    assert _names(tmp_path) == ["report.json"]
