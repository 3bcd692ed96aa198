"""``edgescene view``: a reconstruction folder in the browser (viser), or the map of a video that a
running ``edgescene serve`` reconstructs, growing as its ``/stream`` previews arrive; until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import time


def add_view_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "path",
        help="a folder written by `edgescene reconstruct`; with --stream, a video, an image or a folder of images "
        "to send to the service",
    )
    p.add_argument("--host", default="127.0.0.1", help="address the viewer listens on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8080, help="the viewer's port (default: 8080)")
    p.add_argument(
        "--stream",
        metavar="URL",
        help="the /stream of a running `edgescene serve` (ws://HOST:PORT/stream, or HOST:PORT): PATH is sent "
        "there frame by frame and the map grows in the viewer from the service's previews",
    )
    p.add_argument("--model", help="with --stream: a model name from the service's /models (default: its default)")
    p.add_argument("--window", type=int, help="with --stream: keyframes per model call (default: the service's, 8)")
    p.add_argument("--every", type=float, dest="every_s", help="with --stream: a video's frame every this many s")
    p.add_argument("--max-frames", type=int, help="with --stream: stop after this many frames")


def serve_until_interrupted(viewer, what: str) -> None:
    print(f"{what}: open {viewer.url} in a browser; Ctrl-C stops the viewer", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        viewer.stop()


def run_view(args: argparse.Namespace) -> int:
    if args.stream is None:
        if args.model or args.window or args.every_s or args.max_frames:
            raise ValueError("--model, --window, --every and --max-frames go with --stream URL")
        from edgescene.mapping.viewer import view_folder

        serve_until_interrupted(view_folder(args.path, host=args.host, port=args.port), "view")
        return 0
    from edgescene.mapping.stream_client import stream_to_viewer, stream_url
    from edgescene.mapping.viewer import SceneViewer

    # the service's token, when it has one: EDGESCENE_API_TOKEN as for `edgescene serve`
    url = stream_url(args.stream, args.model, args.window, os.environ.get("EDGESCENE_API_TOKEN"))
    viewer = SceneViewer(host=args.host, port=args.port)
    print(f"view: the map grows at {viewer.url}", flush=True)
    try:
        final = stream_to_viewer(url, args.path, viewer, every_s=args.every_s, max_frames=args.max_frames)
    except BaseException:
        viewer.stop()
        raise
    print(
        f"view: {final['frame']} frames streamed, {final['keyframes']} keyframes, {final['windows']} windows, "
        f"{final['points']} points in the service's map",
        flush=True,
    )
    serve_until_interrupted(viewer, "view")
    return 0
