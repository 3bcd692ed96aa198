"""Native TensorRT backend: a serialized engine run with tensorrt and cuda-python, no torch.

Follows the TensorRT samples' ``common_runtime.py``: every CUDA call goes through :func:`cuda_call`,
which raises on an error code; device buffers are allocated once, at the optimization profile's
maximum shape, and reused for every call; outputs land in pinned host buffers; one stream, and
per call: host-to-device copies, ``execute_async_v3``, device-to-host copies, one synchronize.
IO is name-based (``num_io_tensors``, ``get_tensor_name``, ``set_input_shape``,
``set_tensor_address``); the engine's first optimization profile is used (export builds one).

An engine runs only on the GPU architecture (compute capability) and the TensorRT version that
built it: both are compared with ``artifact.device`` before the engine is deserialized.
"""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path
from typing import Any

import numpy as np

from edgescene.core.artifact import Artifact, read_artifact
from edgescene.runtime.backends import BaseSession, check_device, check_feeds

INSTALL_HINT = (
    "the native TensorRT backend needs tensorrt >= 10 and cuda-python on a machine with an NVIDIA GPU: "
    "pip install 'edgescene[runtime-gpu]' (on Jetson: JetPack's python3-libnvinfer and "
    "pip install cuda-python); or open the artifact's ONNX export with onnxruntime"
)
REBUILD = "rebuild with `edgescene export --format tensorrt` here"


def require_tensorrt_and_cuda() -> tuple[Any, Any]:
    """(tensorrt, cudart) modules, or ImportError with the install hint."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} (import tensorrt: {exc})") from exc
    if int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0) < 10:
        raise ImportError(
            f"TensorRT {getattr(trt, '__version__', '?')} is too old (the name-based API needs >= 10): {INSTALL_HINT}"
        )
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise ImportError(f"{INSTALL_HINT} (import cuda-python: {exc})") from exc
    return trt, cudart


def cuda_call(result: tuple) -> Any:
    """Unpack a cuda-python call's ``(error, *values)``: raise on an error, return the value(s)."""
    err, values = result[0], result[1:]
    code = int(getattr(err, "value", err))
    if code != 0:
        raise RuntimeError(f"CUDA runtime error {getattr(err, 'name', err)} ({code})")
    return values[0] if len(values) == 1 else (values or None)


def this_device(trt: Any, cudart: Any, device_id: int = 0) -> dict[str, str]:
    """GPU name, compute capability ("8.7") and TensorRT version of this machine."""
    count = cuda_call(cudart.cudaGetDeviceCount())
    if count < 1:
        raise RuntimeError(f"no CUDA device is visible here: {INSTALL_HINT}")
    if not 0 <= device_id < count:
        raise ValueError(f"device_id must be in 0..{count - 1}, got {device_id}")
    cuda_call(cudart.cudaSetDevice(device_id))
    props = cuda_call(cudart.cudaGetDeviceProperties(device_id))
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return {"gpu": name, "compute_capability": f"{props.major}.{props.minor}", "tensorrt": str(trt.__version__)}


def check_engine_device(built: dict[str, Any], here: dict[str, str]) -> None:
    """Refuse an engine whose compute capability or TensorRT version differs from this machine's."""
    keys = [k for k in ("compute_capability", "tensorrt") if built.get(k) is not None and str(built[k]) != here[k]]
    if keys:

        def describe(d: dict) -> str:
            return (
                f"sm {d.get('compute_capability', '?')} with TensorRT {d.get('tensorrt', '?')} on {d.get('gpu', '?')}"
            )

        raise RuntimeError(
            f"engine built for {describe(built)}, this machine has {describe(here)} (differs in "
            f"{' and '.join(keys)}): {REBUILD}"
        )


class _Buffer:
    """One IO tensor: a device buffer at its maximum size and, for outputs, a pinned host buffer."""

    def __init__(self, cudart: Any, name: str, dtype: np.dtype, max_shape: tuple[int, ...], host: bool) -> None:
        self.name, self.dtype, self.max_shape = name, dtype, max_shape
        self.nbytes = max(int(np.prod(max_shape, dtype=np.int64)) * dtype.itemsize, 1)
        self.device = cuda_call(cudart.cudaMalloc(self.nbytes))
        self.host_ptr = None
        self.host = None
        if host:
            self.host_ptr = cuda_call(cudart.cudaMallocHost(self.nbytes))
            raw = ctypes.cast(int(self.host_ptr), ctypes.POINTER(ctypes.c_uint8))
            self.host = np.ctypeslib.as_array(raw, (self.nbytes,))

    def free(self, cudart: Any) -> None:
        if self.device is not None:
            cuda_call(cudart.cudaFree(self.device))
            self.device = None
        if self.host_ptr is not None:
            self.host = None
            cuda_call(cudart.cudaFreeHost(self.host_ptr))
            self.host_ptr = None


