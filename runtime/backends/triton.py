"""triton backend: model calls sent to a Triton Inference Server (KServe v2 protocol, HTTP or gRPC).

Only the model call leaves the process: frame decoding, keyframe selection, window alignment,
fusion and outputs stay local, so many app or edge instances can share one GPU fleet. Selected with
``--model triton://HOST:PORT/MODEL`` (``open_session("triton://...")``)::

    triton://gpu-box:8000/vggt_1b_518x518                      # HTTP (Triton's default port 8000)
    triton://gpu-box:8001/vggt_1b_518x518?protocol=grpc         # gRPC (default port 8001)
    triton://gpu-box/vggt?protocol=grpc&version=2&timeout_s=120
    triton://gpu-box:8000/vggt?artifact=/path/to/export         # describe the model with a local export

Query keys: ``protocol`` (http | grpc, default http), ``version`` (a model version; default: the
server's policy, the latest), ``timeout_s`` (seconds one call may take, default 600), ``artifact``
(a local artifact folder describing the model).

What the model is (inputs, outputs, frame range, input size, normalisation, family) comes from
the server: ``edgescene export --format triton`` writes the accepted artifact's description into
the model's ``config.pbtxt`` as the parameter ``edgescene_artifact``, and Triton serves it back
at ``/v2/models/<model>/config``. A model configured by hand has no such parameter: pass the
export folder it came from with ``artifact=``. Either way the server's configured tensors are
checked against the description (names, data types, fixed sizes) when the session opens.

Each thread gets its own client (tritonclient's clients are not meant to be shared between
threads), so several streams may call one session at once; the server queues or runs them in
parallel by its ``instance_group``. Needs ``tritonclient``: ``pip install 'edgescene[triton]'``.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np

from edgescene.core.artifact import TRITON_ARTIFACT_PARAMETER as ARTIFACT_PARAMETER
from edgescene.core.artifact import Artifact, ArtifactError, read_artifact
from edgescene.runtime.backends import BaseSession, check_device, check_feeds, output_shapes

SCHEME = "triton"
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
QUERY_KEYS = ("protocol", "version", "timeout_s", "artifact")
# numpy dtype name <-> KServe v2 datatype
DATATYPES = {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32"}
CONFIG_TYPES = {f"TYPE_{v}": k for k, v in DATATYPES.items()}
INSTALL_HINT = "pip install 'edgescene[triton]' (tritonclient with HTTP and gRPC)"


def is_triton_url(model: object) -> bool:
    return isinstance(model, str) and model.startswith(f"{SCHEME}://")


@dataclass(frozen=True)
class TritonAddress:
    """A parsed ``triton://HOST[:PORT]/MODEL[?key=value...]``."""

    host: str
    port: int
    model: str
    protocol: Literal["http", "grpc"] = "http"
    version: str = ""
    timeout_s: float = 600.0
    artifact: str | None = None

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        """The address without the local artifact path (safe to show to clients)."""
        version = f"&version={self.version}" if self.version else ""
        return f"{SCHEME}://{self.endpoint}/{self.model}?protocol={self.protocol}{version}"


def parse_triton_url(text: str) -> TritonAddress:
    """``triton://HOST[:PORT]/MODEL[?protocol=http|grpc&version=N&timeout_s=S&artifact=DIR]``.

    Raises ValueError naming what is wrong and what a valid address looks like."""
    example = "e.g. triton://localhost:8000/vggt_small_126x168 or triton://gpu-box:8001/vggt?protocol=grpc"
    if not is_triton_url(text):
        raise ValueError(f"{text!r} is not a Triton address ({example})")
    parts = urlsplit(text)
    if parts.username or parts.password:
        raise ValueError(f"{parts.scheme}:// addresses take no user or password ({example})")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r}: the port is not a number in 1..65535 ({example})") from exc
    if not parts.hostname:
        raise ValueError(f"{text!r} names no host ({example})")
    model = unquote(parts.path.strip("/"))
    if not model or "/" in model:
        raise ValueError(f"{text!r}: the path must be exactly one model name ({example})")
    if parts.fragment:
        raise ValueError(f"{text!r}: a '#' fragment means nothing here")
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key not in QUERY_KEYS:
            raise ValueError(f"{text!r}: unknown option {key!r}; valid: {', '.join(QUERY_KEYS)}")
        if key in query:
            raise ValueError(f"{text!r}: option {key!r} is given twice")
        query[key] = value
    protocol = query.get("protocol", "http")
    if protocol not in DEFAULT_PORTS:
        raise ValueError(f"{text!r}: protocol must be http or grpc, got {protocol!r}")
    version = query.get("version", "")
    if version and not (version.isdigit() and int(version) >= 1):
        raise ValueError(f"{text!r}: version must be a model version number >= 1, got {version!r}")
    try:
        timeout_s = float(query.get("timeout_s", "600"))
    except ValueError:
        timeout_s = math.nan
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"{text!r}: timeout_s must be a number of seconds > 0, got {query.get('timeout_s')!r}")
    if "artifact" in query and not query["artifact"]:
        raise ValueError(f"{text!r}: artifact= needs a folder")
    return TritonAddress(
        host=parts.hostname,
        port=port or DEFAULT_PORTS[protocol],
        model=model,
        protocol=protocol,  # type: ignore[arg-type]  # checked above
        version=version,
        timeout_s=timeout_s,
        artifact=query.get("artifact"),
    )


