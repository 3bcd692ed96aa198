"""The HTTP service (``edgescene serve``): reconstruction jobs over a REST API, and a live stream.

    POST   /jobs                       upload images or one video (multipart field ``files``) -> 202 + job id
    GET    /jobs, /jobs/{id}           status and progress of jobs
    DELETE /jobs/{id}                  cancel a queued or running job
    GET    /jobs/{id}/files/{path}     download an output: scene.glb, points.ply, cameras.json, report.json, ...
    WS     /stream                     push encoded frames (JPEG/PNG bytes) one by one, get the running map back
    GET    /health, /models            liveness; the models served, with their artifact metadata

Rejections carry a JSON ``detail`` naming the problem and the fix: 413 (upload over the size limit),
415 (not an image / video the runtime reads, checked by name and content), 429 (queue full),
400 / 422 (bad options), 404 (unknown job, or a file outside the job's output folder).
The service is a thin layer over :mod:`edgescene.runtime` (reconstruct_to_folder for jobs; the live
stream runs :func:`~edgescene.runtime.reconstruct.run` with a sink that answers the client,
:mod:`edgescene.apps.live_stream`).
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.util
import json
import logging
import math
import os
import shutil
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal
from urllib.parse import unquote_to_bytes

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field

from edgescene import __version__
from edgescene.apps.archive import output_files, zip_chunks
from edgescene.apps.http_guards import host_allowed
from edgescene.apps.jobs import JobManager, QueueFull, Retention, new_job_id
from edgescene.apps.live_stream import LiveRun
from edgescene.apps.memory import release_memory
from edgescene.apps.metric_inputs import save_calibration, scale_option
from edgescene.apps.models_catalog import default_window, find_model, frame_size_check, list_models
from edgescene.apps.stream_models import StreamModels, StreamModelsBusy
from edgescene.apps.uploads import (
    UploadError,
    UploadTooLarge,
    check_decodable,
    check_kinds,
    client_name,
    kind_of,
    resolve_inside,
    safe_name,
    save_stream,
)
from edgescene.assets import DEFAULT_MODEL
from edgescene.runtime.backends.triton import is_triton_url, parse_triton_url
from edgescene.runtime.calibration import Calibration, parse_calibration
from edgescene.runtime.metric import check_input_kind
from edgescene.runtime.outputs import redact_paths
from edgescene.runtime.positions import parse_scale_source
from edgescene.runtime.reconstruct import ReconstructConfig, Reconstructor
from edgescene.runtime.session import is_hub_id

log = logging.getLogger(__name__)

STREAM_RETRY_AFTER_S = 5  # what a /stream client refused for want of a free model session is told


@dataclass(frozen=True)
class ServiceConfig:
    """Options of ``edgescene serve`` (validated)."""

    jobs_dir: Path = Path("jobs")
    models_dir: Path | None = None  # artifact folders offered besides the bundled model
    pytorch_models: dict[str, str] = field(default_factory=dict)  # name -> Hub id, checkpoint or triton:// address
    max_upload_mb: float = 500.0  # per request, all files together
    max_files: int = 500
    queue_size: int = 4  # jobs waiting for a worker
    workers: int = 1  # jobs run at once
    stream_max_frame_mb: float = 20.0  # one encoded frame on /stream
    keep_jobs: int | None = None  # retention of finished jobs: count, age, disk (None: unbounded)
    keep_failed: int | None = None  # unsuccessful jobs' own count (None: the smaller of keep_jobs and 10)
    keep_days: float | None = None
    max_disk_gb: float | None = None
    shutdown_grace_s: float = 30.0  # on SIGTERM / SIGINT: how long a running job may finish
    api_token: str | None = field(default=None, repr=False)  # every endpoint but /health needs it when set
    stream_models: int = 2  # (model, window) sessions /stream keeps open (least recently used closed first)
    stream_concurrency: int | None = None  # stream frames processed at once (None: one per CPU core)
    max_job_frames: int = 3000  # frames one job may decode (after every_s / max_frames): 413 at submission
    # from the header, and a hard stop while decoding (a video whose header has no duration)
    probe_frames: int = 30  # a video's first frames decoded at submission (each held to the pixel limit)
    rebuild_index: bool = False  # move jobs.sqlite3 aside and rebuild it from the job folders' job.json
    max_video_s: float = 3600.0  # the longest video a job accepts (from its header)
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1", "testserver")  # Host header (DNS rebinding)
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API (none by default)

    def summary(self) -> list[str]:
        """What the server will do, in a few readable lines (never the token)."""

        def bound(value, unit: str = "") -> str:
            return "unbounded" if value is None else f"{value:g}{unit}"

        failed = Retention(self.keep_jobs, keep_failed=self.keep_failed).failed_bound
        models = "the bundled model"
        if self.models_dir is not None:
            models += f", the artifacts in {self.models_dir}"
        if self.pytorch_models:
            models += f", {', '.join(self.pytorch_models)}"
        return [
            f"jobs in {self.jobs_dir} (queue {self.queue_size}, {self.workers} worker(s)); models: {models}",
            f"limits: uploads {self.max_upload_mb:g} MiB and {self.max_files} files, videos {self.max_video_s:g} s and "
            f"{self.max_job_frames} frames, {self.probe_frames} frames probed at submission",
            f"retention: done jobs {bound(self.keep_jobs)}, failed {bound(failed)}, "
            f"age {bound(self.keep_days, ' days')}, disk {bound(self.max_disk_gb, ' GB')}",
            f"access: API token {'required' if self.api_token else 'not set'}; hosts {', '.join(self.allowed_hosts)}"
            + (f"; CORS origins {', '.join(self.cors_origins)}" if self.cors_origins else ""),
            f"/stream: {self.stream_models} model session(s), frames up to {self.stream_max_frame_mb:g} MiB",
        ]

    def __post_init__(self) -> None:
        object.__setattr__(self, "jobs_dir", Path(self.jobs_dir))
        if self.models_dir is not None:
            object.__setattr__(self, "models_dir", Path(self.models_dir))
            if not self.models_dir.is_dir():
                raise ValueError(f"models_dir {self.models_dir} is not a folder; create it or leave it out")
        for name, source in self.pytorch_models.items():
            if not name or "/" in name or name == DEFAULT_MODEL:
                raise ValueError(f"model name {name!r} must be non-empty, without '/', and not {DEFAULT_MODEL!r}")
            if is_triton_url(source):
                parse_triton_url(source)  # ValueError naming what is wrong with the address
            elif not (is_hub_id(source) or Path(source).is_file()):
                raise ValueError(
                    f"--vggt {name}={source}: neither a Hub id (facebook/VGGT-1B), a checkpoint file nor a "
                    "Triton model (triton://host:port/model)"
                )
        Retention(self.keep_jobs, self.keep_days, self.max_disk_gb, self.keep_failed)  # validates them
        if self.api_token is not None and len(self.api_token.strip()) < 16:
            raise ValueError("the API token must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        if self.max_job_frames < 1 or self.probe_frames < 1:
            raise ValueError(
                f"max_job_frames and probe_frames must be >= 1, got {self.max_job_frames} and {self.probe_frames}"
            )
        if not self.shutdown_grace_s >= 0:
            raise ValueError(f"shutdown_grace_s must be >= 0, got {self.shutdown_grace_s}")
        for name in ("max_upload_mb", "stream_max_frame_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_files", "queue_size", "workers", "stream_models", "max_job_frames"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


# ----------------------------------------------------------------------------- response schemas


class JobIndex(BaseModel):
    """What start-up found when it made the job index and the job folders agree."""

    reindexed: int  # jobs whose row was missing, restored from their folder's job.json
    lost: int  # rows whose folder is gone (marked lost)
    orphans: int  # folders that are no job's (left as they are)
    rebuilt: bool  # the database was unreadable (or --rebuild-index): moved aside and rebuilt


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    queued: int
    running: int
    queue_capacity: int
    workers: int
    job_index: JobIndex


class ModelInfo(BaseModel):
    name: str
    usable: bool
    bundled: bool
    family: str | None = None
    preset: str | None = None
    format: str | None = None
    precision: str | None = None
    backend: str | None = None
    input_size: dict[str, int] | None = None
    frames: dict[str, int] | None = None
    accepted: bool | None = None
    created_utc: str | None = None
    source: str | None = None  # PyTorch models: the Hub id or the checkpoint's file name
    error: str | None = None


class JobInfo(BaseModel):
    id: str
    kind: str
    model: str
    config: dict
    status: Literal["queued", "running", "done", "failed", "cancelled", "interrupted", "lost"]
    progress: float = Field(description="0..1 of the run; 1.0 only once the outputs are written")
    stage: str | None = Field(
        description="a running job's stage: opening, reconstructing, finishing, closing loops, metric scale, writing; "
        "null when it is not running"
    )
    eta_s: float | None = Field(description="a running job's seconds left, from its first model call on")
    frames_seen: int
    frames_expected: int | None
    message: str
    created: float
    started: float | None
    finished: float | None
    outputs: list[str]
    error: str | None
    files_url: str


class Problem(BaseModel):
    detail: str


ERRORS = {
    status: {"model": Problem, "description": text}
    for status, text in {
        400: "bad request (e.g. a video together with images, unknown model)",
        404: "unknown job or file",
        409: "the job has not finished: no outputs yet",
        413: "upload over the size limit",
        415: "unsupported file type",
        429: "the job queue is full: retry later",
    }.items()
}


def _job_info(job) -> JobInfo:
    return JobInfo(**job.for_client(), files_url=f"/jobs/{job.id}/files/")


DOCS_ASSETS = "/docs-assets"  # swagger-ui and redoc files, served from the installed package
TOKEN_DOCS = (
    "\n\nThis server needs its API token: press **Authorize** and enter the token (Swagger sends it as "
    "`Authorization: Bearer <token>`). The pages and the schema are public; every call they make needs the token."
)


def _declare_bearer(app: FastAPI) -> None:
    """The OpenAPI schema says every operation needs a bearer token, so Swagger UI shows Authorize."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["token"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "the server's API token (EDGESCENE_API_TOKEN)",
            }
            schema["security"] = [{"token": []}]
            for path in _TokenAuth.OPEN:  # the public routes say so
                for operation in schema.get("paths", {}).get(path, {}).values():
                    operation["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class _TokenAuth:
    """ASGI middleware: with an API token set, every request but ``GET /health`` and the API docs
    (their pages, assets and schema: public, so a browser can open them and authorise there) needs
    ``Authorization: Bearer <token>`` (401 otherwise); a websocket may pass it as ``?token=``
    instead (browsers cannot set headers on a websocket). Compared in constant time."""

    OPEN = frozenset({"/health", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})

    def __init__(self, app, token: str) -> None:
        self.app, self.token = app, token.encode()

    def _presented(self, scope) -> bytes:
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            return auth[7:].strip()
        if scope["type"] == "websocket":
            for part in scope.get("query_string", b"").split(b"&"):
                key, _, value = part.partition(b"=")
                if key == b"token":
                    return unquote_to_bytes(value)
        return b""

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if (
            scope["type"] not in ("http", "websocket")
            or path in self.OPEN
            or (path.startswith(DOCS_ASSETS + "/") and ".." not in path)
        ):
            return await self.app(scope, receive, send)
        if hmac.compare_digest(self._presented(scope), self.token):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong API token"})
            return None
        response = JSONResponse(
            {"detail": "missing or wrong API token: send 'Authorization: Bearer <token>'"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        return await response(scope, receive, send)


class _Guard:
    """ASGI middleware: Host must be an allowed name (a DNS-rebinding page cannot reach the service
    through its own domain); a browser ``Origin`` must be the service itself or a CORS origin (a
    foreign page can neither open ``/stream`` nor post a form to ``/jobs``); responses carry
    ``nosniff``, a CSP (the API docs work offline) and ``no-store`` on job data."""

    CSP = (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:"  # redoc renders in a worker made from a blob
    )

    def __init__(self, app, hosts: tuple[str, ...], origins: tuple[str, ...]) -> None:
        self.app, self.hosts, self.origins = app, {h.lower() for h in hosts}, set(origins)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        ok, shown = host_allowed(scope, self.hosts)  # exactly one Host, name[:digits], an allowed name
        if not ok:
            return await self._refuse(
                scope, receive, send, 400, f"host {shown!r} is not served here: use an allowed name (--allowed-hosts)"
            )
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get("host", "")
        origin = headers.get("origin")
        own = {f"http://{host}", f"https://{host}"}
        unsafe = scope["type"] == "websocket" or scope.get("method") not in ("GET", "HEAD", "OPTIONS")
        if origin and unsafe and origin not in own and origin not in self.origins:
            return await self._refuse(scope, receive, send, 403, f"requests from origin {origin!r} are not allowed")

        async def secured(message):
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", self.CSP.encode())]
                if scope["path"].startswith("/jobs"):
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return await self.app(scope, receive, secured)

    @staticmethod
    async def _refuse(scope, receive, send, status: int, detail: str):
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
            return None
        return await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)


class _BodyLimit:
    """ASGI middleware: POST /jobs bodies over the limit are refused with 413 as soon as they are seen
    (by Content-Length, or while they stream in), before anything is parsed or stored."""

    def __init__(self, app, limit_bytes: int) -> None:
        self.app, self.limit = app, limit_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/jobs":
            return await self.app(scope, receive, send)
        slack = 1 << 20  # multipart framing around the files
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit + slack:
            return await _problem(
                scope,
                receive,
                send,
                413,
                f"upload of {int(length) / 2**20:.1f} MiB is over the limit of "
                f"{self.limit / 2**20:.0f} MiB; send fewer or smaller files",
            )
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit + slack:  # an HTTPException passes FastAPI's body parsing unchanged
                raise HTTPException(
                    413, f"upload over the limit of {self.limit / 2**20:.0f} MiB; send fewer or smaller files"
                )
            return message

        return await self.app(scope, counted, send)


async def _problem(scope, receive, send, status: int, detail: str) -> None:
    await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)


def create_app(config: ServiceConfig = ServiceConfig()) -> FastAPI:
    """The FastAPI application; its job workers start with it."""
    jobs = JobManager(
        config.jobs_dir,
        queue_size=config.queue_size,
        workers=config.workers,
        retention=Retention(config.keep_jobs, config.keep_days, config.max_disk_gb, config.keep_failed),
        max_frames=config.max_job_frames,
        rebuild_index=config.rebuild_index,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.to_thread(jobs.shutdown, config.shutdown_grace_s)  # SIGTERM: running jobs may finish

    # the API docs (/docs, /redoc) from swagger-ui and redoc assets installed with fastapi-offline
    # (FastAPI's own pages load them from a CDN, which the CSP blocks and an offline server cannot reach)
    app = FastAPIOffline(
        title="edgescene",
        version=__version__,
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
        description="3D reconstruction of images and video with VGGT: jobs, downloads and a live stream."
        + (TOKEN_DOCS if config.api_token else ""),
    )
    if config.api_token:
        _declare_bearer(app)
    app.state.jobs, app.state.config = jobs, config
    app.add_middleware(_BodyLimit, limit_bytes=config.max_upload_bytes)
    if config.api_token:
        app.add_middleware(_TokenAuth, token=config.api_token)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(_Guard, hosts=config.allowed_hosts, origins=config.cors_origins)  # added last: runs first

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(400)
    async def bad_request(request: Request, exc):
        """Starlette's bare "Invalid multipart data." said neither what nor how to fix it."""
        detail = getattr(exc, "detail", None) or "bad request"
        if detail == "Invalid multipart data.":
            detail = (
                "the upload's multipart body could not be read: a part's header (a file name of thousands of "
                "characters) is over the parser's limit, or the body is malformed; send each file in the 'files' "
                "field of a multipart/form-data body, with a name under 255 characters"
            )
        return JSONResponse({"detail": detail}, status_code=400, headers=getattr(exc, "headers", None))

    @app.exception_handler(405)
    async def method_not_allowed(request: Request, exc):
        """Allow lists every method of the path (Starlette names only the first matching route's)."""
        allowed = set()
        for route in app.router.routes:
            match, _ = route.matches({**request.scope, "method": "GET"}) if hasattr(route, "methods") else (None, None)
            if match is not None and match.name != "NONE" and route.methods:
                allowed |= route.methods
        allow = ", ".join(sorted(allowed))
        return JSONResponse(
            {"detail": f"method {request.method} is not allowed here; use {allow}"},
            status_code=405,
            headers={"Allow": allow},
        )

    @app.get("/health", response_model=Health)
    async def health() -> Health:  # on the event loop: never queued behind busy worker threads
        return Health(
            status="ok",
            version=__version__,
            queued=jobs.store.count("queued"),
            running=jobs.store.count("running"),
            queue_capacity=config.queue_size,
            workers=config.workers,
            job_index=JobIndex(**jobs.index_report.summary()),
        )

    @app.get("/models", response_model=list[ModelInfo])
    def models() -> list[ModelInfo]:
        return [
            ModelInfo(name=e.name, **{"bundled": False, "usable": False, **e.info})
            for e in list_models(config.models_dir, config.pytorch_models)
        ]

    @app.post("/jobs", status_code=202, response_model=JobInfo, responses=ERRORS)
    def submit(
        files: list[UploadFile] = File(..., description="one video, or one or more images"),
        model: str | None = Form(None, description="a name from /models (default: the bundled model)"),
        every_s: float | None = Form(None, gt=0, description="video: keep one frame every this many seconds"),
        max_frames: int | None = Form(None, ge=1, description="stop after this many frames"),
        conf_percentile: float = Form(50.0, ge=0, le=100, description="drop the less confident points"),
        branch: Literal["depth", "points"] = Form("depth"),
        window: int | None = Form(
            None, ge=2, description="keyframes per model call (default: 8, or fewer where the model serves fewer)"
        ),
        loop_closure: bool = Form(
            False, description="correct drift where the video revisits a place (needs the mapping extra: GTSAM)"
        ),
        intrinsics: UploadFile | None = File(
            None,
            description='known intrinsics, JSON in pixels of the sent frames: {"fx", "fy", "cx", "cy"} or {"K": 3x3}, '
            'or per image {"name.jpg": {"intrinsics": 3x3}} (docs/runtime.md, Known intrinsics)',
        ),
        scale_from: str | None = Form(
            None,
            description="outputs in metres from: exif (GPS in the photos), baseline:METRES[@A,B], gps (with a GPX or "
            "CSV 'track') or poses (with a TUM 'track') (docs/runtime.md, Metric scale)",
        ),
        track: UploadFile | None = File(None, description="the GPS track (scale_from=gps) or poses (scale_from=poses)"),
        gps_offset_s: float = Form(0.0, description="seconds added to each frame's time before matching the track"),
    ) -> JobInfo:
        if len(files) > config.max_files:
            raise UploadError(f"{len(files)} files is more than the limit of {config.max_files}; send fewer images")
        if not jobs.has_room():
            raise HTTPException(
                429,
                f"the queue is full ({config.queue_size} jobs waiting); retry when one has finished",
                headers={"Retry-After": "10"},
            )
        if every_s is not None and not math.isfinite(every_s):
            raise HTTPException(422, f"every_s must be a finite number of seconds, got {every_s}")
        if not math.isfinite(gps_offset_s):
            raise HTTPException(422, f"gps_offset_s must be a finite number of seconds, got {gps_offset_s}")
        if loop_closure and importlib.util.find_spec("gtsam") is None:
            raise HTTPException(
                422, "loop_closure needs GTSAM, which this server lacks: install 'edgescene[mapping]' or send it off"
            )
        try:
            entry = find_model(config.models_dir, model, pytorch_models=config.pytorch_models)
            frames = entry.info.get("frames") or {}
            if window is None:  # an export made for 4 frames runs windows of 4
                window = default_window(frames)
            if frames and not int(frames["min"]) <= window <= int(frames["max"]):
                raise HTTPException(
                    422,
                    f"window {window} is outside what model {entry.name!r} takes per call "
                    f"({frames['min']}..{frames['max']} frames); send window={min(max(window, 2), int(frames['max']))}",
                )
            options = ReconstructConfig(
                every_s=every_s,
                max_frames=max_frames,
                conf_percentile=conf_percentile,
                branch=branch,
                window=window,
                overlap=min(2, window - 1),
                loop_closure=loop_closure,
            )
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        check_size = frame_size_check(entry, options.mode)
        job_id = new_job_id()
        inputs = jobs.input_dir(job_id)
        inputs.mkdir(parents=True)
        try:
            kinds, used, saved = [], 0, []
            for i, upload in enumerate(files):
                head = upload.file.read(16)
                upload.file.seek(0)
                kinds.append(kind_of(upload.filename or "", head))
                target = inputs / safe_name(upload.filename or "", i)
                used += save_stream(upload.file, target, config.max_upload_bytes, used)
                saved.append(target)
            kind = check_kinds(kinds)
            if kind == "images" and every_s is not None:
                raise UploadError("every_s samples videos only; for images use max_frames")
            renames = {Path(u.filename or "").name: p.name for u, p in zip(files, saved, strict=True)}
            given = save_calibration(intrinsics.file, jobs.folder(job_id), renames) if intrinsics is not None else None
            scale = scale_option(
                scale_from, track.file if track is not None else None, (track.filename or "") if track else "",
                jobs.folder(job_id), gps_offset_s,
            )  # fmt: skip
            if scale is not None:
                try:  # an EXIF source for a video, or a GPS track for photos: refused now, not after the run
                    check_input_kind(
                        parse_scale_source(scale, gps_offset_s), "video" if kind == "video" else "image(s)"
                    )
                except ValueError as exc:
                    raise UploadError(str(exc)) from exc
            if given is not None or scale is not None:
                try:
                    options = replace(
                        options, intrinsics=None if given is None else str(given), scale_from=scale,
                        gps_offset_s=gps_offset_s if scale is not None else 0.0,
                    )  # fmt: skip
                except ValueError as exc:
                    raise UploadError(str(exc)) from exc
            for path, file_kind in zip(saved, kinds, strict=True):
                source = check_decodable(path, file_kind, every_s, max_frames, config.probe_frames, check_size)
                if source is not None:  # a video, probed once with the job's sampling
                    _check_video_budget(source, client_name(path), config)
            return _job_info(jobs.submit(job_id, kind, entry.name, entry.path, options))
        except QueueFull as exc:
            shutil.rmtree(jobs.folder(job_id), ignore_errors=True)
            raise HTTPException(429, str(exc), headers={"Retry-After": "10"}) from exc
        except BaseException:
            shutil.rmtree(jobs.folder(job_id), ignore_errors=True)
            raise

    @app.get(
        "/jobs",
        response_model=list[JobInfo],
        responses={
            200: {
                "description": "a page of jobs, oldest first",
                "headers": {
                    "X-Total-Count": {
                        "description": "jobs in all pages (of this status)",
                        "schema": {"type": "integer"},
                    },
                    "Link": {
                        "description": 'the next page, rel="next" (absent on the last)',
                        "schema": {"type": "string"},
                    },
                },
            }
        },
    )
    def list_jobs(
        response: Response,
        status: Literal["queued", "running", "done", "failed", "cancelled", "interrupted", "lost"] | None = Query(
            None, description="only jobs in this state"
        ),
        offset: int = Query(0, ge=0, le=1_000_000_000, description="skip this many (oldest first)"),
        limit: int = Query(100, ge=1, le=1000, description="at most this many"),
    ) -> list[JobInfo]:
        """A page of jobs; ``X-Total-Count`` says how many there are, ``Link`` points at the next page."""
        total = jobs.store.count(status)
        response.headers["X-Total-Count"] = str(total)
        if offset + limit < total:
            query = f"offset={offset + limit}&limit={limit}" + (f"&status={status}" if status else "")
            response.headers["Link"] = f'</jobs?{query}>; rel="next"'
        return [_job_info(j) for j in jobs.list(status, offset, limit)]

    def _job(job_id: str):
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}; list jobs with GET /jobs")
        return job

    @app.get("/jobs/{job_id}", response_model=JobInfo, responses=ERRORS)
    def job_status(job_id: str) -> JobInfo:
        return _job_info(_job(job_id))

    @app.delete("/jobs/{job_id}", response_model=JobInfo, responses=ERRORS)
    def cancel_or_delete(job_id: str) -> JobInfo:
        """A queued or running job is cancelled; a finished one is deleted with its files."""
        job = _job(job_id)
        if job.status in ("queued", "running"):
            return _job_info(jobs.cancel(job_id))
        jobs.delete(job_id)
        return _job_info(job)

    @app.post("/jobs/{job_id}/retry", response_model=JobInfo, responses=ERRORS)
    def retry(job_id: str) -> JobInfo:
        """Queue an interrupted, failed or cancelled job again, from the inputs it kept."""
        _job(job_id)
        try:
            return _job_info(jobs.retry(job_id))
        except QueueFull as exc:
            raise HTTPException(429, str(exc), headers={"Retry-After": "10"}) from exc
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.get(
        "/jobs/{job_id}/files/{path:path}",
        responses={**ERRORS, 200: {"description": "the file", "content": {"application/octet-stream": {}}}},
    )
    def download(job_id: str, path: str):
        """One output file; ``/jobs/{id}/files/`` itself lists them (JSON: name, bytes, URL)."""
        job = _job(job_id)
        if job.status != "done":
            raise HTTPException(409, f"job {job_id} is {job.status}; outputs are served once it is done")
        if path in ("", "/"):
            files = output_files(jobs.output_dir(job_id))
            return {
                "job": job_id,
                "files": [{"name": n, "bytes": b, "url": f"/jobs/{job_id}/files/{n}"} for n, b in files],
                "archive_url": f"/jobs/{job_id}/archive",
            }
        try:
            target = resolve_inside(jobs.output_dir(job_id), path)
        except FileNotFoundError:
            raise HTTPException(404, f"no file {path!r} in the job's outputs; see its 'outputs' list") from None
        if not target.is_file():
            raise HTTPException(404, f"no file {path!r} in the job's outputs; see its 'outputs' list")
        return FileResponse(target, filename=target.name)

    @app.get(
        "/jobs/{job_id}/archive",
        responses={**ERRORS, 200: {"description": "every output, one zip", "content": {"application/zip": {}}}},
    )
    def archive(job_id: str):
        """Every output of a done job as one zip archive, streamed as it is written."""
        job = _job(job_id)
        if job.status != "done":
            raise HTTPException(409, f"job {job_id} is {job.status}; outputs are served once it is done")
        folder = jobs.output_dir(job_id)
        files = output_files(folder)
        return StreamingResponse(
            zip_chunks(folder, files),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="edgescene-{job_id}.zip"'},
        )

    # at most one stream frame per core is decoded or pushed at once: more only queue for the GIL and
    # the cores, and starve the event loop (/health measured 1.2 s p95 under 10 streams without it)
    stream_slots = asyncio.Semaphore(config.stream_concurrency or os.cpu_count() or 2)
    # (model, window) sessions shared by streams, each held by the streams using it (at most
    # stream_models open; only idle ones are closed for another)
    stream_models = StreamModels(config.stream_models, close=lambda rec: rec.session.close())
    app.state.stream_models = stream_models

    def lease_reconstructor(model: str | None, window: str):
        """A lease on the (model, window) reconstructor (opened and warmed up on first use);
        ValueError for a model or window the server cannot serve, :class:`StreamModelsBusy` when
        every session is in use."""
        try:
            window = int(window)
        except ValueError:
            raise ValueError(
                f"window must be a whole number of frames per model call, got {window!r}; e.g. /stream?window=8"
            ) from None
        entry = find_model(config.models_dir, model, pytorch_models=config.pytorch_models)
        frames = entry.info.get("frames") or {}
        high = int(frames.get("max", 64))
        if not 2 <= window <= high:
            raise ValueError(
                f"window {window} is outside what model {entry.name!r} takes per call (2..{high} frames); "
                f"connect with /stream?window={min(max(window, 2), high)}"
            )

        # kept open between clients: onnxruntime returns each call's CPU memory instead of keeping an arena
        session_options = {"cpu_mem_arena": False} if entry.info.get("backend") == "onnxruntime" else {}

        def open_reconstructor() -> Reconstructor:
            config = ReconstructConfig(window=window, overlap=min(2, window - 1))
            rec = Reconstructor(entry.path, config, **session_options)
            rec.warm_up(1)
            return rec

        return stream_models.lease((entry.name, window), open_reconstructor)

    @app.websocket("/stream")
    async def stream(websocket: WebSocket, model: str | None = None, window: str = "8", intrinsics: str | None = None):
        # window taken as text and parsed in the session: a bad value gets an error naming it, not a bare 403;
        # intrinsics: one camera as JSON in the frames' pixels, e.g. {"fx":900,"fy":900,"cx":640,"cy":360}
        await _stream_session(websocket, config, lambda: lease_reconstructor(model, window), stream_slots, intrinsics)

    return app


def _check_video_budget(source, name: str, config: ServiceConfig) -> None:
    """413 at submission for a video longer than ``max_video_s`` or one that would decode more than
    ``max_job_frames`` frames after sampling, from its probed header."""
    if source.duration_s is not None and source.duration_s > config.max_video_s:
        raise UploadTooLarge(
            f"video {name} lasts {source.duration_s:.1f} s, over the limit of {config.max_video_s:g} s; "
            "send a shorter clip"
        ) from None
    expected = source.expected_count()
    if expected is not None and expected > config.max_job_frames:
        raise UploadTooLarge(
            f"video {name} would give {expected} frames, over the limit of {config.max_job_frames}; sample it with "
            f"every_s (e.g. every_s={max(0.1, round((source.duration_s or expected) / config.max_job_frames, 2))}) "
            "or send max_frames"
        )


# ----------------------------------------------------------------------------- live stream


def _decode_frame(data: bytes, number: int) -> np.ndarray:
    """One streamed JPEG / PNG frame -> (H, W, 3) uint8 RGB through the one decoder
    (:func:`edgescene.core.images.decode_image`), so a frame sent here gives the same pixels as the
    same file through ``edgescene reconstruct``: pixels as stored (the EXIF Orientation tag is not
    applied: a phone's portrait JPEG stays as stored, as in reconstruct's default), RGBA on white,
    16-bit scaled to 8 bit. ValueError (the session goes on) for garbage, or a frame whose header
    declares more pixels than the limit (checked before decoding)."""
    from edgescene.core.images import UndecodableImage, decode_image

    try:
        return decode_image(data, "none", what="the frame")
    except UndecodableImage as exc:
        raise ValueError(f"frame {number}: not a decodable image; send each frame as JPEG or PNG bytes") from exc
    except ValueError as exc:
        raise ValueError(f"frame {number}: {exc}") from exc


async def _stream_session(
    websocket: WebSocket,
    config: ServiceConfig,
    lease_reconstructor,
    slots: asyncio.Semaphore,
    intrinsics: str | None = None,
) -> None:
    """One client's live reconstruction: binary messages are frames, text ``finish`` ends the stream.

    The frames go through :func:`edgescene.runtime.reconstruct.run` (the one assembly of the
    pipeline) on the session's own thread (:class:`~edgescene.apps.live_stream.LiveRun`), started
    with the first frame; each frame is answered, in order, before the next message is read. A slot
    of ``slots`` is held while a frame is decoded and while it is processed (and for the final
    window), which bounds the model work of all clients. Each client has its own stream state; the
    model session is shared (sessions serialize what they must: onnxruntime's bound buffers and
    TensorRT's one execution context are locked). A client that goes away cancels its run: the
    thread ends after the frame in progress, without running the last window. An error inside the
    run (a frame the model cannot take) ends the stream: an error naming it, "; reconnect", and close
    code 1011. The model session is leased for the whole stream (``lease_reconstructor()``, a
    :meth:`~edgescene.apps.stream_models.StreamModels.lease`): no other client can close it. When
    every session is in use, the client gets an error with ``retry_after_s`` and close code 1013.
    ``intrinsics`` (the query's, JSON): one known camera for every frame of this stream; a bad one
    gets an error naming the problem and close code 1008 before any model is leased.
    """
    await websocket.accept()
    try:
        calibration = _stream_calibration(intrinsics)
        lease = lease_reconstructor()
        rec = await asyncio.to_thread(lease.__enter__)
    except ValueError as exc:
        await websocket.send_json({"type": "error", "detail": str(exc)})
        await websocket.close(code=1008)
        return
    except StreamModelsBusy as exc:
        await websocket.send_json({"type": "error", "detail": str(exc), "retry_after_s": STREAM_RETRY_AFTER_S})
        await websocket.close(code=1013, reason=f"busy: retry in {STREAM_RETRY_AFTER_S} s")
        return
    try:
        await _stream_frames(websocket, config, rec, slots, calibration)
    finally:
        lease.__exit__(None, None, None)
        await asyncio.to_thread(release_memory)  # the stream's map and frames, back to the system


def _stream_calibration(text: str | None) -> Calibration | None:
    """The ``intrinsics`` query of ``/stream``: one camera as JSON (ValueError names what is wrong)."""
    if text is None or not text.strip():
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f'intrinsics must be JSON, e.g. /stream?intrinsics={{"fx":900,"fy":900,"cx":640,"cy":360}} ({exc})'
        ) from None
    calibration = parse_calibration(data, origin="intrinsics")
    if calibration.camera is None:
        raise ValueError("intrinsics: a stream takes one camera for all frames (fx, fy, cx, cy or K), not per image")
    return calibration


