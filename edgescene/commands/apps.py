"""``edgescene serve`` (the HTTP service) and ``edgescene app`` (the Gradio web app)."""

from __future__ import annotations

import argparse
import errno
import os
import socket
from pathlib import Path


def _require(module: str, extra: str = "apps") -> None:
    try:
        __import__(module)
    except ImportError as exc:
        raise ImportError(f"this command needs {module}: pip install 'edgescene[{extra}]'") from exc


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    p.add_argument("--jobs-dir", type=Path, default=Path("jobs"), help="one folder per job is made here")
    p.add_argument("--models-dir", type=Path, help="artifact folders offered besides the bundled model")
    p.add_argument(
        "--vggt",
        action="append",
        default=[],
        metavar="NAME=SOURCE",
        help="offer a VGGT model as NAME: a Hub id (VGGT-1B=facebook/VGGT-1B, from the Hugging "
        "Face cache or downloaded on first use) or a checkpoint file (VGGT-1B=weights/model.pt), run "
        "by PyTorch (CUDA when present), or a model on a Triton server (VGGT-1B=triton://gpu-box:8001/"
        "vggt_1b_518x518?protocol=grpc), where only the model call leaves this server; repeatable",
    )
    p.add_argument("--max-upload-mb", type=float, default=500.0, help="per request, all files together")
    p.add_argument("--queue-size", type=int, default=4, help="jobs that may wait for a worker (then 429)")
    p.add_argument("--workers", type=int, default=1, help="jobs run at once")
    p.add_argument(
        "--api-token-file",
        type=Path,
        help="a file holding the API token (or set EDGESCENE_API_TOKEN): every endpoint but /health then needs "
        "'Authorization: Bearer <token>' (websockets may pass ?token=)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening beyond the loopback address without an API token (anyone who can reach it can "
        "submit, list and download jobs)",
    )
    p.add_argument(
        "--allowed-hosts",
        default="",
        help="comma-separated host names clients may use besides 127.0.0.1 / localhost (e.g. the server's DNS "
        "name); '*' allows any (defaults to --host when it is not a loopback or wildcard address)",
    )
    p.add_argument("--cors-origins", default="", help="comma-separated browser origins allowed to call the API")
    p.add_argument(
        "--max-job-frames",
        type=int,
        default=3000,
        help="frames one job may decode after sampling: checked at submission, and a hard stop while decoding "
        "a video whose header has no duration (default: 3000)",
    )
    p.add_argument(
        "--rebuild-index",
        action="store_true",
        help="move the job index (JOBS_DIR/jobs.sqlite3) aside and rebuild it from the job folders' job.json "
        "(an unreadable index is rebuilt so on its own, with a warning)",
    )
    p.add_argument(
        "--probe-frames",
        type=int,
        default=30,
        help="a video's first frames decoded at submission, each held to the pixel limit (default: 30)",
    )
    p.add_argument("--max-video-s", type=float, default=3600.0, help="longest video a job accepts (default: 3600)")
    p.add_argument(
        "--stream-models",
        type=int,
        default=2,
        help="(model, window) sessions /stream keeps open; the least recently used is closed (default: 2)",
    )
    p.add_argument("--keep-jobs", type=int, help="keep at most this many done jobs' results (oldest deleted first)")
    p.add_argument(
        "--keep-failed",
        type=int,
        help="keep at most this many failed, cancelled or interrupted jobs "
        "(default: the smaller of --keep-jobs and 10)",
    )
    p.add_argument("--keep-days", type=float, help="delete finished jobs older than this many days")
    p.add_argument("--max-disk-gb", type=float, help="keep the jobs folder under this size (oldest deleted first)")
    p.add_argument(
        "--shutdown-grace-s",
        type=float,
        default=30.0,
        help="on SIGTERM / Ctrl-C, how long a running job may finish before it is marked interrupted (default: 30)",
    )


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def _hosts(args: argparse.Namespace) -> tuple[str, ...]:
    hosts = list(LOOPBACK)
    if args.host not in ("0.0.0.0", "::", *hosts):
        hosts.append(args.host)
    hosts += [h.strip() for h in args.allowed_hosts.split(",") if h.strip()]
    return tuple(dict.fromkeys(hosts))


def _require_free_port(host: str, port: int) -> None:
    """ValueError naming the port and ``--port`` when nothing can listen on ``host:port`` (checked
    the way the servers bind, address reuse on, so a port in TIME_WAIT counts as free)."""
    if not 0 < port < 65536:
        raise ValueError(f"--port {port}: expected a port number from 1 to 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ValueError(
                    f"port {port} on {host} is already in use (another server is listening there); "
                    f"pass a free one with --port, e.g. --port {port + 1 if port < 65535 else 8000}"
                ) from None
            raise ValueError(
                f"cannot listen on {host}:{port} ({exc.strerror}); pass another --host or --port"
            ) from None


