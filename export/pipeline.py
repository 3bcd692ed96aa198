"""``export_model``: checkpoint -> artifact folder, accepted only through the parity gate.

Steps: resolve the model (preset, checkpoint file or Hub id), wrap it as a named-IO graph, export
fp32 ONNX, apply the format's transform (fp16 / int8) or packaging (TensorRT engine, Triton
repository), run the gate against PyTorch, write ``artifact.json`` (and ONNX ``metadata_props``).
Everything is built in a staging folder beside ``out``; it becomes ``out`` only when the gate
passes, otherwise ``out.rejected`` (metadata with ``accepted: false``) and the CLI exits non-zero.
An existing ``out`` is never replaced without ``overwrite``.

``sizes`` (VGGT): one complete export per input size, each through the gate at its size, in
sub-folders ``HxW/`` of one artifact whose ``artifact.json`` lists them (``input_sizes``,
``files["sizes"]``); :class:`edgescene.runtime.multisize.MultiSizeSession` serves it. Each size
carries its own weights (n sizes: n times the weights on disk).
"""

from __future__ import annotations

import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from edgescene import __version__
from edgescene.core.artifact import Artifact, portable_source, size_key, with_named_image_axes, write_artifact_json
from edgescene.export.formats import Format, get_format, validate_options
from edgescene.export.graphs import ExportGraph, dinov3_graph, vggt_graph
from edgescene.export.onnx_export import export_onnx, set_metadata
from edgescene.export.parity import ParityReport, gate_frame_counts, gate_images, run_gate
from edgescene.models.loading import load_model
from edgescene.models.vggt import VGGT

DEFAULT_SIZE = {"vggt": (392, 518), "dinov3": (224, 224)}
DEFAULT_FRAMES = {"vggt": (1, 2, 8), "dinov3": (1, 1, 8)}


@dataclass(frozen=True)
class ExportConfig:
    """What to export. ``model`` is a preset name, a checkpoint file, or a VGGT Hub id."""

    model: str
    format: str
    out: str
    weights: str | None = None
    frames: int | None = None
    frames_range: tuple[int, int, int] | None = None
    height: int | None = None
    width: int | None = None
    precision: str | None = None
    opset: int = 17
    track: bool = False
    workspace_gb: float | None = None
    calibration: str | None = None  # onnx-int8-static: images / video for activation ranges (default: sample video)
    overwrite: bool = False
    sizes: tuple[tuple[int, int], ...] | None = None  # VGGT: several input sizes (H, W), the first the default
    fast_attention: bool = False  # VGGT: token merging in the global attention, gated against the fast PyTorch model
    unproject: bool = False  # VGGT: add the output depth_points (depth unprojected in the graph)

    def __post_init__(self) -> None:
        if self.frames is not None and self.frames_range is not None:
            raise ValueError("give --frames or --frames-range, not both")
        if self.frames is not None and self.frames < 1:
            raise ValueError(f"--frames must be >= 1, got {self.frames}")
        if self.frames_range is not None:
            low, opt, high = self.frames_range
            if not 1 <= low <= opt <= high:
                raise ValueError(f"--frames-range MIN:OPT:MAX needs 1 <= MIN <= OPT <= MAX, got {low}:{opt}:{high}")
        if self.opset < 17:
            raise ValueError(f"--opset must be >= 17, got {self.opset}")
        if self.sizes is not None:
            if not self.sizes:
                raise ValueError("--sizes needs at least one HEIGHTxWIDTH")
            if self.height is not None or self.width is not None:
                raise ValueError("give --sizes or --height/--width, not both (the first of --sizes is the default)")
            if len(set(self.sizes)) != len(self.sizes):
                raise ValueError(f"--sizes lists a size twice: {', '.join(size_key(*s) for s in self.sizes)}")


@dataclass
class ExportResult:
    folder: Path
    accepted: bool
    artifact: Artifact
    report: ParityReport
    sizes_mb: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0


