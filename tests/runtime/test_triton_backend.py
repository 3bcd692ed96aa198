"""The triton backend: addresses, the served-tensor check, and reconstruction through a REAL Triton
Inference Server process (the tritonserver binary of the nvidia-pytriton wheel, started here on the
repository `edgescene export --format triton` wrote), over HTTP and gRPC, against the local
onnxruntime run of the same artifact."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from bundled import BUNDLED_PRESET

from edgescene.assets import default_model_dir, sample_dir
from edgescene.core.artifact import ArtifactError, read_artifact
from edgescene.runtime.backends.triton import (
    TritonAddress,
    check_served_tensors,
    parse_triton_url,
)
from edgescene.runtime.frames import open_frames
from edgescene.runtime.reconstruct import ReconstructConfig, reconstruct_to_folder
from edgescene.runtime.session import open_session

pytest.importorskip("tritonclient.http")
pytest.importorskip("tritonclient.grpc")

ROOT = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = ROOT / "tests" / "triton_server.py"
MODEL = f"{BUNDLED_PRESET}_126x168"  # the name `--format triton` gives the bundled model


# ----------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("triton://gpu:8000/vggt", TritonAddress("gpu", 8000, "vggt")),
        ("triton://gpu/vggt", TritonAddress("gpu", 8000, "vggt")),
        ("triton://gpu/vggt?protocol=grpc", TritonAddress("gpu", 8001, "vggt", "grpc")),
        ("triton://gpu:9/m.v-1_x/?version=2", TritonAddress("gpu", 9, "m.v-1_x", version="2")),
        ("triton://[::1]:8001/m?protocol=grpc&timeout_s=2.5", TritonAddress("::1", 8001, "m", "grpc", timeout_s=2.5)),
        ("triton://h:1/m?artifact=/x/y", TritonAddress("h", 1, "m", artifact="/x/y")),
    ],
)
def test_addresses_parse(url, want):
    assert parse_triton_url(url) == want


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://gpu:8000/vggt", "not a Triton address"),
        ("triton://gpu:8000/", "exactly one model name"),
        ("triton://gpu:8000/a/b", "exactly one model name"),
        ("triton://gpu:99999/m", "port"),
        ("triton://gpu:http/m", "port"),
        ("triton:///m", "names no host"),
        ("triton://u:p@gpu/m", "no user or password"),
        ("triton://gpu/m?protocol=udp", "protocol must be http or grpc"),
        ("triton://gpu/m?proto=grpc", "unknown option 'proto'"),
        ("triton://gpu/m?version=1&version=2", "given twice"),
        ("triton://gpu/m?version=0", "version must be"),
        ("triton://gpu/m?version=latest", "version must be"),
        ("triton://gpu/m?timeout_s=inf", "timeout_s"),
        ("triton://gpu/m?timeout_s=-1", "timeout_s"),
        ("triton://gpu/m?timeout_s=soon", "timeout_s"),
        ("triton://gpu/m?artifact=", "artifact= needs a folder"),
        ("triton://gpu/m#x", "fragment"),
    ],
)
def test_bad_addresses_say_what_is_wrong(url, message):
    with pytest.raises(ValueError, match=message):
        parse_triton_url(url)


def test_the_shown_address_leaves_out_the_local_artifact_folder():
    address = parse_triton_url("triton://gpu:8001/m?protocol=grpc&version=3&artifact=/srv/secret/export")
    assert str(address) == "triton://gpu:8001/m?protocol=grpc&version=3"
    assert "secret" not in str(address)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_no_server_fails_at_once_naming_the_address_and_ports(protocol):
    port = _free_port()
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"no Triton server answers {protocol.upper()} at 127.0.0.1:{port}"):
        open_session(f"triton://127.0.0.1:{port}/vggt?protocol={protocol}")
    assert time.monotonic() - start < 10


def test_the_server_places_the_model_so_only_device_auto():
    with pytest.raises(ValueError, match="Triton server places the model"):
        open_session("triton://127.0.0.1:1/vggt", device="cpu")


# ----------------------------------------------------------------------------- served tensors

ARTIFACT = read_artifact(default_model_dir())


def _config(**changes) -> dict:
    """A Triton model configuration (as /v2/models/<m>/config returns it) for the bundled artifact."""
    kinds = {"float32": "TYPE_FP32"}
    dims = lambda s: [d if isinstance(d, int) else -1 for d in s.shape]
    config = {
        "max_batch_size": 0,
        "input": [{"name": s.name, "data_type": kinds[s.dtype], "dims": dims(s)} for s in ARTIFACT.inputs],
        "output": [{"name": s.name, "data_type": kinds[s.dtype], "dims": dims(s)} for s in ARTIFACT.outputs],
    }
    config.update(changes)
    return config


def test_served_tensors_matching_the_description_pass():
    check_served_tensors(ARTIFACT, _config(), "here")
    grpc_style = _config()  # gRPC's JSON gives int64 dims as strings
    for t in grpc_style["input"] + grpc_style["output"]:
        t["dims"] = [str(d) for d in t["dims"]]
    check_served_tensors(ARTIFACT, grpc_style, "here")


def test_served_tensors_that_differ_are_named():
    config = _config()
    config["output"] = [t for t in config["output"] if t["name"] != "depth"]
    with pytest.raises(ArtifactError, match="serves no output 'depth'"):
        check_served_tensors(ARTIFACT, config, "here")
    config = _config()
    config["input"][0]["dims"] = [-1, 3, 392, 518]
    with pytest.raises(ArtifactError, match=r"input 'images' is served as float32 \[-1, 3, 392, 518\]"):
        check_served_tensors(ARTIFACT, config, "here")
    config = _config()
    config["output"][0]["data_type"] = "TYPE_FP16"
    with pytest.raises(ArtifactError, match="pose_enc' is served as float16"):
        check_served_tensors(ARTIFACT, config, "here")
    batching = _config(max_batch_size=8)  # dims then leave out the batch axis
    for t in batching["input"] + batching["output"]:
        t["dims"] = t["dims"][1:]
    check_served_tensors(ARTIFACT, batching, "here")
    wrong_rank = _config()
    wrong_rank["input"][0]["dims"] = [3, 126, 168]
    with pytest.raises(ArtifactError, match="images"):
        check_served_tensors(ARTIFACT, wrong_rank, "here")


# ----------------------------------------------------------------------------- a real Triton server


def _server_python() -> Path | None:
    configured = os.environ.get("EDGESCENE_TRITON_PYTHON")
    candidate = Path(configured) if configured else ROOT / ".venv-triton" / "bin" / "python"
    return candidate if candidate.is_file() else None


class TritonServer:
    """tests/triton_server.py in its own Python, on two free loopback ports; stop() sends SIGINT."""

    def __init__(self, python: Path, repository: Path, workdir: Path) -> None:
        self.http_port, self.grpc_port = _free_port(), _free_port()
        self.log = workdir / "tritonserver.log"
        workdir.mkdir(parents=True)
        self._log = open(self.log, "w")  # noqa: SIM115 - the server writes it until stop()
        self.proc = subprocess.Popen(
            [str(python), str(SERVER_SCRIPT), str(repository), "--workdir", str(workdir / "served")]
            + ["--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        end = time.monotonic() + 120
        while time.monotonic() < end and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"tritonserver did not become ready:\n{self.log.read_text()[-3000:]}")

    def url(self, model: str, protocol: str = "http", query: str = "") -> str:
        port = self.http_port if protocol == "http" else self.grpc_port
        return f"triton://127.0.0.1:{port}/{model}?protocol={protocol}" + (f"&{query}" if query else "")

    def config(self, model: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/models/{model}/config", timeout=10) as r:
            return json.load(r)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def triton_export(tmp_path_factory) -> Path:
    """The bundled model's checkpoint exported with `--format triton` (accepted by the parity gate)."""
    pytest.importorskip("torch")
    from edgescene.export.pipeline import ExportConfig, export_model

    out = tmp_path_factory.mktemp("triton") / "export"
    config = ExportConfig(
        model=str(default_model_dir() / "model.safetensors"),
        format="triton",
        out=str(out),
        height=126,
        width=168,
        frames_range=(1, 8, 8),
    )
    result = export_model(config, log=lambda line: None)
    assert result.accepted
    return result.folder


