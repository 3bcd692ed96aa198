"""The live viewer in a real browser (Debian's Chromium through Playwright): the canvas appears, the
point count grows as the map does, a reconstruction's windows reach it as they are fused, and
`edgescene view` serves a finished folder; screenshots go to test-artifacts/viewer/."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("viser")

from browser import ARTIFACTS, chromium_page

from edgescene.assets import default_model_dir, sample_dir
from edgescene.mapping.viewer import SceneViewer
from edgescene.runtime.outputs import thumbnail
from edgescene.runtime.reconstruct import ReconstructConfig, reconstruct_to_folder

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cameras(n: int) -> tuple[np.ndarray, np.ndarray]:
    extrinsics = np.tile(np.eye(4)[:3], (n, 1, 1))
    extrinsics[:, 0, 3] = -0.3 * np.arange(n)  # a sideways walk
    intrinsics = np.tile(np.array([[150.0, 0, 84], [0, 150, 63], [0, 0, 1]]), (n, 1, 1))
    return extrinsics, intrinsics


def test_the_point_count_grows_in_the_browser():
    (ARTIFACTS / "viewer").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    viewer = SceneViewer(port=_free_port())
    try:
        with chromium_page() as page:
            page.set_default_timeout(60_000)
            page.goto(viewer.url, wait_until="load")
            page.locator("canvas").first.wait_for()
            points = rng.normal(size=(1000, 3)) + [0, 0, 5]
            extrinsics, intrinsics = _cameras(3)
            thumbs = [thumbnail(rng.integers(0, 255, (126, 168, 3), dtype=np.uint8)) for _ in range(3)]
            viewer.update(
                points, rng.integers(0, 255, (1000, 3)), np.ones(1000), extrinsics, intrinsics, (126, 168), thumbs
            )
            page.get_by_text("1000 points").wait_for()
            more = np.concatenate((points, rng.normal(size=(4000, 3)) + [1, 0, 6]))
            extrinsics, intrinsics = _cameras(6)
            viewer.update(more, rng.integers(0, 255, (5000, 3)), rng.random(5000), extrinsics, intrinsics, (126, 168))
            page.get_by_text("5000 points").wait_for()
            assert "6 keyframes" in viewer.stats
            assert page.locator("canvas").count() >= 1
            page.screenshot(path=str(ARTIFACTS / "viewer" / "grows.png"))
    finally:
        viewer.stop()


def test_a_reconstruction_feeds_the_viewer_window_by_window(tmp_path):
    viewer = SceneViewer(port=_free_port())
    counts: list[int] = []

    def on_window(update: dict) -> None:
        counts.append(len(update["points"]))
        viewer.update(**update)

    try:
        reconstruct_to_folder(
            sample_dir() / "sample.mp4",
            default_model_dir(),
            tmp_path / "rec",
            ReconstructConfig(),
            progress=False,
            on_window=on_window,
        )
        assert len(counts) >= 4 and counts == sorted(counts) and counts[0] > 0  # it grew, window by window
        assert viewer.stats.startswith(f"**{counts[-1]} points**") and "32 keyframes" in viewer.stats
        with chromium_page() as page:
            page.goto(viewer.url, wait_until="load")
            page.get_by_text(f"{counts[-1]} points").wait_for(timeout=60_000)
            page.wait_for_timeout(2000)  # the client fades the scene in
            page.screenshot(path=str(ARTIFACTS / "viewer" / "sample_video.png"))
    finally:
        viewer.stop()


def test_edgescene_view_serves_a_folder_until_interrupted(tmp_path):
    report = reconstruct_to_folder(
        sample_dir() / "sample.mp4",
        default_model_dir(),
        tmp_path / "rec",
        ReconstructConfig(max_frames=12),
        progress=False,
    )
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgescene", "view", str(tmp_path / "rec"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ},
    )
    try:
        line = ""
        while "view: open" not in line:  # viser prints its own banner first
            line = proc.stdout.readline()
            assert line, "edgescene view exited before serving"
        assert f"http://127.0.0.1:{port}" in line
        with chromium_page() as page:
            page.goto(f"http://127.0.0.1:{port}", wait_until="load")
            page.get_by_text(f"{report['points']} points").wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "viewer" / "view_folder.png"))
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    bad = subprocess.run(
        [sys.executable, "-m", "edgescene", "view", str(tmp_path / "nothing")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "written by `edgescene reconstruct`" in bad.stderr