def _dims(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


class TensorRTSession(BaseSession):
    """A TensorRT artifact folder (``model.engine``). Options: ``device_id`` (default 0)."""

    backend = "tensorrt"

    def __init__(
        self, folder: str | Path, artifact: Artifact | None = None, device: str = "auto", *, device_id: int = 0
    ) -> None:
        check_device(
            device,
            ("auto", "cuda", "tensorrt"),
            "tensorrt",
            ": a TensorRT engine runs on an NVIDIA GPU only; for the CPU export an ONNX format",
        )
        folder = Path(folder)
        self.artifact = artifact if artifact is not None else read_artifact(folder)
        self.device = "cuda"
        self._buffers: dict[str, _Buffer] = {}
        self._stream = None
        trt, cudart = require_tensorrt_and_cuda()
        self._trt, self._cudart = trt, cudart
        engine_file = self.artifact.files.get("engine")
        if not engine_file:
            raise ValueError(f"{folder}: artifact.json names no engine file (files: {self.artifact.files})")
        self.here = this_device(trt, cudart, device_id)
        check_engine_device(self.artifact.device, self.here)

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine((folder / engine_file).read_bytes())
        if self.engine is None:
            raise RuntimeError(
                f"TensorRT {trt.__version__} could not deserialize {folder / engine_file} on "
                f"{self.here['gpu']}: {REBUILD}"
            )
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeError(f"could not create an execution context for {folder / engine_file} (out of GPU memory?)")
        self._stream = cuda_call(cudart.cudaStreamCreate())

        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        expected = ([t.name for t in self.artifact.inputs], [t.name for t in self.artifact.outputs])
        if (sorted(self.inputs), sorted(self.outputs)) != tuple(sorted(e) for e in expected):
            raise RuntimeError(
                f"the engine's IO {self.inputs} -> {self.outputs} differs from artifact.json's "
                f"{expected[0]} -> {expected[1]}: {REBUILD}"
            )
        # Inputs at the profile's maximum shape; output maxima follow from them.
        for name in self.inputs:
            shape = _dims(self.engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                shape = _dims(self.engine.get_tensor_profile_shape(name, 0)[2])
            if not self.context.set_input_shape(name, shape):
                raise RuntimeError(f"TensorRT rejected the maximum shape {shape} of input {name!r}")
            self._buffers[name] = _Buffer(cudart, name, self._nptype(name), shape, host=False)
        for name in self.outputs:
            shape = _dims(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(
                    f"output {name!r} has a data-dependent shape {shape}, which this runtime does not support"
                )
            self._buffers[name] = _Buffer(cudart, name, self._nptype(name), shape, host=True)
        for name, buf in self._buffers.items():
            self.context.set_tensor_address(name, int(buf.device))

    def _nptype(self, name: str) -> np.dtype:
        dtype = self.engine.get_tensor_dtype(name)
        try:
            return np.dtype(self._trt.nptype(dtype))
        except TypeError as exc:
            raise RuntimeError(f"tensor {name!r} has TensorRT dtype {dtype}, which numpy cannot hold") from exc

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._stream is None:
            raise RuntimeError("this session is closed")
        cudart, stream = self._cudart, self._stream
        prepared, _ = check_feeds(self.artifact, feeds)
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        staged = []  # keep converted arrays alive until the stream is synchronized
        for name in self.inputs:
            buf = self._buffers[name]
            value = np.ascontiguousarray(prepared[name], dtype=buf.dtype)
            if value.nbytes > buf.nbytes:
                raise ValueError(f"input {name!r} of shape {value.shape} exceeds the engine's maximum {buf.max_shape}")
            if not self.context.set_input_shape(name, value.shape):
                raise ValueError(
                    f"TensorRT rejected shape {value.shape} for input {name!r} (profile maximum {buf.max_shape})"
                )
            staged.append(value)
            cuda_call(cudart.cudaMemcpyAsync(buf.device, value.ctypes.data, value.nbytes, h2d, stream))
        if not self.context.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed: read the TensorRT log above")
        shapes = {}
        for name in self.outputs:
            buf = self._buffers[name]
            shapes[name] = _dims(self.context.get_tensor_shape(name))
            nbytes = int(np.prod(shapes[name], dtype=np.int64)) * buf.dtype.itemsize
            cuda_call(cudart.cudaMemcpyAsync(buf.host_ptr, buf.device, nbytes, d2h, stream))
        cuda_call(cudart.cudaStreamSynchronize(stream))
        specs = {t.name: np.dtype(t.dtype) for t in self.artifact.outputs}
        outputs = {}
        for name in self.outputs:  # copy out of the pinned buffers, which the next call overwrites
            buf, shape = self._buffers[name], shapes[name]
            count = int(np.prod(shape, dtype=np.int64))
            view = buf.host[: count * buf.dtype.itemsize].view(buf.dtype).reshape(shape)
            outputs[name] = view.astype(specs[name], copy=True)
        return {t.name: outputs[t.name] for t in self.artifact.outputs}

    def close(self) -> None:
        """Free the device and pinned buffers and the stream."""
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for buf in self._buffers.values():
            buf.free(cudart)
        self._buffers.clear()
        if self._stream is not None:
            cuda_call(cudart.cudaStreamDestroy(self._stream))
            self._stream = None
        self.context = self.engine = None

    def __del__(self) -> None:
        # at interpreter shutdown CUDA (or the module globals) may already be gone: nothing left to free
        with contextlib.suppress(Exception):
            self.close()