@pytest.fixture(scope="module")
def served_repository(triton_export, tmp_path_factory) -> Path:
    """The export's repository, plus a hand-configured copy of the model without its description."""
    repository = tmp_path_factory.mktemp("repository")
    shutil.copytree(triton_export / MODEL, repository / MODEL, symlinks=False)
    plain = repository / "plain"
    shutil.copytree(triton_export / MODEL, plain)
    text = (plain / "config.pbtxt").read_text()
    text = text.replace(f'name: "{MODEL}"', 'name: "plain"')
    text = text[: text.index("# What this model is")]  # the edgescene_artifact parameter goes
    (plain / "config.pbtxt").write_text(text)
    return repository


@pytest.fixture(scope="module")
def server(served_repository, tmp_path_factory):
    python = _server_python()
    if python is None:
        pytest.skip(
            "no Python with nvidia-pytriton (the real tritonserver): run `make triton-server` "
            "(makes .venv-triton) or set EDGESCENE_TRITON_PYTHON"
        )
    triton = TritonServer(python, served_repository, tmp_path_factory.mktemp("tritonserver") / "run")
    yield triton
    triton.stop()


@pytest.mark.slow
def test_the_server_serves_the_exports_description(server, triton_export):
    config = server.config(MODEL)
    served = json.loads(config["parameters"]["edgescene_artifact"]["string_value"])
    assert served == json.loads((triton_export / "artifact.json").read_text())
    assert config["max_batch_size"] == 0
    assert "edgescene_artifact" not in (server.config("plain").get("parameters") or {})


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_reconstruction_through_triton_equals_the_local_run(server, triton_export, protocol, tmp_path):
    """The acceptance check: the bundled sample video, the same artifact served by Triton and run
    locally by onnxruntime; cameras, depth and the fused map agree within 1e-5 (measured: 0)."""
    video = sample_dir() / "sample.mp4"
    config = ReconstructConfig(window=8)
    local = reconstruct_to_folder(video, triton_export, tmp_path / "local", config, progress=False)
    remote = reconstruct_to_folder(video, server.url(MODEL, protocol), tmp_path / "remote", config, progress=False)
    assert remote["backend"] == {"name": "triton", "device": "remote", "address": server.url(MODEL, protocol)}
    assert local["backend"]["name"] == "onnxruntime"
    assert remote["keyframes"] == local["keyframes"] == 32
    assert remote["points"] == local["points"] > 100_000
    cams = [json.loads((tmp_path / run / "cameras.json").read_text())["frames"] for run in ("local", "remote")]
    for a, b in zip(*cams, strict=True):
        for key in ("extrinsics", "intrinsics"):
            np.testing.assert_allclose(np.asarray(b[key]), np.asarray(a[key]), atol=1e-5, rtol=0)
    depth_files = sorted((tmp_path / "local" / "depth").glob("*.npz"))
    assert len(depth_files) == 32
    for path in depth_files:
        a, b = np.load(path), np.load(tmp_path / "remote" / "depth" / path.name)
        for key in a.files:
            if a[key].dtype.kind == "f":
                np.testing.assert_allclose(b[key], a[key], atol=1e-5, rtol=0, err_msg=f"{path.name}:{key}")
    assert (tmp_path / "remote" / "points.ply").stat().st_size == (tmp_path / "local" / "points.ply").stat().st_size


