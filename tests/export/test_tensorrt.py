"""TensorRT engine building and running (export/tensorrt.py).

Three layers of tests:
- everywhere: profile validation, the ONNX-precision check, and the install hint when tensorrt is missing;
- everywhere, against a stand-in ``tensorrt`` module that records calls: the build sequence (strongly
  typed network, no precision flags, workspace, profiles, timing cache round trip, atomic writes,
  parser errors) and the runner's device check. It checks how the module drives the API, not TensorRT;
- ``gpu`` + ``tensorrt``: a real engine from a tiny ONNX model, compared with onnxruntime on CPU.
"""

from __future__ import annotations

import enum
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgescene.export.tensorrt import EngineProfile, build_engine, frame_profile, timing_cache_file
from edgescene.trt.runner import TensorRTRunner

H = W = 8


class _Tiny(nn.Module):
    """Conv + ReLU with two outputs: images (S, 3, 8, 8) -> features (S, 4, 8, 8), pooled (S, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, images: torch.Tensor):
        features = torch.relu(self.conv(images))
        return features, features.mean(dim=(2, 3))


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("trt") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter, on purpose
        torch.onnx.export(
            _Tiny().eval(),
            (torch.rand(2, 3, H, W),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["features", "pooled"],
            dynamic_axes={"images": {0: "frames"}, "features": {0: "frames"}, "pooled": {0: "frames"}},
        )
    return path


@pytest.fixture(scope="module")
def tiny_onnx_fp16(tiny_onnx) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    path = tiny_onnx.with_name("tiny_fp16.onnx")
    onnx.save(convert_float_to_float16(onnx.load(str(tiny_onnx)), keep_io_types=True), str(path))
    return path


def _profiles():
    return [frame_profile("images", (1, 2, 4), (3, H, W))]


# ---------------------------------------------------------------------------------------------
# Everywhere


def test_frame_profile_inserts_frames_at_the_axis():
    p = frame_profile("images", (1, 4, 16), (3, 518, 518))
    assert (p.min_shape, p.opt_shape, p.max_shape) == ((1, 3, 518, 518), (4, 3, 518, 518), (16, 3, 518, 518))
    p = frame_profile("images", (2, 2, 8), (1, 3, 518, 392), frame_axis=1)
    assert p.min_shape == (1, 2, 3, 518, 392) and p.max_shape == (1, 8, 3, 518, 392)
    assert p.as_dict() == {
        "input": "images",
        "min": [1, 2, 3, 518, 392],
        "opt": [1, 2, 3, 518, 392],
        "max": [1, 8, 3, 518, 392],
    }


@pytest.mark.parametrize("frames", [(0, 1, 2), (2, 1, 4), (1, 5, 4), (3, 2, 1)])
def test_frame_profile_rejects_unordered_ranges(frames):
    with pytest.raises(ValueError, match=rf"min={frames[0]}, opt={frames[1]}, max={frames[2]}"):
        frame_profile("images", frames, (3, H, W))


def test_frame_profile_rejects_bad_axis_and_tail():
    with pytest.raises(ValueError, match="frame_axis"):
        frame_profile("images", (1, 1, 1), (3, H, W), frame_axis=4)
    with pytest.raises(ValueError, match="tail"):
        frame_profile("images", (1, 1, 1), (3, 0, W))
    with pytest.raises(ValueError, match=r"\(min, opt, max\)"):
        frame_profile("images", (1, 2), (3, H, W))


def test_engine_profile_validates_ranks_and_order():
    with pytest.raises(ValueError, match="ranks"):
        EngineProfile("x", (1, 3), (1, 3), (1, 3, 4))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        EngineProfile("x", (1, 3), (2, 2), (4, 3))
    p = EngineProfile("x", [1, 3], [2, 3], [4, 3])  # lists become tuples
    assert p.opt_shape == (2, 3)


def test_build_engine_without_tensorrt_gives_the_install_hint(tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails even where it is installed
    with pytest.raises(ImportError, match="pip install") as info:
        build_engine(tiny_onnx, tmp_path / "m.engine", _profiles(), "fp32")
    assert "JetPack" in str(info.value)
    assert not (tmp_path / "m.engine").exists()


def test_module_imports_without_tensorrt_or_torch():
    code = (
        "import sys; sys.modules['tensorrt'] = None; sys.modules['torch'] = None; "
        "import edgescene.export.tensorrt as m; print(m.frame_profile('x', (1, 1, 2), (3,)).max_shape)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(2, 3)"


def test_build_engine_rejects_bad_arguments_before_touching_tensorrt(tiny_onnx, tiny_onnx_fp16, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    engine = tmp_path / "m.engine"
    with pytest.raises(ValueError, match="fp32, fp16"):
        build_engine(tiny_onnx, engine, _profiles(), "int8")
    with pytest.raises(ValueError, match="workspace_gb"):
        build_engine(tiny_onnx, engine, _profiles(), "fp32", workspace_gb=0)
    with pytest.raises(ValueError, match="builder_optimization_level"):
        build_engine(tiny_onnx, engine, _profiles(), "fp32", builder_optimization_level=6)
    with pytest.raises(ValueError, match="non-empty"):
        build_engine(tiny_onnx, engine, [], "fp32")
    with pytest.raises(FileNotFoundError):
        build_engine(tmp_path / "nope.onnx", engine, _profiles(), "fp32")
    # strong typing: the precision is the graph's, so a mismatch is refused
    with pytest.raises(ValueError, match="holds no float16"):
        build_engine(tiny_onnx, engine, _profiles(), "fp16")
    with pytest.raises(ValueError, match="holds float16"):
        build_engine(tiny_onnx_fp16, engine, _profiles(), "fp32")


# ---------------------------------------------------------------------------------------------
# Everywhere, against a stand-in tensorrt module


class _Flag(enum.IntEnum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 5


class _Pool(enum.IntEnum):
    WORKSPACE = 0


class _BuilderFlag(enum.IntEnum):
    FP16 = 0
    TF32 = 7


class _Tensor:
    def __init__(self, name, shape, dtype="DataType.FLOAT"):
        self.name, self.shape, self.dtype = name, shape, dtype


def _make_fake_trt(version: str = "10.13.0.35"):
    """A stand-in ``tensorrt`` exposing the calls build_engine makes; records what it was given."""
    rec = types.SimpleNamespace(
        flags=None,
        set_flags=[],
        cleared_flags=[],
        pool={},
        profiles=[],
        cache_in=[],
        opt_level=None,
        parse_errors=[],
        build_result=b"ENGINE-PLAN",
        built=0,
    )

    class Network:
        def __init__(self):
            self.inputs, self.outputs = [], []
            self.num_inputs = self.num_outputs = 0

        def get_input(self, i):
            return self.inputs[i]

        def get_output(self, i):
            return self.outputs[i]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network
            self.num_errors = 0

        def parse_from_file(self, path):
            if rec.parse_errors:
                self.num_errors = len(rec.parse_errors)
                return False
            import onnx

            graph = onnx.load(path, load_external_data=False).graph

            def shape(v):
                return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim)

            self.network.inputs = [_Tensor(v.name, shape(v)) for v in graph.input]
            self.network.outputs = [_Tensor(v.name, shape(v)) for v in graph.output]
            self.network.num_inputs, self.network.num_outputs = len(graph.input), len(graph.output)
            return True

        def get_error(self, i):
            return rec.parse_errors[i]

    class Cache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+tactics"

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Config:
        def __init__(self):
            self.cache = None
            self._level = None

        def set_memory_pool_limit(self, pool, size):
            rec.pool[pool] = size

        def set_flag(self, flag):
            rec.set_flags.append(flag)

        def clear_flag(self, flag):
            rec.cleared_flags.append(flag)

        def add_optimization_profile(self, profile):
            rec.profiles.append(profile.shapes)

        def create_timing_cache(self, data):
            rec.cache_in.append(bytes(data))
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            assert ignore_mismatch is False
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        @property
        def builder_optimization_level(self):
            return self._level

        @builder_optimization_level.setter
        def builder_optimization_level(self, level):
            rec.opt_level = level

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            rec.flags = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            rec.built += 1
            return rec.build_result

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    module = types.ModuleType("tensorrt")
    module.__version__ = version
    module.Logger, module.Builder, module.OnnxParser = Logger, Builder, OnnxParser
    module.NetworkDefinitionCreationFlag, module.MemoryPoolType, module.BuilderFlag = _Flag, _Pool, _BuilderFlag
    return module, rec


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (8, 9))


@pytest.fixture
def fake_trt(monkeypatch, fake_gpu):
    module, rec = _make_fake_trt()
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return rec


def test_build_sequence_is_strongly_typed_with_profiles_and_a_timing_cache(tiny_onnx, tmp_path, fake_trt):
    engine, cache = tmp_path / "out" / "model.engine", tmp_path / "timing.cache"
    lines = []
    profiles = [frame_profile("images", (1, 1, 1), (3, H, W)), frame_profile("images", (2, 4, 8), (3, H, W))]
    info = build_engine(
        tiny_onnx,
        engine,
        profiles,
        "fp32",
        timing_cache_path=cache,
        workspace_gb=1.5,
        builder_optimization_level=3,
        log=lines.append,
    )

    assert fake_trt.flags == 1 << int(_Flag.STRONGLY_TYPED)
    assert fake_trt.set_flags == []  # precision comes from the graph, never from builder flags
    assert fake_trt.cleared_flags == [_BuilderFlag.TF32] and info["tf32"] is False  # fp32 means fp32, not TF32
    assert fake_trt.pool == {_Pool.WORKSPACE: int(1.5 * 2**30)}
    assert fake_trt.opt_level == 3
    assert fake_trt.profiles == [
        {"images": ((1, 3, H, W),) * 3},
        {"images": ((2, 3, H, W), (4, 3, H, W), (8, 3, H, W))},
    ]
    assert engine.read_bytes() == b"ENGINE-PLAN"
    assert cache.read_bytes() == b"+tactics"
    assert [p.name for p in engine.parent.iterdir()] == ["model.engine"]  # no temp file left behind
    assert any("input images shape (-1, 3, 8, 8)" in line for line in lines)
    assert any("output pooled shape (-1, 4)" in line for line in lines)
    assert info["precision"] == "fp32" and info["tensorrt"] == "10.13.0.35"
    assert info["gpu"] == "Fake GPU" and info["compute_capability"] == "8.9"
    assert info["engine_bytes"] == len(b"ENGINE-PLAN") and info["build_s"] >= 0
    assert info["profiles"][1]["images"]["max"] == [8, 3, H, W]
    assert info["timing_cache"]["loaded_bytes"] == 0 and "cuda" in info

    again = build_engine(tiny_onnx, engine, profiles, "fp32", timing_cache_path=cache, log=lines.append)
    assert fake_trt.cache_in == [b"", b"+tactics"]  # the second build starts from the first one's cache
    assert again["timing_cache"]["loaded_bytes"] == len(b"+tactics")
    assert any("reusing timing cache" in line for line in lines)


def test_tf32_can_be_kept_and_the_timing_cache_is_keyed_by_gpu_and_tensorrt(tiny_onnx, tmp_path, fake_trt, monkeypatch):
    profiles = [frame_profile("images", (1, 1, 2), (3, H, W))]
    info = build_engine(tiny_onnx, tmp_path / "m.engine", profiles, "fp32", tf32=True, log=lambda s: None)
    assert fake_trt.cleared_flags == [] and info["tf32"] is True
    monkeypatch.setenv("EDGESCENE_CACHE", str(tmp_path / "cache"))
    path = timing_cache_file({"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}, "10.13.0.35")
    assert path == tmp_path / "cache" / "tensorrt" / "NVIDIA-H100-80GB-HBM3-sm9.0-trt10.13.0.35.cache"
    other = timing_cache_file({"gpu": "Orin", "compute_capability": "8.7"}, "10.3.0")
    assert other.parent == path.parent and other != path


def test_network_flag_absent_means_strong_typing_is_the_only_mode(tiny_onnx, tmp_path, monkeypatch, fake_gpu):
    module, rec = _make_fake_trt("11.4.0.106")

    class Flags11(enum.IntEnum):  # TensorRT 11: no STRONGLY_TYPED member
        PREFER_JIT_PYTHON_PLUGINS = 1

    module.NetworkDefinitionCreationFlag = Flags11
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    info = build_engine(tiny_onnx, tmp_path / "m.engine", _profiles(), "fp32", log=lambda s: None)
    assert rec.flags == 0 and info["tensorrt"] == "11.4.0.106" and info["timing_cache"] is None
    del module.NetworkDefinitionCreationFlag
    build_engine(tiny_onnx, tmp_path / "m.engine", _profiles(), "fp32", log=lambda s: None)
    assert rec.flags == 0


def test_parser_errors_are_all_reported(tiny_onnx, tmp_path, fake_trt):
    fake_trt.parse_errors = ["node Foo: unsupported op", "node Bar: bad shape"]
    with pytest.raises(RuntimeError, match="2 error") as info:
        build_engine(tiny_onnx, tmp_path / "m.engine", _profiles(), "fp32", log=lambda s: None)
    assert "unsupported op" in str(info.value) and "bad shape" in str(info.value)


def test_failed_build_points_at_the_log_and_writes_nothing(tiny_onnx, tmp_path, fake_trt):
    fake_trt.build_result = None
    with pytest.raises(RuntimeError, match="workspace_gb"):
        build_engine(
            tiny_onnx,
            tmp_path / "m.engine",
            _profiles(),
            "fp32",
            timing_cache_path=tmp_path / "t.cache",
            log=lambda s: None,
        )
    assert list(tmp_path.iterdir()) == []


def test_profiles_must_match_the_network_inputs(tiny_onnx, tmp_path, fake_trt):
    engine = tmp_path / "m.engine"
    with pytest.raises(ValueError, match="network inputs are"):
        build_engine(tiny_onnx, engine, [frame_profile("pixels", (1, 1, 2), (3, H, W))], "fp32", log=lambda s: None)
    with pytest.raises(ValueError, match="fixed at 8"):
        build_engine(tiny_onnx, engine, [frame_profile("images", (1, 1, 2), (3, H, 16))], "fp32", log=lambda s: None)
    with pytest.raises(ValueError, match="rank"):
        build_engine(tiny_onnx, engine, [frame_profile("images", (1, 1, 2), (3, H))], "fp32", log=lambda s: None)
    assert fake_trt.built == 0


def test_old_tensorrt_and_missing_cuda_are_refused(tiny_onnx, tmp_path, monkeypatch):
    module, _ = _make_fake_trt("8.6.1")
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    with pytest.raises(ImportError, match=">= 10"):
        build_engine(tiny_onnx, tmp_path / "m.engine", _profiles(), "fp32")
    module.__version__ = "10.3.0"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        build_engine(tiny_onnx, tmp_path / "m.engine", _profiles(), "fp32")


# ---------------------------------------------------------------------------------------------
# Real TensorRT on a GPU


def _tensorrt_missing() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError as e:
        return f"tensorrt is not installed ({e})"
    if not torch.cuda.is_available():
        return "CUDA is not available (no NVIDIA GPU or a CPU build of torch)"
    return None


_SKIP = _tensorrt_missing()


def _ort(onnx_path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"images": images}), strict=True))


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")
def test_fp32_engine_matches_onnxruntime_and_reuses_the_timing_cache(tiny_onnx, tmp_path):
    engine, cache = tmp_path / "model.engine", tmp_path / "timing.cache"
    profiles = [frame_profile("images", (1, 2, 4), (3, H, W))]
    info = build_engine(tiny_onnx, engine, profiles, "fp32", timing_cache_path=cache, workspace_gb=1.0)
    assert engine.stat().st_size == info["engine_bytes"] > 0
    assert cache.is_file() and cache.stat().st_size > 0 and info["precision"] == "fp32"
    assert info["compute_capability"] == "{}.{}".format(*torch.cuda.get_device_capability())

    runner = TensorRTRunner(engine, expected_device=info)
    assert runner.inputs == ["images"] and set(runner.outputs) == {"features", "pooled"}
    rng = np.random.default_rng(0)
    for frames in (1, 3, 1):
        images = rng.random((frames, 3, H, W), dtype=np.float32)
        got, want = runner({"images": images}), _ort(tiny_onnx, images)
        for name in want:
            assert got[name].shape == want[name].shape and got[name].dtype == np.float32
            assert np.abs(got[name] - want[name]).max() < 1e-4, name
    with pytest.raises(ValueError, match="fit no optimization profile"):
        runner({"images": np.zeros((5, 3, H, W), np.float32)})

    again = build_engine(
        tiny_onnx, tmp_path / "again.engine", profiles, "fp32", timing_cache_path=cache, workspace_gb=1.0
    )
    assert again["timing_cache"]["loaded_bytes"] == info["timing_cache"]["written_bytes"] > 0


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")
def test_fp16_engine_from_the_fp16_graph_and_two_profiles(tiny_onnx_fp16, tiny_onnx, tmp_path):
    engine = tmp_path / "fp16.engine"
    profiles = [frame_profile("images", (1, 1, 1), (3, H, W)), frame_profile("images", (2, 3, 4), (3, H, W))]
    info = build_engine(tiny_onnx_fp16, engine, profiles, "fp16", workspace_gb=1.0)
    assert info["precision"] == "fp16" and len(info["profiles"]) == 2
    runner = TensorRTRunner(engine, expected_device=info)
    rng = np.random.default_rng(1)
    for frames in (1, 3, 1):  # switches between the two optimization profiles
        images = rng.random((frames, 3, H, W), dtype=np.float32)
        got, want = runner({"images": images}), _ort(tiny_onnx, images)
        for name in want:
            assert np.abs(got[name] - want[name]).max() < 1e-2, name