def _import_client(protocol: str) -> tuple[Any, Any]:
    """(the tritonclient protocol module, tritonclient.utils)."""
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        import tritonclient.utils as utils
    except ImportError as exc:
        raise ImportError(f"the triton backend ({protocol}) needs tritonclient: {INSTALL_HINT} ({exc})") from exc
    return module, utils


class TritonSession(BaseSession):
    """A model served by Triton, called with numpy arrays like every other session.

    ``device`` must be "auto": the server decides where its instances run. ``session.device`` is
    "remote" and ``session.address`` the parsed address."""

    backend = "triton"

    def __init__(self, source: str, artifact: Artifact | None = None, device: str = "auto") -> None:
        check_device(device, ("auto",), "triton", why=" (the Triton server places the model on its own devices)")
        self.address = parse_triton_url(source)
        self.device = "remote"
        self._module, self._utils = _import_client(self.address.protocol)
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        self._closed = False
        try:
            config = self._connect()
            self.artifact = artifact if artifact is not None else self._describe(config)
            check_served_tensors(self.artifact, config, str(self.address))
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ connection

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self._closed:
                raise RuntimeError("this session is closed")
            a = self.address
            if a.protocol == "grpc":
                client = self._module.InferenceServerClient(url=a.endpoint)
            else:
                client = self._module.InferenceServerClient(
                    url=a.endpoint, connection_timeout=min(a.timeout_s, 60.0), network_timeout=a.timeout_s
                )
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _server_error(self, what: str, exc: BaseException) -> RuntimeError:
        text = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
        return RuntimeError(f"Triton server {self.address.endpoint} ({self.address.protocol}): {what}: {text}")

    def _connect(self) -> dict[str, Any]:
        """Check the server is up and the model ready; return the model's configuration (as JSON)."""
        a, client = self.address, self._client()
        wait = self._admin_timeout()
        try:
            live = client.is_server_live(**wait)
        except Exception as exc:
            other = "grpc" if a.protocol == "http" else "http"
            raise RuntimeError(
                f"no Triton server answers {a.protocol.upper()} at {a.endpoint} ({type(exc).__name__}: {exc}); "
                f"start the server, or check the host, the port (Triton: HTTP 8000, gRPC 8001) and "
                f"?protocol= (this address uses {a.protocol}; the other is {other})"
            ) from exc
        if not live:
            raise RuntimeError(f"the Triton server at {a.endpoint} is not live")
        try:
            ready = client.is_model_ready(a.model, a.version, **wait)
        except self._utils.InferenceServerException as exc:
            raise self._server_error(f"asking whether model {a.model!r} is ready", exc) from exc
        if not ready:
            raise RuntimeError(
                f"the Triton server at {a.endpoint} has no ready model {a.model!r}"
                + (f" version {a.version}" if a.version else "")
                + f"; ready models: {self._ready_models() or 'none'}"
            )
        try:
            json_args = {"as_json": True} if a.protocol == "grpc" else {}
            config = client.get_model_config(a.model, a.version, **json_args, **wait)
        except self._utils.InferenceServerException as exc:
            raise self._server_error(f"reading model {a.model!r}'s configuration", exc) from exc
        return config.get("config", config) if a.protocol == "grpc" else config

    def _admin_timeout(self) -> dict[str, float]:
        """gRPC status calls wait at most 30 s (HTTP's connection_timeout covers them there)."""
        return {"client_timeout": min(self.address.timeout_s, 30.0)} if self.address.protocol == "grpc" else {}

    def _ready_models(self) -> str:
        grpc_args = {"as_json": True, **self._admin_timeout()} if self.address.protocol == "grpc" else {}
        try:
            index = self._client().get_model_repository_index(**grpc_args)
        except self._utils.InferenceServerException:
            return "(the server does not list its repository)"
        rows = index.get("models", []) if isinstance(index, dict) else index
        names = sorted({row["name"] for row in rows if row.get("state", "READY") == "READY"})
        return ", ".join(names)

    def _describe(self, config: dict[str, Any]) -> Artifact:
        """The artifact description: from ``artifact=`` (a local folder) or the server's config."""
        a = self.address
        if a.artifact is not None:
            folder = Path(a.artifact)
            artifact = read_artifact(folder)
            if artifact.files.get("sizes"):
                raise ArtifactError(
                    f"{folder} serves several sizes; a Triton model serves one: pass its size's sub-folder "
                    f"({', '.join(sorted(artifact.files['sizes'].values()))})"
                )
            return artifact
        parameters = config.get("parameters") or {}
        text = (parameters.get(ARTIFACT_PARAMETER) or {}).get("string_value")
        if not text:
            raise ArtifactError(
                f"Triton model {a.model!r} at {a.endpoint} does not describe itself (its configuration has no "
                f"{ARTIFACT_PARAMETER!r} parameter: it was not written by `edgescene export --format triton`); "
                f"pass the export folder it came from: {SCHEME}://{a.endpoint}/{a.model}?artifact=/path/to/export"
            )
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArtifactError(
                f"Triton model {a.model!r}: parameter {ARTIFACT_PARAMETER!r} is not JSON ({exc})"
            ) from exc
        artifact = Artifact.from_json(data, where=f"{a.model!r}'s {ARTIFACT_PARAMETER}")
        if not artifact.accepted:
            raise ArtifactError(f"Triton model {a.model!r} was rejected by its export's parity gate; do not serve it")
        return artifact

    # ------------------------------------------------------------------ calls

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise RuntimeError("this session is closed")
        prepared, axes = check_feeds(self.artifact, feeds)
        module, a, client = self._module, self.address, self._client()
        inputs = []
        for name, value in prepared.items():
            tensor = module.InferInput(name, list(value.shape), DATATYPES[value.dtype.name])
            if a.protocol == "http":
                tensor.set_data_from_numpy(value, binary_data=True)
            else:
                tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        names = [t.name for t in self.artifact.outputs]
        call: dict[str, float]
        if a.protocol == "http":
            outputs = [module.InferRequestedOutput(n, binary_data=True) for n in names]
            call = {"timeout": int(a.timeout_s * 1e6)}  # the server-side timeout, in microseconds
        else:
            outputs = [module.InferRequestedOutput(n) for n in names]
            call = {"client_timeout": a.timeout_s}
        try:
            result = client.infer(a.model, inputs, model_version=a.version, outputs=outputs, **call)
        except self._utils.InferenceServerException as exc:
            raise self._server_error(f"model {a.model!r} failed", exc) from exc
        out: dict[str, np.ndarray] = {}
        shapes = output_shapes(self.artifact, axes)
        for name in names:
            value = result.as_numpy(name)
            if value is None:
                raise RuntimeError(f"Triton model {a.model!r} returned no output {name!r}")
            want = shapes[name]
            if want is not None and tuple(value.shape) != want:
                raise RuntimeError(
                    f"Triton model {a.model!r} returned {name!r} of shape {list(value.shape)}, expected {list(want)}: "
                    "the served model is not the one its description (edgescene_artifact / artifact=) describes"
                )
            out[name] = value
        return out

    def close(self) -> None:
        self._closed = True
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):  # closing a dead connection must not mask the caller's error
                client.close()


