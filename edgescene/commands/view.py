"""``edgescene view OUT_DIR``: a reconstruction folder in the browser (viser), until Ctrl-C."""

from __future__ import annotations

import argparse
import time


def add_view_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recon_dir", help="a folder written by `edgescene reconstruct`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8080)


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
    from edgescene.mapping.viewer import view_folder

    serve_until_interrupted(view_folder(args.recon_dir, host=args.host, port=args.port), "view")
    return 0
