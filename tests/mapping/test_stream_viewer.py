"""The viewer fed by the service: `edgescene view PATH --stream URL` sends a video to a real
`edgescene serve` process over /stream and the map grows in the browser from its previews."""

from __future__ import annotations

import socket

import numpy as np
import pytest

pytest.importorskip("viser")
pytest.importorskip("httpx")

from browser import ARTIFACTS, chromium_page
from service_server import Server

from edgescene.assets import sample_dir
from edgescene.cli import main
from edgescene.mapping.stream_client import StreamError, stream_to_viewer, stream_url
from edgescene.mapping.viewer import SceneViewer, apply_stream_message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stream_url_takes_what_people_type():
    assert stream_url("127.0.0.1:8000") == "ws://127.0.0.1:8000/stream"
    assert stream_url("http://box:8000", model="vggt_1b", window=4) == "ws://box:8000/stream?model=vggt_1b&window=4"
    assert stream_url("https://box/stream?window=2", token="t" * 16) == f"wss://box/stream?window=2&token={'t' * 16}"
    with pytest.raises(ValueError, match="ws://"):
        stream_url("ftp://box:21")


def test_nothing_listening_is_named(tmp_path):
    port = _free_port()
    with pytest.raises(StreamError, match="is `edgescene serve` running there"):
        stream_to_viewer(stream_url(f"127.0.0.1:{port}"), sample_dir() / "sample.mp4", None, max_frames=2, timeout_s=5)
    assert main(["view", str(sample_dir() / "sample.mp4"), "--model", "x"]) == 2  # --model needs --stream


def test_apply_stream_message_ignores_acks_and_draws_updates():
    viewer = SceneViewer(port=_free_port())
    try:
        apply_stream_message(viewer, {"type": "ack", "frame": 1})
        assert viewer.stats.startswith("**0 points**")
        E = np.tile(np.eye(4)[:3], (2, 1, 1))
        K = np.tile(np.array([[100.0, 0, 84], [0, 100, 63], [0, 0, 1]]), (2, 1, 1))
        message = {
            "type": "update",
            "extrinsics": E.tolist(),
            "intrinsics": K.tolist(),
            "image_hw": [126, 168],
            "preview": {"points": np.ones((5, 3)).tolist(), "colors": np.zeros((5, 3), int).tolist(), "every": 1},
        }
        apply_stream_message(viewer, message)
        assert viewer.stats == "**5 points**, 2 keyframes"
        moved = E.copy()
        moved[:, 0, 3] = 1.0  # loop closure moved every camera: the frustums follow
        apply_stream_message(viewer, {**message, "type": "final", "extrinsics": moved.tolist()})
        assert viewer.stats == "**5 points**, 2 keyframes"
        np.testing.assert_allclose(viewer._frustums[1].position, [-1.0, 0.0, 0.0])
    finally:
        viewer.stop()


@pytest.mark.service
@pytest.mark.browser
def test_the_map_grows_in_the_browser_from_the_services_stream(tmp_path):
    (ARTIFACTS / "viewer").mkdir(parents=True, exist_ok=True)
    server = Server(tmp_path / "jobs", tmp_path / "server.log")
    viewer = SceneViewer(port=_free_port())
    counts: list[int] = []
    try:
        with chromium_page() as page:
            page.set_default_timeout(60_000)
            page.goto(viewer.url, wait_until="load")
            page.locator("canvas").first.wait_for()

            def seen(message: dict) -> None:
                if message["type"] in ("update", "final"):
                    counts.append(len(message["preview"]["points"]))

            final = stream_to_viewer(
                stream_url(f"127.0.0.1:{server.port}", window=4),
                sample_dir() / "sample.mp4",
                viewer,
                max_frames=24,
                on_message=seen,
            )
            assert final["type"] == "final" and final["frame"] == 24
            page.get_by_text(f"{len(final['preview']['points'])} points").wait_for()
            page.get_by_text(f"{final['keyframes']} keyframes").wait_for()
            page.wait_for_timeout(1500)  # let the canvas draw
            page.screenshot(path=str(ARTIFACTS / "viewer" / "stream_from_service.png"))
            with pytest.raises(StreamError, match="unknown model 'nope'"):  # what the service said, not a close code
                stream_to_viewer(stream_url(f"127.0.0.1:{server.port}", model="nope"), sample_dir() / "sample.mp4")
    finally:
        viewer.stop()
        server.stop_cleanly(tmp_path / "server.log")
    assert len(counts) >= 4 and counts[-1] > counts[0]  # it grew, window after window
    assert len(final["intrinsics"]) == final["keyframes"] and final["image_hw"] == [126, 168]