async def _stream_frames(
    websocket: WebSocket,
    config: ServiceConfig,
    rec: Reconstructor,
    slots: asyncio.Semaphore,
    calibration: Calibration | None = None,
) -> None:
    """The frames of one stream on its leased reconstructor ``rec`` (:func:`_stream_session`)."""
    limit = int(config.stream_max_frame_mb * 2**20)
    live: LiveRun | None = None  # started with the first decodable frame
    sent = 0
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                if message["text"].strip() == "finish":
                    if live is None:
                        await websocket.send_json({"type": "error", "detail": "no frames were sent before 'finish'"})
                        await websocket.close()
                        return
                    try:
                        async with slots:
                            final = await live.finish()
                    except Exception as exc:  # noqa: BLE001 - any failure of the run ends the stream
                        await _stream_failed(websocket, exc)
                        return
                    await websocket.send_json(final)
                    await websocket.close()
                    return
                await websocket.send_json(
                    {"type": "error", "detail": "text messages: only 'finish'; send frames as binary JPEG/PNG messages"}
                )
                continue
            data = message.get("bytes") or b""
            if not data:
                await websocket.send_json(
                    {"type": "error", "detail": "empty message: send each frame as JPEG or PNG bytes"}
                )
                continue
            if len(data) > limit:
                await websocket.send_json(
                    {
                        "type": "error",
                        "detail": f"frame of {len(data) / 2**20:.1f} MiB is "
                        f"over the {config.stream_max_frame_mb:g} MiB limit; send smaller frames",
                    }
                )
                continue
            try:  # off the event loop: other clients and /health stay responsive
                async with slots:
                    rgb = await asyncio.to_thread(_decode_frame, data, sent + 1)
                rec.check_frame_size(*rgb.shape[:2])  # a frame the model cannot take: refused, the stream goes on
            except ValueError as exc:
                await websocket.send_json({"type": "error", "detail": str(exc)})
                continue
            start = time.perf_counter()
            if live is None:
                live = LiveRun(rec, calibration)
            try:
                async with slots:
                    reply = await live.push(rgb)
            except Exception as exc:  # noqa: BLE001 - e.g. the model was unloaded for another one
                await _stream_failed(websocket, exc)
                return
            sent += 1
            reply["push_ms"] = round(1000 * (time.perf_counter() - start), 2)
            await websocket.send_json(reply)
    except WebSocketDisconnect:
        return
    finally:
        if live is not None:
            await live.close()


async def _stream_failed(websocket: WebSocket, exc: Exception) -> None:
    """The run stopped with ``exc``: this stream cannot go on."""
    await websocket.send_json({"type": "error", "detail": f"{redact_paths(str(exc))}; reconnect"})
    await websocket.close(code=1011)


__all__ = ["ServiceConfig", "create_app"]