def run_serve(args: argparse.Namespace) -> int:
    _require("fastapi")
    _require("uvicorn")
    import uvicorn

    from edgescene.apps.log_redaction import uvicorn_log_config
    from edgescene.apps.service import ServiceConfig, create_app

    pytorch_models = {}
    for item in args.vggt:
        name, sep, source = item.partition("=")
        if not sep or not name or not source:
            raise ValueError(f"--vggt takes NAME=SOURCE (e.g. VGGT-1B=facebook/VGGT-1B), got {item!r}")
        pytorch_models[name] = source
    token = os.environ.get("EDGESCENE_API_TOKEN", "").strip() or None
    if args.api_token_file is not None:
        if not args.api_token_file.is_file():
            raise FileNotFoundError(f"--api-token-file {args.api_token_file} does not exist")
        token = args.api_token_file.read_text().strip() or None
    loopback = _is_loopback(args.host)
    if not loopback and token is None and not args.insecure:
        raise ValueError(
            f"--host {args.host} exposes the service beyond this machine without an API token: set "
            "EDGESCENE_API_TOKEN (or --api-token-file), or pass --insecure to do it anyway"
        )
    config = ServiceConfig(
        jobs_dir=args.jobs_dir,
        models_dir=args.models_dir,
        max_upload_mb=args.max_upload_mb,
        queue_size=args.queue_size,
        workers=args.workers,
        pytorch_models=pytorch_models,
        keep_jobs=args.keep_jobs,
        keep_failed=args.keep_failed,
        keep_days=args.keep_days,
        max_disk_gb=args.max_disk_gb,
        shutdown_grace_s=args.shutdown_grace_s,
        api_token=token,
        allowed_hosts=_hosts(args),
        max_job_frames=args.max_job_frames,
        probe_frames=args.probe_frames,
        rebuild_index=args.rebuild_index,
        max_video_s=args.max_video_s,
        stream_models=args.stream_models,
        cors_origins=tuple(o.strip() for o in args.cors_origins.split(",") if o.strip()),
    )
    _require_free_port(args.host, args.port)  # before anything is printed or opened
    for line in config.summary():
        print(f"edgescene serve: {line}")
    print(f"edgescene serve: API docs at http://{args.host}:{args.port}/docs")
    # websocket messages up to the documented frame limit (+ framing) reach the app, which answers them
    ws_max = int(config.stream_max_frame_mb * 2**20) + 2**20
    uvicorn.run(
        create_app(config),
        host=args.host,
        port=args.port,
        log_level="info",
        log_config=uvicorn_log_config(),  # ?token= of /stream never written to the access log
        ws_max_size=ws_max,
    )
    return 0


def add_app_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="TCP port the web app listens on")
    p.add_argument(
        "--workspace",
        type=Path,
        default=Path("workspace"),
        help="checkpoints, training runs, exported models and reconstructions go here",
    )
    p.add_argument("--models-dir", type=Path, help="more artifact folders to offer for reconstruction")
    p.add_argument(
        "--share",
        action="store_true",
        help="also make a public gradio.live link (needs network; requires --auth or --auth-file)",
    )
    p.add_argument("--auth", help="USER:PASSWORD the app asks for (or EDGESCENE_APP_AUTH)")
    p.add_argument("--auth-file", type=Path, help="a file holding USER:PASSWORD")
    p.add_argument(
        "--allowed-hosts",
        default="",
        help="comma-separated host names browsers may use besides 127.0.0.1 / localhost (e.g. the machine's DNS "
        "name; defaults to --host when it is not a loopback or wildcard address); other names get 400 (DNS "
        "rebinding). With --share any name is allowed (the gradio.live relay's), behind the password",
    )


def _app_auth(args: argparse.Namespace) -> tuple[str, str] | None:
    text = args.auth or os.environ.get("EDGESCENE_APP_AUTH", "").strip() or None
    if args.auth_file is not None:
        if not args.auth_file.is_file():
            raise FileNotFoundError(f"--auth-file {args.auth_file} does not exist")
        text = args.auth_file.read_text().strip()
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or len(password) < 8:
        raise ValueError("the app's credentials are USER:PASSWORD with a password of at least 8 characters")
    return user, password


def run_app(args: argparse.Namespace) -> int:
    auth = _app_auth(args)
    loopback = _is_loopback(args.host)
    if auth is None and (args.share or not loopback):
        where = "a public gradio.live link" if args.share else f"--host {args.host}"
        raise ValueError(
            f"{where} exposes the app (training, export, your files) without a password: pass "
            "--auth USER:PASSWORD or --auth-file FILE"
        )
    _require("gradio")
    from edgescene.apps.webapp import build_app

    if args.models_dir is not None and not args.models_dir.is_dir():
        raise FileNotFoundError(f"--models-dir {args.models_dir} is not a folder")
    from starlette.middleware import Middleware

    from edgescene.apps.http_guards import HostGuard, LoginThrottle

    _require_free_port(args.host, args.port)  # one line, not Gradio's traceback
    demo = build_app(args.workspace, args.models_dir)
    hosts = ("*",) if args.share else _hosts(args)
    print(f"edgescene app: workspace {args.workspace.resolve()}; hosts {', '.join(hosts)}")
    demo.queue(default_concurrency_limit=1).launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        auth=auth,
        allowed_paths=[str(args.workspace.resolve())],
        # a Host allow-list (DNS rebinding) and back-off after failed logins, around Gradio's own app
        app_kwargs={"middleware": [Middleware(HostGuard, hosts=hosts), Middleware(LoginThrottle)]},
    )
    return 0
