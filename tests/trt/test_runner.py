"""The one TensorRT runner (edgescene.trt.runner) against host stand-ins of tensorrt and cuda-python:
optimization profiles, concurrent callers, the device check and the install hint.

The stand-ins (tests/trt_stand_ins.py) check how the runner drives the APIs, not TensorRT; the real
engine is compared with onnxruntime by the gpu + tensorrt tests in tests/export and tests/runtime.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import trt_stand_ins
from trt_stand_ins import FakeTrt, H, W

from edgescene.trt.runner import TensorRTRunner

BUILT = {"gpu": "Orin", "compute_capability": "8.7", "tensorrt": "10.3.0"}


@pytest.fixture
def engine(tmp_path):
    path = tmp_path / "model.engine"
    path.write_bytes(b"engine")
    return path


def test_buffers_cover_every_profile_and_calls_switch_profiles(engine, monkeypatch):
    cudart = trt_stand_ins.install(monkeypatch, profiles=[(1, 1), (2, 6)])
    runner = TensorRTRunner(engine, expected_device=BUILT)
    assert runner.num_profiles == 2
    assert runner._buffers["images"].max_shape == (6, 3, H, W)  # the largest over both profiles
    assert runner._buffers["scaled"].nbytes == 6 * 3 * H * W * 4
    allocations = cudart.calls.count("malloc")
    rng = np.random.default_rng(0)
    for frames, profile in ((1, 0), (5, 1), (6, 1), (1, 0)):
        images = rng.random((frames, 3, H, W), dtype=np.float32)
        out = runner({"images": images})
        assert runner._profile == profile
        np.testing.assert_array_equal(out["scaled"], 2 * images)
        np.testing.assert_allclose(out["pooled"], images.mean(axis=(2, 3)), rtol=1e-6)
    assert cudart.calls.count("malloc") == allocations  # buffers made once, reused for every profile
    with pytest.raises(ValueError, match=r"fit no optimization profile.*profile 1 images: \(2, 3, 4, 4\)\.\.\(6, 3"):
        runner({"images": np.zeros((7, 3, H, W), np.float32)})
    with pytest.raises(ValueError, match="exactly the engine inputs"):
        runner({"frames": np.zeros((1, 3, H, W), np.float32)})
    with pytest.raises(ValueError, match="must be float32, got int64"):
        runner({"images": np.zeros((1, 3, H, W), np.int64)})
    runner.close()
    assert cudart.memory == {}


def test_two_threads_on_one_runner_get_their_own_results(engine, monkeypatch):
    trt_stand_ins.install(monkeypatch)
    runner = TensorRTRunner(engine)
    rng = np.random.default_rng(1)
    feeds = [rng.random((n, 3, H, W), dtype=np.float32) for n in (1, 3)]
    errors, mismatches = [], []

    def client(images):
        try:
            for _ in range(200):
                out = runner({"images": images})
                if out["scaled"].shape != images.shape or not np.array_equal(out["scaled"], 2 * images):
                    mismatches.append(images.shape)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(f,)) for f in feeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and mismatches == []
    runner.close()


def test_an_engine_for_another_gpu_or_tensorrt_is_refused_unread(engine, monkeypatch):
    cudart = trt_stand_ins.install(monkeypatch)
    cudart.props.major, cudart.props.minor = 9, 0
    with pytest.raises(RuntimeError, match=r"built for sm 8\.7 .* this machine has sm 9\.0 .*differs in compute"):
        TensorRTRunner(engine, expected_device=BUILT)
    cudart.props.major, cudart.props.minor = 8, 7
    with pytest.raises(RuntimeError, match="differs in tensorrt"):
        TensorRTRunner(engine, expected_device={**BUILT, "tensorrt": "10.16.1"})
    assert FakeTrt.Runtime.deserialized == 0
    with pytest.raises(FileNotFoundError, match="engine not found"):
        TensorRTRunner(engine.with_name("missing.engine"))


def test_without_tensorrt_the_error_says_how_to_install(engine, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ImportError, match=r"edgescene\[runtime-gpu\].*cuda-python>=12\.6\.1,<13"):
        TensorRTRunner(engine)


def test_closed_runner_refuses_to_run(engine, monkeypatch):
    trt_stand_ins.install(monkeypatch)
    runner = TensorRTRunner(engine)
    runner.close()
    runner.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        runner({"images": np.zeros((1, 3, H, W), np.float32)})
