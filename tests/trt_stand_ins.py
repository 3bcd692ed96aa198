"""Stand-ins for tensorrt and cuda-python that compute on the host, for the TensorRT runner's tests.

``FakeCudart`` keeps "device" memory in ctypes buffers (pointers are their addresses) and records
every call; ``FakeTrt`` deserializes b"engine" into ``FakeEngine``, whose context computes
``pooled = images.mean((2, 3))`` and ``scaled = 2 * images`` on the addresses it was given.
``FakeEngine.profiles`` lists the optimization profiles (frame ranges). They check how the runner
drives the APIs, not TensorRT. The ``trt_stand_ins`` fixture (tests/conftest.py) installs them.
"""

from __future__ import annotations

import ctypes
import enum
import types

import numpy as np

H = W = 4


class Err(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2


class FakeCudart:
    """cuda-python's runtime on host memory: pointers are addresses of ctypes buffers."""

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self, major: int = 8, minor: int = 7) -> None:
        self.props = types.SimpleNamespace(name=b"Orin\x00", major=major, minor=minor)
        self.memory: dict[int, ctypes.Array] = {}
        self.calls: list[str] = []

    def _alloc(self, nbytes: int):
        buf = (ctypes.c_uint8 * nbytes)()
        self.memory[ctypes.addressof(buf)] = buf
        return Err.cudaSuccess, ctypes.addressof(buf)

    def cudaGetDeviceCount(self):
        return Err.cudaSuccess, 1

    def cudaSetDevice(self, index):
        return (Err.cudaSuccess,)

    def cudaGetDeviceProperties(self, index):
        return Err.cudaSuccess, self.props

    def cudaMalloc(self, nbytes):
        self.calls.append("malloc")
        return self._alloc(nbytes)

    def cudaMallocHost(self, nbytes):
        self.calls.append("malloc_host")
        return self._alloc(nbytes)

    def cudaFree(self, ptr):
        self.calls.append("free")
        del self.memory[ptr]
        return (Err.cudaSuccess,)

    def cudaFreeHost(self, ptr):
        self.calls.append("free_host")
        del self.memory[ptr]
        return (Err.cudaSuccess,)

    def cudaStreamCreate(self):
        return Err.cudaSuccess, 7

    def cudaStreamDestroy(self, stream):
        self.calls.append("stream_destroy")
        return (Err.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        self.calls.append(kind.name)
        ctypes.memmove(dst, src, nbytes)
        return (Err.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):
        self.calls.append("sync")
        return (Err.cudaSuccess,)


def host_array(address: int, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape))
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(address)).reshape(shape)


class FakeContext:
    """pooled = images.mean((2, 3)), scaled = 2 * images, on the addresses it was given."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.profile = 0
        self.profile_switches: list[int] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_optimization_profile_async(self, profile, stream):
        self.profile = profile
        self.profile_switches.append(profile)
        return True

    def set_input_shape(self, name, shape):
        low, high = self.engine.profiles[self.profile]
        if not low <= shape[0] <= high or tuple(shape[1:]) != (3, H, W):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        frames = self.shapes["images"][0]
        return {"pooled": (frames, 3), "scaled": (frames, 3, H, W), "images": self.shapes["images"]}[name]

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def execute_async_v3(self, stream):
        images = host_array(self.addresses["images"], self.shapes["images"])
        host_array(self.addresses["pooled"], self.get_tensor_shape("pooled"))[:] = images.mean(axis=(2, 3))
        host_array(self.addresses["scaled"], self.get_tensor_shape("scaled"))[:] = 2 * images
        return True


class FakeEngine:
    num_io_tensors = 3
    profiles: list[tuple[int, int]] = [(1, 4)]  # frame range of each optimization profile

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.profiles)

    def get_tensor_name(self, index):
        return ["images", "pooled", "scaled"][index]

    def get_tensor_mode(self, name):
        return FakeTrt.TensorIOMode.INPUT if name == "images" else FakeTrt.TensorIOMode.OUTPUT

    def get_tensor_shape(self, name):
        return {"images": (-1, 3, H, W), "pooled": (-1, 3), "scaled": (-1, 3, H, W)}[name]

    def get_tensor_profile_shape(self, name, profile):
        assert name == "images"
        low, high = self.profiles[profile]
        return [(low, 3, H, W), (low, 3, H, W), (high, 3, H, W)]

    def get_tensor_dtype(self, name):
        return "FLOAT"

    def create_execution_context(self):
        return FakeContext(self)


class FakeTrt:
    __version__ = "10.3.0"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class TensorIOMode(enum.Enum):
        INPUT = 0
        OUTPUT = 1

    class Runtime:
        deserialized = 0

        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            FakeTrt.Runtime.deserialized += 1
            return FakeEngine() if data == b"engine" else None

    @staticmethod
    def nptype(dtype):
        return np.float32


def install(monkeypatch, profiles: list[tuple[int, int]] | None = None) -> FakeCudart:
    """Make :mod:`edgescene.trt.runner` use the stand-ins; returns the fake cudart (its call log)."""
    from edgescene.trt import runner

    cudart = FakeCudart()
    FakeTrt.Runtime.deserialized = 0
    monkeypatch.setattr(FakeEngine, "profiles", profiles or [(1, 4)])
    monkeypatch.setattr(runner, "require_tensorrt_and_cuda", lambda: (FakeTrt, cudart))
    return cudart
