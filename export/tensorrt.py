"""TensorRT engines from the exported ONNX graph.

``build_engine`` turns an ONNX file into a serialized TensorRT engine (a ``.engine`` plan) with one
optimization profile per frame-count regime, a persistent timing cache and atomic writes, and
returns a description of the build (TensorRT version, GPU, compute capability, precision,
profiles). Engines are run, by the parity gate as by the runtime and the bench, with the one
runner :class:`edgescene.trt.runner.TensorRTRunner`.

TF32. TensorRT enables TF32 for float32 layers by default on Ampere and newer GPUs (Orin, H100),
and strong typing does not turn it off: an "fp32" engine would compute its matrix products with
10-bit mantissas and miss the 1e-4 fp32 gate. ``build_engine`` clears ``BuilderFlag.TF32`` for
fp32 builds (``tf32=False``; pass ``tf32=True`` to keep it, and the gate judges the result).

Timing cache. Kept in :func:`timing_cache_file`, a cache folder keyed by GPU and TensorRT version
(``$EDGESCENE_CACHE`` or ``~/.cache/edgescene``), so repeated exports on one machine reuse it.

Strong typing. Every network is created strongly typed: TensorRT 11 removed weak typing (the
``BuilderFlag.FP16/BF16/INT8`` switches, ``OBEY_PRECISION_CONSTRAINTS`` and calibrators) and 10.12
deprecated it. The precision of every layer is therefore the precision written in the ONNX graph:
an fp16 engine is built from the fp16 ONNX that ``export/precision.py`` writes (LayerNorm,
softmax, RoPE, the first attention block and the heads kept fp32), an fp32 engine from the fp32
ONNX. No precision builder flag is ever set; ``precision`` names what the graph holds, and the
graph is checked against it.

Jetson. JetPack 6 ships TensorRT 10.3, which has public reports of silently wrong ViT output
(DINOv3 in fp16 and even fp32, transformers with dynamic shapes; see
``reference/EXPORT_AND_RUNTIME_PEERS.md`` section 0). An engine is specific to the TensorRT version
and the GPU that built it, and correct output on one device says nothing about another: that is
why every engine goes through the parity gate on the device that built it, and why the runner
refuses an engine built for another compute capability.

``tensorrt`` and CUDA are imported lazily: this module imports on any machine, and only the
functions that need them fail, with an install hint.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgescene.core.atomic import atomic_write_bytes

PRECISIONS = ("fp32", "fp16")

_INSTALL_HINT = (
    "TensorRT is not installed: on x86-64 with CUDA `pip install 'edgescene[runtime-gpu]'` (tensorrt from "
    "pypi.nvidia.com), on Jetson use JetPack's python3-libnvinfer; it cannot run on a machine without an NVIDIA GPU"
)


def require_tensorrt():
    """The ``tensorrt`` module (10.x or newer), or ImportError with the install hint."""
    try:
        import tensorrt as trt
    except ImportError as e:  # also raised when sys.modules["tensorrt"] is None
        raise ImportError(f"{_INSTALL_HINT} ({e})") from e
    major = int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
    if major < 10:
        raise ImportError(
            f"TensorRT {getattr(trt, '__version__', '?')} is too old: the name-based API and strong "
            f"typing need TensorRT >= 10. {_INSTALL_HINT}"
        )
    return trt


def _require_cuda():
    """torch with a usable CUDA device, or RuntimeError."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            f"CUDA is not available (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda or 'none'}): TensorRT engines are built and run on an NVIDIA GPU; "
            "install a CUDA build of torch on a machine with one"
        )
    return torch


def _this_gpu(torch) -> dict[str, str]:
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return {"gpu": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}


def cache_root() -> Path:
    """Where exports keep what outlives one export (timing and engine caches): ``$EDGESCENE_CACHE``
    or ``~/.cache/edgescene``."""
    return Path(os.environ.get("EDGESCENE_CACHE") or Path.home() / ".cache" / "edgescene")


