"""Start a real Triton Inference Server on a model repository written by ``edgescene export --format triton``.

Test infrastructure, run as a script with a Python that has ``nvidia-pytriton`` (its wheel carries a
real ``tritonserver`` binary and the Python backend), ``onnxruntime`` and ``numpy`` (``make
triton-server`` makes that venv, ``.venv-triton``)::

    .venv-triton/bin/python tests/triton_server.py REPOSITORY --http-port 8000 --grpc-port 8001 --workdir DIR

That binary has no ONNX Runtime backend, only the Python one. So each ``onnxruntime_onnx`` model of
REPOSITORY is served from DIR/models/<name>/ with the export's ``config.pbtxt`` word for word except
its ``platform`` line (``backend: "python"`` in its place), the export's own version folder (its
``model.onnx`` and external data linked, not copied), and a ``model.py`` that runs that file with
onnxruntime on the CPU. Everything a client sees is Triton's: the KServe v2 HTTP and gRPC protocols,
``/v2/models/<name>/config`` (with the export's ``edgescene_artifact`` parameter), readiness, errors.

The script replaces itself with ``tritonserver`` (exec), so the caller's process handle and signals
reach the server directly; SIGINT or SIGTERM stop it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import sysconfig
from pathlib import Path

PYTHON_MODEL = '''"""Triton Python-backend model: runs the export's model.onnx with onnxruntime on the CPU."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        folder = Path(args["model_repository"]) / args["model_version"]
        self.session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                feeds = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs}
                values = self.session.run(self.outputs, feeds)
                tensors = [pb_utils.Tensor(n, np.ascontiguousarray(v)) for n, v in zip(self.outputs, values)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # the error goes back to the client, the model stays up
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")))
        return responses
'''

PLATFORM_LINE = re.compile(r'^platform: "onnxruntime_onnx"$', re.MULTILINE)


def pytriton_dist() -> Path:
    """The tritonserver distribution inside the installed nvidia-pytriton wheel."""
    import pytriton  # only the server's Python has it

    dist = Path(pytriton.__file__).parent / "tritonserver"
    if not (dist / "bin" / "tritonserver").is_file():
        raise SystemExit(f"nvidia-pytriton at {dist.parent} carries no tritonserver binary")
    return dist


def serve_repository(repository: Path, models: Path) -> list[str]:
    """Write DIR/models from the export's repository; returns the model names."""
    names = []
    for config in sorted(repository.glob("*/config.pbtxt")):
        text = config.read_text(encoding="utf-8")
        if not PLATFORM_LINE.search(text):
            continue
        name = config.parent.name
        target = models / name
        target.mkdir(parents=True)
        (target / "config.pbtxt").write_text(PLATFORM_LINE.sub('backend: "python"', text, count=1), encoding="utf-8")
        for version in (p for p in config.parent.iterdir() if p.is_dir() and p.name.isdigit()):
            (target / version.name).mkdir()
            for item in version.iterdir():
                (target / version.name / item.name).symlink_to(item.resolve())
            (target / version.name / "model.py").write_text(PYTHON_MODEL, encoding="utf-8")
        names.append(name)
    if not names:
        raise SystemExit(f"{repository} holds no onnxruntime_onnx model (no */config.pbtxt from edgescene export)")
    return names


def backend_directory(dist: Path, workdir: Path) -> Path:
    """backends/python with the stub built for this Python (pytriton ships one per minor version)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise SystemExit(f"nvidia-pytriton has no Python-backend stub for Python {version}")
    python = workdir / "backends" / "python"
    python.mkdir(parents=True)
    for item in (dist / "backends" / "python").iterdir():
        if item.is_file():
            (python / item.name).symlink_to(item)
    shutil.copy(stub, python / "triton_python_backend_stub")
    return workdir / "backends"


def server_environment(dist: Path) -> dict[str, str]:
    """The stub embeds libpython: load this interpreter's own (a pyenv or venv Python may differ from
    the system's libpython of the same minor version), and see this venv's packages."""
    libs = [str(dist.parent.parent / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join([*filter(None, libs), env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    env["PYTHONPATH"] = os.pathsep.join([sysconfig.get_paths()["purelib"], env.get("PYTHONPATH", "")]).rstrip(":")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path, help="a Triton repository from edgescene export --format triton")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True, help="an empty folder for the served repository")
    args = parser.parse_args()
    dist = pytriton_dist()
    models = args.workdir / "models"
    names = serve_repository(args.repository, models)
    backends = backend_directory(dist, args.workdir)
    print(f"triton_server: serving {', '.join(names)} on HTTP {args.http_port}, gRPC {args.grpc_port}", flush=True)
    binary = str(dist / "bin" / "tritonserver")
    argv = [
        binary,
        f"--model-repository={models}",
        f"--backend-directory={backends}",
        f"--cache-directory={args.workdir / 'caches'}",
        "--http-address=127.0.0.1",
        f"--http-port={args.http_port}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={args.grpc_port}",
        "--allow-metrics=false",
        "--exit-on-error=true",
        "--log-verbose=0",
    ]
    os.execve(binary, argv, server_environment(dist))


if __name__ == "__main__":
    main()
