"""onnxruntime backend: ONNX and Triton artifacts on the CPU, CUDA or TensorRT execution provider.

``device`` picks the providers (first = preferred, the rest run what it cannot):

=========  ===============================================================================
cpu        CPUExecutionProvider
cuda       CUDAExecutionProvider, CPU
tensorrt   TensorrtExecutionProvider (engine and timing caches, profile shapes from the artifact's
           frames range), CUDA, CPU. ``trt_fp16_enable`` is set only for an fp16 Triton artifact
           (an fp32 graph Triton serves in fp16); never for onnx-fp16, whose precision is in the
           graph: the flag switches TensorRT 10 to weak typing and would run its fp32 islands
           (LayerNorm, softmax, heads) in fp16. The explicit profile covers the model inputs only;
           a fused-attention graph (com.microsoft.MultiHeadAttention) is split between the
           TensorRT and CUDA providers, so export the plain graph (format tensorrt) for TensorRT.
auto       cuda where onnxruntime-gpu provides it, else cpu; cpu for int8 artifacts (dynamic
           quantization is a CPU format). The TensorRT EP is never picked by ``auto``: it builds
           engines on first use (minutes for VGGT-1B), and onnxruntime-gpu lists it even where the
           TensorRT libraries are absent. Ask for it with ``device="tensorrt"``.
=========  ===============================================================================

On CUDA and TensorRT the session runs through IO binding: inputs are bound from numpy, outputs to
device buffers kept across calls of the same shape, and copied to numpy once per call (without it
onnxruntime copies every tensor in and out inside ``run()``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from edgescene.core.artifact import Artifact, read_artifact
from edgescene.runtime.backends import DEVICES, BaseSession, check_device, check_feeds, output_shapes

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
# device -> providers, preferred first
DEVICE_PROVIDERS: dict[str, tuple[str, ...]] = {"cpu": (CPU,), "cuda": (CUDA, CPU), "tensorrt": (TRT, CUDA, CPU)}
# what "auto" tries, best first, by artifact precision
AUTO_ORDER: dict[str, tuple[str, ...]] = {"int8": ("cpu",)}
AUTO_DEFAULT = ("cuda", "cpu")
GPU_INSTALL_HINT = (
    "install onnxruntime-gpu in place of onnxruntime (pip uninstall onnxruntime && "
    "pip install 'edgescene[runtime-gpu]'; the two packages share one folder and break each other)"
)
TRT_CACHE = "ort_trt_cache"  # default TensorRT EP cache folder, inside the artifact folder


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError(
            "the onnxruntime backend needs onnxruntime: pip install 'edgescene[runtime]' "
            "(or 'edgescene[runtime-gpu]' on NVIDIA GPUs)"
        ) from exc
    return ort


def resolve_device(device: str, available: list[str], precision: str) -> str:
    """``device`` itself, or for "auto" the first of the preferred devices whose provider is available."""
    check_device(device, DEVICES, "onnxruntime")
    if device != "auto":
        return device
    order = AUTO_ORDER.get(precision, AUTO_DEFAULT)
    return next(d for d in order if DEVICE_PROVIDERS[d][0] in available or d == "cpu")


def profile_shapes(artifact: Artifact) -> dict[str, str]:
    """TensorRT EP ``trt_profile_{min,opt,max}_shapes``: every input, its named axes at the artifact's
    frames min / opt / max (``"images:1x3x392x518"``)."""
    shapes = {}
    for key in ("min", "opt", "max"):
        frames = artifact.frames[key]
        shapes[f"trt_profile_{key}_shapes"] = ",".join(
            f"{t.name}:" + "x".join(str(frames if isinstance(d, str) else d) for d in t.shape) for t in artifact.inputs
        )
    return shapes


def provider_list(
    device: str, artifact: Artifact, available: list[str], cache_dir: Path | None = None, device_id: int = 0
) -> list[tuple[str, dict[str, Any]]]:
    """(provider, options) pairs for ``device`` (not "auto"); raises when the first one is missing here."""
    wanted = DEVICE_PROVIDERS[device]
    if wanted[0] not in available:
        extra = " and the TensorRT libraries (pip install tensorrt)" if wanted[0] == TRT else ""
        raise RuntimeError(
            f"device={device!r} needs {wanted[0]}, which this onnxruntime does not have (available: "
            f"{', '.join(available)}): {GPU_INSTALL_HINT}{extra}; or pass device='cpu'"
        )
    providers: list[tuple[str, dict[str, Any]]] = []
    for name in wanted:
        if name not in available:
            continue
        if name == TRT:
            if cache_dir is None:
                raise ValueError("the TensorRT execution provider needs a cache folder (cache_dir)")
            options: dict[str, Any] = {
                "device_id": device_id,
                "trt_fp16_enable": artifact.precision == "fp16" and artifact.format == "triton",
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache_dir),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache_dir),
                **profile_shapes(artifact),
            }
        elif name == CUDA:
            options = {"device_id": device_id}
        else:
            options = {}
        providers.append((name, options))
    return providers


class OnnxRuntimeSession(BaseSession):
    """An artifact folder on onnxruntime.

    Options: ``providers`` (explicit provider names, overriding ``device``), ``intra_op_num_threads``
    (0: onnxruntime's default), ``cache_dir`` (TensorRT EP engine and timing cache; default
    ``<folder>/ort_trt_cache``), ``device_id``, ``io_binding`` (default: on for cuda / tensorrt),
    ``allow_spinning`` (default False: onnxruntime's CPU threads sleep between tasks instead of
    spinning; measured on the sample video with 2 cores, the pipelined runtime took 0.93 s with
    sleeping threads against 1.13 s with spinning ones, which burned the cores the runtime's other
    threads needed; a model alone on an idle CPU is ~5 % faster spinning), ``cpu_mem_arena``
    (default True: onnxruntime keeps the CPU memory of its largest call for reuse until the session
    closes; False returns it after each call, for a session a server keeps open between clients:
    measured on the bundled model at window 4, 104 MB instead of 178 MB resident after warm-up, and
    no slower, 0.20-0.26 s a call against 0.23).
    """

    backend = "onnxruntime"

    def __init__(
        self,
        folder: str | Path,
        artifact: Artifact | None = None,
        device: str = "auto",
        *,
        providers: list[str] | None = None,
        intra_op_num_threads: int = 0,
        cache_dir: str | Path | None = None,
        device_id: int = 0,
        io_binding: bool | None = None,
        allow_spinning: bool = False,
        cpu_mem_arena: bool = True,
    ) -> None:
        ort = _import_ort()
        folder = Path(folder)
        self.artifact = artifact if artifact is not None else read_artifact(folder)
        if not isinstance(intra_op_num_threads, int) or intra_op_num_threads < 0:
            raise ValueError(
                f"intra_op_num_threads must be an int >= 0 (0: onnxruntime's default), got {intra_op_num_threads!r}"
            )
        available = ort.get_available_providers()
        if providers is not None and device != "auto":
            raise ValueError(f"give device ({device!r}) or providers ({providers}), not both")
        if providers is not None:
            unknown = [p for p in providers if p not in available]
            if unknown:
                raise RuntimeError(
                    f"execution providers {unknown} are not available here (available: "
                    f"{', '.join(available)}); for CUDA / TensorRT {GPU_INSTALL_HINT}"
                )
            chosen: list[Any] = list(providers)
            self.device = {CPU: "cpu", CUDA: "cuda", TRT: "tensorrt"}.get(providers[0], providers[0])
        else:
            self.device = resolve_device(device, available, self.artifact.precision)
            cache = Path(cache_dir) if cache_dir is not None else folder / TRT_CACHE
            if self.device == "tensorrt":
                try:
                    cache.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise RuntimeError(
                        f"cannot create the TensorRT EP cache folder {cache} ({exc}): pass cache_dir= a writable folder"
                    ) from exc
            chosen = provider_list(self.device, self.artifact, available, cache, device_id)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_num_threads
        options.enable_cpu_mem_arena = bool(cpu_mem_arena)
        spin = "1" if allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        model = folder / self.artifact.files["model"]
        self._session = ort.InferenceSession(str(model), options, providers=chosen)
        self.providers = self._session.get_providers()
        on_gpu = self.providers[0] in (CUDA, TRT)
        self._io_binding = on_gpu if io_binding is None else bool(io_binding)
        self._bind_device = ("cuda", device_id) if on_gpu else ("cpu", 0)
        self._buffers: dict[str, tuple[tuple[int, ...], Any]] = {}  # output name -> (shape, OrtValue)
        self._lock = threading.Lock()  # the reused output buffers belong to one call at a time
        self._ort = ort

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            raise RuntimeError("this session is closed")
        prepared, axes = check_feeds(self.artifact, feeds)
        names = [t.name for t in self.artifact.outputs]
        if not self._io_binding:  # InferenceSession.run is safe to call from several threads
            return dict(zip(names, self._session.run(names, prepared), strict=True))
        with self._lock:  # two threads must not bind (and overwrite) the same output buffers
            return self._run_bound(prepared, axes, names)

    def _run_bound(self, prepared: dict[str, np.ndarray], axes: dict[str, int], names: list[str]):
        binding = self._session.io_binding()
        for name, value in prepared.items():
            binding.bind_cpu_input(name, value)
        for name, shape in output_shapes(self.artifact, axes).items():
            if shape is None:  # an axis the inputs do not fix: let onnxruntime allocate
                binding.bind_output(name, self._bind_device[0], self._bind_device[1])
                continue
            held = self._buffers.get(name)
            if held is None or held[0] != shape:
                dtype = np.dtype(next(t.dtype for t in self.artifact.outputs if t.name == name))
                value = self._ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, *self._bind_device)
                held = self._buffers[name] = (shape, value)
            binding.bind_ortvalue_output(name, held[1])
        self._session.run_with_iobinding(binding)
        outputs = binding.copy_outputs_to_cpu()
        # CPU-bound buffers come back as views of the reused buffers: copy so results outlive the call
        copy = self._bind_device[0] == "cpu"
        return {name: (np.array(o) if copy else o) for name, o in zip(names, outputs, strict=True)}

    def close(self) -> None:
        self._buffers.clear()
        self._session = None
