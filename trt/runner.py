"""One TensorRT engine on numpy feeds: name-based TensorRT 10 API, cuda-python, no torch.

Follows the TensorRT samples' ``common_runtime.py``: every CUDA call goes through :func:`cuda_call`,
which raises on an error code; device buffers are allocated once, at the largest shape any
optimization profile admits, and reused for every call; outputs land in pinned host buffers; one
stream, and per call: host-to-device copies, ``execute_async_v3``, device-to-host copies, one
synchronize. IO is by name (``num_io_tensors``, ``get_tensor_name``, ``set_input_shape``,
``set_tensor_address``). An engine with several optimization profiles (e.g. one per frame-count
regime) switches to the first profile whose ranges contain the call's input shapes.

Thread safety: TensorRT needs one execution context per concurrent thread; a runner has one
context, one stream and one set of buffers, so calls are serialized by a lock (two threads get
their own results, one after the other).

An engine runs only on the GPU architecture (compute capability) and the TensorRT version that
built it: both are compared with what the build recorded before the engine is deserialized.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from pathlib import Path
from typing import Any

import numpy as np

INSTALL_HINT = (
    "TensorRT engines need tensorrt >= 10 and cuda-python on a machine with an NVIDIA GPU: "
    "pip install 'edgescene[runtime-gpu]' (cuda-python < 13 for CUDA 12 drivers; on Jetson: JetPack's "
    "python3-libnvinfer and pip install 'cuda-python>=12.6.1,<13'); or open the artifact's ONNX export "
    "with onnxruntime"
)
REBUILD = "rebuild with `edgescene export --format tensorrt` here"


def require_tensorrt_and_cuda() -> tuple[Any, Any]:
    """(tensorrt, cudart) modules, or ImportError with the install hint."""
    try:
        import tensorrt as trt
    except ImportError as exc:  # also raised when sys.modules["tensorrt"] is None
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
        self.host: np.ndarray | None = None
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


def _larger(a: tuple[int, ...] | None, b: tuple[int, ...]) -> tuple[int, ...]:
    """The shape with more elements (buffers are flat: only the size matters)."""
    if a is None:
        return b
    return b if int(np.prod(b, dtype=np.int64)) > int(np.prod(a, dtype=np.int64)) else a


class TensorRTRunner:
    """A serialized engine (``.engine``) run on numpy feeds.

    ``expected_device``: what the build recorded (``artifact.json`` ``device``: GPU, compute
    capability, TensorRT version); an engine built for another compute capability or TensorRT
    version is refused before it is deserialized. ``device_id``: the CUDA device to run on.
    """

    def __init__(self, engine_path: str | Path, expected_device: dict | None = None, device_id: int = 0) -> None:
        engine_path = Path(engine_path)
        trt, cudart = require_tensorrt_and_cuda()
        self._trt, self._cudart = trt, cudart
        self._buffers: dict[str, _Buffer] = {}
        self._stream: Any = None  # a cudaStream_t while open, None once closed
        self._lock = threading.Lock()
        if not engine_path.is_file():
            raise FileNotFoundError(f"TensorRT engine not found: {engine_path}")
        self.here = this_device(trt, cudart, device_id)
        check_engine_device(expected_device or {}, self.here)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise RuntimeError(
                f"TensorRT {trt.__version__} could not deserialize {engine_path} on {self.here['gpu']}: {REBUILD}"
            )
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeError(f"could not create an execution context for {engine_path} (out of GPU memory?)")
        self._stream = cuda_call(cudart.cudaStreamCreate())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: self._nptype(n) for n in names}
        self.num_profiles = int(getattr(self.engine, "num_optimization_profiles", 1) or 1)
        self._profile = 0
        self._allocate()

    # -- set-up ------------------------------------------------------------------------------
    def _nptype(self, name: str) -> np.dtype:
        dtype = self.engine.get_tensor_dtype(name)
        try:
            return np.dtype(self._trt.nptype(dtype))
        except TypeError as exc:
            raise RuntimeError(f"tensor {name!r} has TensorRT dtype {dtype}, which numpy cannot hold") from exc

    def _profile_range(self, name: str, profile: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(min, max) shape of input ``name`` in ``profile`` (the fixed shape when nothing is dynamic)."""
        shape = _dims(self.engine.get_tensor_shape(name))
        if all(d >= 0 for d in shape):
            return shape, shape
        low, _, high = self.engine.get_tensor_profile_shape(name, profile)
        return _dims(low), _dims(high)

    def _use_profile(self, profile: int) -> None:
        if profile != self._profile:
            if not self.context.set_optimization_profile_async(profile, int(self._stream)):
                raise RuntimeError(f"TensorRT could not switch to optimization profile {profile}")
            self._profile = profile

    def _allocate(self) -> None:
        """Buffers at the largest shape of every profile: inputs at their maxima, outputs as implied."""
        largest: dict[str, tuple[int, ...] | None] = dict.fromkeys(self.inputs + self.outputs)
        for profile in range(self.num_profiles):
            self._use_profile(profile)
            for name in self.inputs:
                high = self._profile_range(name, profile)[1]
                if not self.context.set_input_shape(name, high):
                    raise RuntimeError(f"TensorRT rejected the maximum shape {high} of input {name!r}")
                largest[name] = _larger(largest[name], high)
            for name in self.outputs:
                shape = _dims(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"output {name!r} has a data-dependent shape {shape}, which is not supported")
                largest[name] = _larger(largest[name], shape)
        self._use_profile(0)
        for name, size in largest.items():
            if size is None:
                raise RuntimeError(f"TensorRT gave no shape for {name!r} in any optimization profile")
            self._buffers[name] = _Buffer(self._cudart, name, self.dtypes[name], size, host=name in self.outputs)
        for name, buf in self._buffers.items():
            self.context.set_tensor_address(name, int(buf.device))

    # -- running -----------------------------------------------------------------------------
    def input_spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Input name -> (shape with -1 for dynamic axes, numpy dtype)."""
        return {n: (_dims(self.engine.get_tensor_shape(n)), self.dtypes[n]) for n in self.inputs}

    def _select_profile(self, shapes: dict[str, tuple[int, ...]]) -> int:
        ranges = []
        for profile in range(self.num_profiles):
            fits = True
            for name, shape in shapes.items():
                low, high = self._profile_range(name, profile)
                ranges.append(f"profile {profile} {name}: {low}..{high}")
                fits &= len(low) == len(shape) and all(a <= d <= b for a, d, b in zip(low, shape, high, strict=True))
            if fits:
                return profile
        raise ValueError(f"input shapes {shapes} fit no optimization profile of the engine ({'; '.join(ranges)})")

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the engine once: ``feeds`` maps every input name to an array; returns every output (copies)."""
        if set(feeds) != set(self.inputs):
            raise ValueError(f"feeds must name exactly the engine inputs {self.inputs}; got {sorted(feeds)}")
        arrays = {}
        for name in self.inputs:
            want, value = self.dtypes[name], np.asarray(feeds[name])
            if value.dtype != want and value.dtype.kind != want.kind:  # float64 -> float32 is fine, int -> float not
                raise ValueError(f"input {name!r} must be {want}, got {value.dtype}")
            arrays[name] = np.ascontiguousarray(value, dtype=want)  # kept alive until the stream is synchronized
        with self._lock:
            if self._stream is None:
                raise RuntimeError("this session is closed")
            return self._run(arrays)

    def _run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, stream = self._cudart, self._stream
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        if self.num_profiles > 1:
            self._use_profile(self._select_profile({n: a.shape for n, a in arrays.items()}))
        for name, value in arrays.items():
            buf = self._buffers[name]
            if value.nbytes > buf.nbytes:
                raise ValueError(f"input {name!r} of shape {value.shape} exceeds the engine's maximum {buf.max_shape}")
            if not self.context.set_input_shape(name, value.shape):
                raise ValueError(f"TensorRT rejected shape {value.shape} for input {name!r} (maximum {buf.max_shape})")
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
        outputs = {}
        for name in self.outputs:  # copy out of the pinned buffers, which the next call overwrites
            buf, shape = self._buffers[name], shapes[name]
            count = int(np.prod(shape, dtype=np.int64))
            assert buf.host is not None  # outputs have pinned host buffers
            outputs[name] = buf.host[: count * buf.dtype.itemsize].view(buf.dtype).reshape(shape).copy()
        return outputs

    def close(self) -> None:
        """Free the device and pinned buffers and the stream; the runner cannot run afterwards."""
        cudart = getattr(self, "_cudart", None)
        lock = getattr(self, "_lock", None)
        if cudart is None or lock is None:
            return
        with lock:
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


__all__ = [
    "INSTALL_HINT",
    "TensorRTRunner",
    "check_engine_device",
    "cuda_call",
    "require_tensorrt_and_cuda",
    "this_device",
]