def timing_cache_file(device: dict[str, str], tensorrt_version: str) -> Path:
    """Where builds on this GPU model with this TensorRT version keep their timing cache."""
    root = cache_root()
    gpu = "".join(c if c.isalnum() else "-" for c in device.get("gpu", "gpu")).strip("-")
    return root / "tensorrt" / f"{gpu}-sm{device.get('compute_capability', '?')}-trt{tensorrt_version}.cache"


def default_timing_cache() -> Path:
    """:func:`timing_cache_file` for this machine's GPU and TensorRT (imports both)."""
    return timing_cache_file(_this_gpu(_require_cuda()), str(require_tensorrt().__version__))


# ---------------------------------------------------------------------------------------------
# Profiles


@dataclass(frozen=True)
class EngineProfile:
    """The shape range one network input accepts: ``min_shape <= opt_shape <= max_shape`` per axis.
    TensorRT tunes kernels for ``opt_shape`` and sizes memory for ``max_shape``."""

    input_name: str
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.input_name:
            raise ValueError("EngineProfile needs an input_name")
        shapes = {}
        for field in ("min_shape", "opt_shape", "max_shape"):
            shape = getattr(self, field)
            try:
                shape = tuple(int(d) for d in shape)
            except (TypeError, ValueError):
                raise ValueError(f"{self.input_name}: {field} must be a tuple of ints, got {shape!r}") from None
            object.__setattr__(self, field, shape)
            shapes[field] = shape
        lo, opt, hi = shapes["min_shape"], shapes["opt_shape"], shapes["max_shape"]
        if not len(lo) == len(opt) == len(hi):
            raise ValueError(f"{self.input_name}: min/opt/max shapes have different ranks: {lo}, {opt}, {hi}")
        if any(d < 1 for d in lo):
            raise ValueError(f"{self.input_name}: every dimension must be >= 1, got min_shape {lo}")
        if not all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)):
            raise ValueError(
                f"{self.input_name}: need min <= opt <= max on every axis, got min {lo}, opt {opt}, max {hi}"
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": self.input_name,
            "min": list(self.min_shape),
            "opt": list(self.opt_shape),
            "max": list(self.max_shape),
        }


def frame_profile(
    input_name: str, frames_range: tuple[int, int, int], tail: tuple[int, ...], frame_axis: int = 0
) -> EngineProfile:
    """A profile over the frame count: ``frames_range = (min, opt, max)`` frames inserted at
    ``frame_axis`` into the fixed ``tail`` dims. ``frame_profile("images", (1, 4, 16), (3, 518, 518))``
    gives min (1, 3, 518, 518), opt (4, 3, 518, 518), max (16, 3, 518, 518)."""
    if len(frames_range) != 3:
        raise ValueError(f"frames_range must be (min, opt, max), got {frames_range!r}")
    lo, opt, hi = (int(v) for v in frames_range)
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"frames_range must satisfy 1 <= min <= opt <= max, got min={lo}, opt={opt}, max={hi}")
    tail = tuple(int(d) for d in tail)
    if any(d < 1 for d in tail):
        raise ValueError(f"tail dims must be >= 1, got {tail}")
    if not 0 <= frame_axis <= len(tail):
        raise ValueError(f"frame_axis must be in 0..{len(tail)} for tail {tail}, got {frame_axis}")

    def shape(frames: int) -> tuple[int, ...]:
        return tail[:frame_axis] + (frames,) + tail[frame_axis:]

    return EngineProfile(input_name, shape(lo), shape(opt), shape(hi))


def _profile_groups(profiles: Sequence[EngineProfile | Sequence[EngineProfile]]) -> list[list[EngineProfile]]:
    """Each item is one TensorRT optimization profile: a bare EngineProfile (one dynamic input) or a
    sequence of them (one per dynamic input)."""
    if isinstance(profiles, EngineProfile) or not profiles:
        raise ValueError(
            "profiles must be a non-empty list with one entry per optimization profile "
            "(an EngineProfile, or a list of EngineProfile for models with several dynamic inputs)"
        )
    groups = []
    for i, item in enumerate(profiles):
        group = [item] if isinstance(item, EngineProfile) else list(item)
        if not group or not all(isinstance(p, EngineProfile) for p in group):
            raise ValueError(f"profiles[{i}] must be an EngineProfile or a non-empty list of them, got {item!r}")
        names = [p.input_name for p in group]
        if len(set(names)) != len(names):
            raise ValueError(f"profiles[{i}] names an input twice: {names}")
        groups.append(group)
    return groups


