"""Send a video to a running ``edgescene serve`` over its ``/stream`` websocket and watch the map grow.

    final = stream_to_viewer("ws://gpu-box:8000/stream", "clip.mp4", SceneViewer(port=8080))

Frames are decoded here and sent one by one as JPEG (quality 95); the service reconstructs them
and answers every frame (``ack``, or ``update`` with every keyframe's camera and a preview of the
map of at most 20,000 points); each ``update`` and the ``final`` message redraw the viewer
(:func:`edgescene.mapping.viewer.apply_stream_message`). Only one frame is in flight at a time,
so memory on both sides stays bounded whatever the video's length. Needs the ``mapping`` extra
(viser brings the ``websockets`` client).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import cv2

from edgescene.runtime.frames import open_frames

JPEG_QUALITY = 95


class StreamError(RuntimeError):
    """The service refused the stream or one of its frames."""


def stream_url(url: str, model: str | None = None, window: int | None = None, token: str | None = None) -> str:
    """``url`` (ws:// or wss://, http(s):// is turned into ws(s)://; a bare host:port gets /stream) with
    the query parameters the service's /stream takes."""
    if "://" not in url:
        url = f"ws://{url}"
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"{url}: expected a ws://, wss://, http:// or https:// address of `edgescene serve`")
    query = dict(parse_qsl(parts.query))
    for key, value in (("model", model), ("window", window), ("token", token)):
        if value is not None:
            query[key] = str(value)
    path = parts.path if parts.path not in ("", "/") else "/stream"
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


def stream_to_viewer(
    url: str,
    source: str | Path | list,
    viewer=None,
    every_s: float | None = None,
    max_frames: int | None = None,
    timeout_s: float = 120.0,
    on_message: Callable[[dict], None] | None = None,
) -> dict:
    """Stream ``source`` (a video, an image folder or a list of images) to the service at ``url``
    (see :func:`stream_url`); show each update in ``viewer`` (a :class:`SceneViewer`, or None).
    ``on_message`` sees every reply. Returns the service's ``final`` message."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
    from websockets.sync.client import connect

    from edgescene.mapping.viewer import apply_stream_message

    frames = open_frames(source, every_s=every_s, max_frames=max_frames)
    ws = None
    try:
        with connect(url, max_size=None, open_timeout=timeout_s, close_timeout=5) as ws:
            for frame in frames:
                ok, jpeg = cv2.imencode(".jpg", frame.rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if not ok:
                    raise StreamError(f"frame {frame.index}: OpenCV could not encode it as JPEG")
                ws.send(jpeg.tobytes())
                reply = json.loads(ws.recv(timeout=timeout_s))
                if on_message is not None:
                    on_message(reply)
                if reply.get("type") == "error":
                    raise StreamError(f"the service refused frame {frame.index} ({frame.source}): {reply['detail']}")
                if viewer is not None:
                    apply_stream_message(viewer, reply)
            ws.send("finish")
            final = json.loads(ws.recv(timeout=timeout_s))
    except ConnectionClosed as exc:  # the service closed it: say why, from the error it sent first
        detail = _pending_error(ws) if ws is not None else None
        reason = detail or f"closed with code {exc.rcvd.code if exc.rcvd else 'none'}"
        raise StreamError(f"{_redacted(url)}: the service ended the stream: {reason}") from exc
    except InvalidStatus as exc:
        raise StreamError(
            f"{_redacted(url)} answered HTTP {exc.response.status_code}: is it `edgescene serve`, and is the "
            "address its /stream?"
        ) from exc
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise StreamError(f"{_redacted(url)}: {exc} (is `edgescene serve` running there?)") from exc
    if on_message is not None:
        on_message(final)
    if final.get("type") != "final":
        raise StreamError(f"the service ended the stream with {final.get('type')!r}: {final.get('detail', final)}")
    if viewer is not None:
        apply_stream_message(viewer, final)
    return final


def _pending_error(ws) -> str | None:
    """The detail of an error message the service sent before closing, if one is still queued."""
    try:
        message = json.loads(ws.recv(timeout=1))
    except Exception:  # noqa: BLE001 - nothing queued (or not JSON): there is no detail to give
        return None
    return message.get("detail") if isinstance(message, dict) else None


def _redacted(url: str) -> str:
    """The address without its token."""
    parts = urlsplit(url)
    query = urlencode([(k, "***" if k == "token" else v) for k, v in parse_qsl(parts.query)])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


__all__ = ["StreamError", "stream_to_viewer", "stream_url"]