def _check_size(family: str, height: int, width: int, patch: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if value < patch or value % patch:
            near = max(patch, round(value / patch) * patch)
            raise ValueError(f"--{name} {value} must be a positive multiple of the patch size {patch} (e.g. {near})")


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    versions = {
        "edgescene": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }
    try:
        import tensorrt

        versions["tensorrt"] = tensorrt.__version__
    except ImportError:
        pass
    return versions


def _file_sizes(folder: Path) -> dict[str, float]:
    return {
        str(p.relative_to(folder)): round(p.stat().st_size / 2**20, 2) for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _ort_runner(model_path: Path, providers: list | None = None):
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=providers or ["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(names, feeds), strict=True))


UNVERIFIED_ON_GPU = (
    "unverified on GPU: Triton's TensorRT accelerator runs the whole graph in fp16 (no fp32 islands), but "
    "this machine has no TensorRT execution provider, so the gate ran the fp32 graph on the CPU; re-export "
    "on a GPU machine with onnxruntime-gpu and TensorRT to gate what Triton will serve"
)


def _triton_fp16_gate(model_path: Path, cache: Path, log: Callable[[str], None]) -> tuple[Callable, dict]:
    """The runner that shows what a Triton fp16 model serves: the TensorRT execution provider with
    fp16 on, where this machine has it; else the CPU, with the artifact marked unverified on GPU."""
    import onnxruntime as ort

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        options = {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
        log("export: gating the Triton fp16 model through onnxruntime's TensorRT provider with fp16 on")
        providers = [("TensorrtExecutionProvider", options), "CUDAExecutionProvider", "CPUExecutionProvider"]
        return _ort_runner(model_path, providers), {"gate": "onnxruntime TensorRT EP, fp16", "verified_on_gpu": True}
    log(f"export: WARNING {UNVERIFIED_ON_GPU}")
    return _ort_runner(model_path), {
        "gate": "onnxruntime CPU, fp32 graph",
        "verified_on_gpu": False,
        "note": UNVERIFIED_ON_GPU,
    }


def _float_precision(precision: str) -> Literal["fp32", "fp16"]:
    """``precision`` of a format that exports fp32 or fp16 (triton, tensorrt: checked by validate_options)."""
    if precision == "fp32":
        return "fp32"
    if precision == "fp16":
        return "fp16"
    raise ValueError(f"precision must be fp32 or fp16 for this format, got {precision!r}")


def _package(
    fmt: Format,
    graph: ExportGraph,
    fp32_onnx: Path,
    stage: Path,
    precision: str,
    frames_range: tuple[int, int, int],
    config: ExportConfig,
    log: Callable[[str], None],
    calibration: list[dict[str, np.ndarray]] | None = None,
    notes: list[str] | None = None,
    quantization: dict | None = None,
):
    """Transform / package the fp32 ONNX for ``fmt``. Returns (files dict, candidate runner, device dict, onnx path).
    ``notes`` collects what a step fell back on, ``quantization`` what the int8 formats did (both
    recorded in artifact.json)."""
    from edgescene.export.int8_portability import quantization_record
    from edgescene.export.precision import DYNAMIC_INT8, STATIC_INT8, convert_fp16, quantize_int8, quantize_int8_static

    if fmt.name in ("onnx", "onnx-fp16", "onnx-int8", "onnx-int8-static"):
        model = stage / "model.onnx"
        if fmt.name == "onnx":
            external = [p.name for p in fp32_onnx.parent.iterdir() if p.name.startswith("model.onnx.")]
            for p in fp32_onnx.parent.iterdir():
                p.rename(stage / p.name)
        elif fmt.name == "onnx-fp16":
            external = convert_fp16(fp32_onnx, model, graph)
        elif fmt.name == "onnx-int8":
            schemes = [DYNAMIC_INT8]
            external = quantize_int8(fp32_onnx, model, graph, notes=notes, log=log, scheme=DYNAMIC_INT8)
        else:
            assert calibration is not None  # export_model reads it first for onnx-int8-static
            schemes = [STATIC_INT8, DYNAMIC_INT8]
            external = quantize_int8_static(
                fp32_onnx, model, graph, calibration, log=log, notes=notes, static=STATIC_INT8, dynamic=DYNAMIC_INT8
            )
        if fmt.name.startswith("onnx-int8"):
            record = quantization_record(model, schemes)
            log(f"export: int8 gate on {record['gated_on']} (u8s8 kernels here: {record['u8s8_kernels_here']})")
            if not record["same_on_every_cpu"]:
                note = (
                    "int8 weights outside [-64, 64] can saturate onnxruntime's kernels on x86 CPUs without VNNI: "
                    f"the gate's result holds for {record['gated_on']} only ({', '.join(record['saturating_weights'])})"
                )
                log(f"export: WARNING {note}")
                if notes is not None:
                    notes.append(note)
            if quantization is not None:
                quantization.update(record)
        return {"model": "model.onnx", "external_data": external}, _ort_runner(model), {}, model
    if fmt.name == "triton":
        from edgescene.export.triton import write_triton_repository

        name = f"{graph.preset}_{graph.height}x{graph.width}".replace("-", "_")
        files = write_triton_repository(
            fp32_onnx,
            stage,
            name,
            graph.inputs,
            graph.outputs,
            precision=_float_precision(precision),
            max_frames=frames_range[2],
        )
        inner = stage / files["model"]
        if precision == "fp16":
            from edgescene.export.tensorrt import cache_root

            runner, gate = _triton_fp16_gate(inner, cache_root() / "ort_trt", log)
            return {**files, "model": files["model"]}, runner, gate, inner
        return {**files, "model": files["model"]}, _ort_runner(inner), {}, inner
    # tensorrt
    from edgescene.export.tensorrt import build_engine, default_timing_cache, frame_profile
    from edgescene.trt.runner import TensorRTRunner

    onnx_for_engine = stage / "model.onnx"
    if precision == "fp16":
        external = convert_fp16(fp32_onnx, onnx_for_engine, graph)
    else:
        external = [p.name for p in fp32_onnx.parent.iterdir() if p.name.startswith("model.onnx.")]
        for p in fp32_onnx.parent.iterdir():
            p.rename(stage / p.name)
    profiles = [frame_profile("images", frames_range, (3, graph.height, graph.width))]
    device = build_engine(
        onnx_for_engine,
        stage / "model.engine",
        profiles,
        _float_precision(precision),
        timing_cache_path=default_timing_cache(),  # kept across exports, keyed by GPU and TensorRT
        workspace_gb=config.workspace_gb or 8.0,
        log=log,
    )
    runner = TensorRTRunner(stage / "model.engine", expected_device=device)  # the runtime's own runner
    files = {"model": "model.onnx", "external_data": external, "engine": "model.engine"}
    return files, runner, device, onnx_for_engine


def preflight(fmt: Format) -> None:
    """Fail before any work when the format's tools are missing here."""
    import importlib.util

    missing = [m for m in fmt.requires if importlib.util.find_spec(m) is None]
    if "tensorrt" in fmt.requires:
        from edgescene.export.tensorrt import require_tensorrt

        require_tensorrt()  # ImportError with the install hint when missing or older than 10
    if missing:
        raise ImportError(f"format {fmt.name!r} needs {', '.join(missing)}: pip install 'edgescene[export,runtime]'")
    if fmt.device == "gpu" and not torch.cuda.is_available():
        raise RuntimeError(
            f"format {fmt.name!r} builds on an NVIDIA GPU and none is visible here "
            "(engines are specific to the GPU they are built on: build on the target device)"
        )


def _export_sizes(config: ExportConfig, log: Callable[[str], None]) -> ExportResult:
    """One export per size into ``out/HxW/``, then the artifact that lists them."""
    start = time.perf_counter()
    out = Path(config.out)
    if out.exists() and any(out.iterdir()) and not config.overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
    sizes = config.sizes or ()
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        results: list[tuple[str, ExportResult]] = []
        for i, (h, w) in enumerate(sizes, 1):
            key = size_key(h, w)
            log(f"export: size {key} ({i} of {len(sizes)})")
            result = export_model(
                replace(config, sizes=None, height=h, width=w, out=str(stage / key), overwrite=False), log
            )
            if result.artifact.model["family"] != "vggt":
                raise ValueError(
                    "--sizes is for VGGT models (DINOv3's patch-token count changes with the size); "
                    "export DINOv3 once per size with --height/--width"
                )
            results.append((key, result))
            if not result.accepted:
                log(f"export: size {key} failed its parity gate; the remaining sizes are not exported")
                break
        first = results[0][1].artifact
        h0, w0 = sizes[0]
        accepted = len(results) == len(sizes) and all(r.accepted for _, r in results)
        artifact = Artifact(
            format=first.format,
            precision=first.precision,
            backend=first.backend,
            model=first.model,
            files={"sizes": {key: r.folder.name for key, r in results}},
            inputs=[with_named_image_axes(t, h0, w0) for t in first.inputs],
            outputs=[with_named_image_axes(t, h0, w0) for t in first.outputs],
            input_size={"height": h0, "width": w0},
            input_sizes=[{"height": h, "width": w} for h, w in sizes],
            frames=first.frames,
            normalization=first.normalization,
            opset=first.opset,
            exporter=first.exporter,
            versions=first.versions,
            accepted=accepted,
            parity={"passed": accepted, "sizes": {key: r.report.to_json() for key, r in results}},
            created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            elapsed_s=round(time.perf_counter() - start, 2),
            device=first.device,
            calibration=first.calibration,
            quantization=first.quantization,
        )
        write_artifact_json(artifact, stage)
        target = out if accepted else out.with_name(out.name + ".rejected")
        if target.exists():
            shutil.rmtree(target)
        stage.chmod(0o755)
        (stage / "artifact.json").chmod(0o644)
        stage.rename(target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    last = results[-1][1]
    return ExportResult(
        target, accepted, artifact, last.report, _file_sizes(target), round(time.perf_counter() - start, 2)
    )


def export_model(config: ExportConfig, log: Callable[[str], None] = print) -> ExportResult:
    if config.sizes:
        return _export_sizes(config, log)
    start = time.perf_counter()
    fmt = get_format(config.format)
    preflight(fmt)
    validate_options(
        fmt,
        {
            "frames": config.frames,
            "frames_range": config.frames_range,
            "height": config.height,
            "width": config.width,
            "precision": config.precision,
            "track": config.track,
            "workspace_gb": config.workspace_gb,
            "calibration": config.calibration,
        },
    )
    precision = config.precision or fmt.default_precision
    out = Path(config.out)
    if out.exists() and any(out.iterdir()) and not config.overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
    loaded = load_model(config.model, config.weights)
    if loaded.family == "dinov3" and config.track:
        raise ValueError("--track is for VGGT models")
    height, width = config.height or DEFAULT_SIZE[loaded.family][0], config.width or DEFAULT_SIZE[loaded.family][1]
    patch = loaded.module.config.patch_size
    _check_size(loaded.family, height, width, patch)
    frames_range = (config.frames,) * 3 if config.frames else (config.frames_range or DEFAULT_FRAMES[loaded.family])
    if config.track and frames_range[0] != frames_range[2]:
        raise ValueError(
            "the track head exports with a fixed frame count (its attention traces static shapes); "
            "pass --frames N instead of a range"
        )
    fast = None
    if config.unproject and not isinstance(loaded.module, VGGT):
        raise ValueError("--unproject is for VGGT models (depth unprojected with its predicted cameras)")
    if config.fast_attention:
        if not isinstance(loaded.module, VGGT):
            raise ValueError("--fast-attention is for VGGT models (token merging in its global attention)")
        from edgescene.models.vggt.token_merge import set_fast_attention

        fast = set_fast_attention(loaded.module, True)  # the gate's reference too
    if isinstance(loaded.module, VGGT):  # family "vggt"
        graph = vggt_graph(
            loaded.module,
            loaded.preset,
            height,
            width,
            config.track,
            track_frames=frames_range[0],
            unproject=config.unproject,
        )
    else:
        graph = dinov3_graph(loaded.module, loaded.preset, height, width)
    log(
        f"export: {loaded.preset} ({loaded.family}, {loaded.source}) -> {fmt.name} {precision}, "
        f"{height}x{width}, frames {frames_range[0]}..{frames_range[2]} (opt {frames_range[1]})"
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        calibration, calibration_text = None, None
        if fmt.name == "onnx-int8-static":  # read first: a bad --calibration fails before any export work
            from edgescene.export.calibration import calibration_feeds

            calibration, calibration_text = calibration_feeds(graph, config.calibration, batch_frames=frames_range[1])
            log(f"export: calibration: {calibration_text}")
        (stage / "fp32").mkdir()
        fp32_onnx = stage / "fp32" / "model.onnx"
        t = time.perf_counter()
        export_onnx(
            graph, fp32_onnx, example_frames=frames_range[1], opset=config.opset, fused_attention=fmt.fused_attention
        )
        log(f"export: ONNX traced and saved in {time.perf_counter() - t:.1f} s")
        counts = gate_frame_counts(frames_range)
        cases = [graph.feeds(gate_images(height, width, n)) for n in counts]
        references = [graph.reference(feeds) for feeds in cases]
        del graph.module, loaded.module  # free PyTorch's copy of the weights before loading the artifact
        notes: list[str] = []
        quantization: dict = {}
        files, runner, device, onnx_path = _package(
            fmt, graph, fp32_onnx, stage, precision, frames_range, config, log, calibration, notes, quantization
        )
        shutil.rmtree(stage / "fp32", ignore_errors=True)
        t = time.perf_counter()
        report = run_gate(runner, cases, references, graph.family, precision, height, width)
        del runner
        log(f"export: parity gate ran in {time.perf_counter() - t:.1f} s")
        log(report.format())
        artifact = Artifact(
            format=fmt.name,
            precision=precision,
            backend=fmt.backend,
            model={
                "family": graph.family,
                "preset": graph.preset,
                "source": portable_source(loaded.source),
                "source_sha256": loaded.sha256,
                "track_head": config.track,
                **({"fast_attention": fast.describe()} if fast is not None else {}),
            },
            files=files,
            inputs=graph.inputs,
            outputs=graph.outputs,
            input_size={"height": height, "width": width},
            frames={"min": frames_range[0], "opt": frames_range[1], "max": frames_range[2]},
            normalization=graph.normalization,
            opset=config.opset,
            exporter=f"torch.onnx.export (TorchScript, dynamo=False) {torch.__version__}"
            + ("; attention as com.microsoft.MultiHeadAttention (onnxruntime)" if fmt.fused_attention else ""),
            versions=_versions(),
            parity=report.to_json(),
            accepted=report.passed,
            created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            elapsed_s=round(time.perf_counter() - start, 2),
            device=device,
            calibration=calibration_text,
            notes=notes,
            quantization=quantization,
        )
        set_metadata(onnx_path, artifact.to_json())
        if fmt.name == "triton" and report.passed:
            from edgescene.export.triton import embed_artifact

            embed_artifact(stage / files["config"], artifact.to_json())  # served back to triton:// clients
        write_artifact_json(artifact, stage)
        target = out if report.passed else out.with_name(out.name + ".rejected")
        if target.exists():
            shutil.rmtree(target)
        for path in stage.rglob("*"):  # temp folders and files start owner-only; artifacts are shared
            path.chmod(0o755 if path.is_dir() else 0o644)
        stage.chmod(0o755)
        stage.rename(target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    sizes = _file_sizes(target)
    return ExportResult(target, report.passed, artifact, report, sizes, round(time.perf_counter() - start, 2))


__all__ = ["ExportConfig", "ExportResult", "export_model", "load_model"]