def check_served_tensors(artifact: Artifact, config: dict[str, Any], where: str) -> None:
    """The server's configured tensors must be the artifact's: every input, every output the runtime
    reads, the same data type and rank, and the same size on every fixed axis (-1 on the server
    matches anything). Raises ArtifactError naming the first difference."""
    served = {t["name"]: t for t in [*(config.get("input") or []), *(config.get("output") or [])]}
    for kind, specs in (("input", artifact.inputs), ("output", artifact.outputs)):
        for spec in specs:
            tensor = served.get(spec.name)
            if tensor is None:
                raise ArtifactError(
                    f"{where} serves no {kind} {spec.name!r} (it serves {sorted(served)}); "
                    "it is not the model its description says"
                )
            dtype = CONFIG_TYPES.get(tensor.get("data_type", ""), tensor.get("data_type"))
            dims = [int(d) for d in tensor.get("dims", [])]
            if int(config.get("max_batch_size", 0) or 0) > 0:
                dims = [-1, *dims]  # a batching model's configured dims leave out the batch axis
            fixed = [d if isinstance(d, int) else -1 for d in spec.shape]
            if (
                dtype != spec.dtype
                or len(dims) != len(fixed)
                or any(s != -1 and f != -1 and s != f for s, f in zip(dims, fixed, strict=True))
            ):
                raise ArtifactError(
                    f"{where}: {kind} {spec.name!r} is served as {dtype} {dims}, the description says "
                    f"{spec.dtype} {list(spec.shape)}"
                )


__all__ = [
    "ARTIFACT_PARAMETER",
    "TritonAddress",
    "TritonSession",
    "check_served_tensors",
    "is_triton_url",
    "parse_triton_url",
]
