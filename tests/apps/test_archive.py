"""A job's outputs as a streamed zip: every regular file, links left out, the bytes unchanged."""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np

from edgescene.apps.archive import CHUNK, output_files, zip_chunks


def test_the_archive_holds_every_file_byte_for_byte_and_no_link(tmp_path):
    out = tmp_path / "output"
    (out / "depth").mkdir(parents=True)
    (out / "report.json").write_text('{"keyframes": 8}')
    big = np.random.default_rng(0).integers(0, 256, 3 * CHUNK + 123, dtype=np.uint8).tobytes()
    (out / "depth" / "00000.npz").write_bytes(big)
    (out / "empty.txt").write_bytes(b"")
    secret = tmp_path / "secret.txt"
    secret.write_text("server file")
    os.symlink(secret, out / "link.txt")
    os.symlink(tmp_path, out / "up")
    files = output_files(out)
    assert files == [("depth/00000.npz", len(big)), ("empty.txt", 0), ("report.json", 16)]
    chunks = list(zip_chunks(out, files))
    assert len(chunks) >= 4 and max(len(c) for c in chunks) < 2 * CHUNK  # streamed, not one blob
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.testzip() is None and archive.namelist() == ["depth/00000.npz", "empty.txt", "report.json"]
    assert archive.read("depth/00000.npz") == big and archive.read("report.json") == b'{"keyframes": 8}'
    assert all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())


def test_an_empty_folder_is_an_empty_archive(tmp_path):
    assert output_files(tmp_path) == []
    assert zipfile.ZipFile(io.BytesIO(b"".join(zip_chunks(tmp_path)))).namelist() == []