@pytest.mark.slow
def test_two_threads_on_one_session_get_their_own_results(server):
    session = open_session(server.url(MODEL, "grpc"))
    rng = np.random.default_rng(0)
    batches = [rng.random((n, 3, 126, 168), dtype=np.float32) for n in (3, 5)]
    serial = [session({"images": b}) for b in batches]
    results: list = [None, None]
    errors: list = []

    def call(i: int) -> None:
        try:
            for _ in range(3):
                results[i] = session({"images": batches[i]})
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, serial, strict=True):
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    session.close()
    with pytest.raises(RuntimeError, match="closed"):
        session({"images": batches[0]})


@pytest.mark.slow
def test_a_model_without_a_description_needs_its_export_folder(server, triton_export, tmp_path):
    with pytest.raises(ArtifactError, match=r"pass the export folder it came from: .*plain\?artifact="):
        open_session(server.url("plain"))
    session = open_session(server.url("plain", "http", f"artifact={triton_export}"))
    images = np.random.default_rng(1).random((2, 3, 126, 168), dtype=np.float32)
    local = open_session(triton_export)({"images": images})
    for name, value in session({"images": images}).items():
        np.testing.assert_allclose(value, local[name], atol=1e-6, rtol=0)
    # a description of another model is refused before any frame is sent
    other = tmp_path / "other"
    other.mkdir()
    data = json.loads((triton_export / "artifact.json").read_text())
    data["inputs"][0]["shape"] = ["frames", 3, 140, 168]
    data["input_size"] = {"height": 140, "width": 168}
    (other / "artifact.json").write_text(json.dumps(data))
    (other / MODEL).symlink_to(triton_export / MODEL)
    with pytest.raises(ArtifactError, match=r"input 'images' is served as float32 \[-1, 3, 126, 168\]"):
        open_session(server.url("plain", "http", f"artifact={other}"))