def _onnx_has_float16(onnx_path: Path) -> bool:
    """Whether the graph holds any fp16 tensor (initializer, Cast target, constant or typed value)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    fp16 = onnx.TensorProto.FLOAT16
    graph = model.graph
    if any(t.data_type == fp16 for t in graph.initializer):
        return True
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == fp16:
                return True
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == fp16:
                return True
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    return any(v.type.HasField("tensor_type") and v.type.tensor_type.elem_type == fp16 for v in values)


# ---------------------------------------------------------------------------------------------
# Build


def _shape(dims) -> tuple[int, ...]:
    return tuple(int(d) for d in dims)


def _check_profiles_against_network(network, groups: list[list[EngineProfile]]) -> dict[str, tuple[int, ...]]:
    inputs = {network.get_input(i).name: _shape(network.get_input(i).shape) for i in range(network.num_inputs)}
    dynamic = sorted(name for name, shape in inputs.items() if any(d < 0 for d in shape))
    for i, group in enumerate(groups):
        for p in group:
            if p.input_name not in inputs:
                raise ValueError(f"profiles[{i}] names input {p.input_name!r}; the network inputs are {sorted(inputs)}")
            shape = inputs[p.input_name]
            if len(shape) != len(p.min_shape):
                raise ValueError(
                    f"profiles[{i}]: input {p.input_name!r} has rank {len(shape)} {shape}, "
                    f"the profile rank {len(p.min_shape)} {p.min_shape}"
                )
            for axis, d in enumerate(shape):
                if d >= 0 and not p.min_shape[axis] == p.opt_shape[axis] == p.max_shape[axis] == d:
                    raise ValueError(
                        f"profiles[{i}]: axis {axis} of input {p.input_name!r} is fixed at {d} in the "
                        f"graph {shape}, the profile gives {p.min_shape}..{p.max_shape}"
                    )
        missing = sorted(set(dynamic) - {p.input_name for p in group})
        if missing:
            raise ValueError(
                f"profiles[{i}] gives no shape range for the dynamic input(s) {missing} "
                f"(shapes {[inputs[m] for m in missing]})"
            )
    return inputs


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    profiles: Sequence[EngineProfile | Sequence[EngineProfile]],
    precision: Literal["fp32", "fp16"],
    timing_cache_path: Path | None = None,
    workspace_gb: float = 8.0,
    builder_optimization_level: int | None = None,
    log: Callable[[str], None] = print,
    tf32: bool = False,
) -> dict[str, Any]:
    """Build a strongly typed TensorRT engine from ``onnx_path`` and write it to ``engine_path``.

    ``profiles``: one entry per optimization profile (an EngineProfile, or a list of them when the
    model has several dynamic inputs). ``precision`` must match the graph: "fp16" takes the fp16
    ONNX (fp32 islands kept), "fp32" the fp32 ONNX; no precision builder flag is set. The timing
    cache at ``timing_cache_path`` is loaded when present and written back after the build.
    Returns the build description (TensorRT, GPU, compute capability, CUDA, precision, profiles,
    build time, engine size) for the artifact's sidecar; the engine runs only on this GPU model
    and TensorRT version.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    timing_cache_path = Path(timing_cache_path) if timing_cache_path is not None else None
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r} "
            "(int8 is an ONNX-level format, not a TensorRT builder option)"
        )
    if not workspace_gb > 0:
        raise ValueError(f"workspace_gb must be > 0, got {workspace_gb}")
    if builder_optimization_level is not None and builder_optimization_level not in range(6):
        raise ValueError(f"builder_optimization_level must be 0..5 or None, got {builder_optimization_level}")
    groups = _profile_groups(profiles)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {onnx_path}")
    has_fp16 = _onnx_has_float16(onnx_path)
    if precision == "fp16" and not has_fp16:
        raise ValueError(
            f"precision 'fp16' but {onnx_path} holds no float16 tensor: engines are strongly typed, so "
            "pass the fp16 ONNX (format onnx-fp16), not the fp32 one"
        )
    if precision == "fp32" and has_fp16:
        raise ValueError(
            f"precision 'fp32' but {onnx_path} holds float16 tensors: engines are strongly typed, so "
            "pass the fp32 ONNX, or build with precision 'fp16'"
        )

    trt = require_tensorrt()
    torch = _require_cuda()
    device = _this_gpu(torch)
    log(
        f"tensorrt: TensorRT {trt.__version__} on {device['gpu']} (sm {device['compute_capability']}), "
        f"building {precision} engine from {onnx_path}"
    )

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    creation_flags = getattr(trt, "NetworkDefinitionCreationFlag", None)
    strongly_typed = getattr(creation_flags, "STRONGLY_TYPED", None)  # absent where strong typing is the only mode
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))

    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # resolves external data next to the file
        errors = "\n".join(f"  {parser.get_error(i)}" for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path} ({parser.num_errors} error(s)):\n{errors}")

    for kind, count, get in (
        ("input", network.num_inputs, network.get_input),
        ("output", network.num_outputs, network.get_output),
    ):
        for i in range(count):
            t = get(i)
            log(f"tensorrt: {kind} {t.name} shape {_shape(t.shape)} dtype {t.dtype}")
    _check_profiles_against_network(network, groups)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    tf32_flag = getattr(getattr(trt, "BuilderFlag", None), "TF32", None)
    if precision == "fp32" and not tf32 and tf32_flag is not None:
        config.clear_flag(tf32_flag)  # on by default: fp32 layers would run at TF32 precision
        log("tensorrt: TF32 off (fp32 engine)")
    if builder_optimization_level is not None:
        config.builder_optimization_level = builder_optimization_level
    for group in groups:
        profile = builder.create_optimization_profile()
        for p in group:
            profile.set_shape(p.input_name, p.min_shape, p.opt_shape, p.max_shape)
        config.add_optimization_profile(profile)

    cache_loaded = 0
    if timing_cache_path is not None:
        previous = timing_cache_path.read_bytes() if timing_cache_path.is_file() else b""
        cache = config.create_timing_cache(previous)
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            log(f"tensorrt: timing cache {timing_cache_path} does not match this TensorRT/GPU; starting a new one")
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
        else:
            cache_loaded = len(previous)
            if previous:
                log(f"tensorrt: reusing timing cache {timing_cache_path} ({cache_loaded} bytes)")

    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - start
    if plan is None:
        raise RuntimeError(
            f"TensorRT failed to build an engine from {onnx_path}: read the TensorRT log above; if it "
            f"ran out of memory, lower workspace_gb (now {workspace_gb}) or the profiles' max shapes"
        )
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_bytes = atomic_write_bytes(engine_path, plan).stat().st_size
    del plan

    cache_written = 0
    if timing_cache_path is not None:
        timing_cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_written = atomic_write_bytes(timing_cache_path, config.get_timing_cache().serialize()).stat().st_size

    log(f"tensorrt: wrote {engine_path} ({engine_bytes / 2**20:.1f} MB) in {build_s:.1f} s")
    return {
        "tensorrt": trt.__version__,
        "gpu": device["gpu"],
        "compute_capability": device["compute_capability"],
        "cuda": torch.version.cuda,
        "precision": precision,
        "strongly_typed": True,
        "tf32": bool(precision == "fp16" or tf32 or tf32_flag is None),
        "profiles": [{p.input_name: p.as_dict() for p in group} for group in groups],
        "workspace_gb": workspace_gb,
        "builder_optimization_level": builder_optimization_level,
        "timing_cache": None
        if timing_cache_path is None
        else {"path": str(timing_cache_path), "loaded_bytes": cache_loaded, "written_bytes": cache_written},
        "build_s": round(build_s, 3),
        "engine_bytes": engine_bytes,
    }