@pytest.mark.slow
def test_server_side_mistakes_name_the_model_and_what_is_served(server):
    with pytest.raises(RuntimeError, match=rf"no ready model 'nope'; ready models: plain, {MODEL}"):
        open_session(server.url("nope"))
    with pytest.raises(RuntimeError, match="version 7"):
        open_session(server.url(MODEL, "grpc", "version=7"))
    wrong = f"triton://127.0.0.1:{server.grpc_port}/{MODEL}?protocol=http"  # the gRPC port spoken to in HTTP
    with pytest.raises(RuntimeError, match="no Triton server answers HTTP"):
        open_session(wrong)
    session = open_session(server.url(MODEL))
    with pytest.raises(ValueError, match="outside this artifact's range 1..8"):
        session({"images": np.zeros((9, 3, 126, 168), np.float32)})


@pytest.mark.slow
def test_the_cli_reconstructs_through_triton(server, tmp_path):
    """`edgescene reconstruct --model triton://...` as a user runs it; the report names the address."""
    import sys

    out = tmp_path / "rec"
    run = subprocess.run(
        [sys.executable, "-m", "edgescene", "reconstruct", str(sample_dir() / "sample.mp4")]
        + ["--model", server.url(MODEL, "grpc"), "--out", str(out), "--max-frames", "12"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "on triton/remote" in run.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["backend"]["address"] == server.url(MODEL, "grpc")
    assert report["keyframes"] == 12


@pytest.mark.slow
def test_the_service_offers_a_triton_model_for_jobs_and_streams(server, triton_export, tmp_path):
    """`serve --vggt remote=triton://...`: a job and a /stream session run the model on the Triton
    server; clients see the model's name and the address, never the local artifact folder."""
    pytest.importorskip("fastapi")
    import cv2
    from fastapi.testclient import TestClient

    from edgescene.apps.service import ServiceConfig, create_app

    with pytest.raises(ValueError, match="protocol must be http or grpc"):
        ServiceConfig(jobs_dir=tmp_path / "x", pytorch_models={"bad": "triton://h:1/m?protocol=tcp"})
    secret = tmp_path / "server-side" / "export"
    shutil.copytree(triton_export, secret)
    address = server.url("plain", "grpc", f"artifact={secret}")  # described by a folder on the server
    config = ServiceConfig(jobs_dir=tmp_path / "jobs", pytorch_models={"remote": address})
    with TestClient(create_app(config)) as client:
        models = {m["name"]: m for m in client.get("/models").json()}
        assert models["remote"]["backend"] == "triton" and models["remote"]["usable"]
        assert str(secret) not in json.dumps(models)
        video = ("files", ("sample.mp4", (sample_dir() / "sample.mp4").read_bytes(), "video/mp4"))
        job = client.post("/jobs", files=[video], data={"max_frames": "10", "model": "remote"}).json()
        end = time.monotonic() + 120
        while job["status"] not in ("done", "failed") and time.monotonic() < end:
            time.sleep(0.1)
            job = client.get(f"/jobs/{job['id']}").json()
        assert job["status"] == "done", job
        report = client.get(f"/jobs/{job['id']}/files/report.json")
        assert report.json()["backend"]["name"] == "triton" and report.json()["keyframes"] == 10
        assert str(secret) not in report.text and str(tmp_path) not in report.text
        updates = []
        with client.websocket_connect("/stream?model=remote&window=4") as ws:
            for frame in open_frames(sample_dir() / "sample.mp4", max_frames=6):
                ok, buf = cv2.imencode(".jpg", frame.rgb[..., ::-1])
                ws.send_bytes(buf.tobytes())
                reply = ws.receive_json()
                assert reply["type"] in ("ack", "update"), reply
                updates += [reply] if reply["type"] == "update" else []
            ws.send_text("finish")
            final = ws.receive_json()
        assert updates and final["type"] == "final" and final["points"] > 0
