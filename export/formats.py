"""The export format table: one row per format drives the CLI help, per-format option validation,
the benchmark loop and the README's table (``python -m edgescene.export.formats``).

Every format starts from the same fp32 ONNX graph (TorchScript exporter, opset >= 17, named IO,
dynamic frame axis) and differs in the transform and packaging applied after it, and in the
runtime that checks it in the parity gate.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

# Options a user can set; each format accepts a subset.
ALL_OPTIONS = (
    "frames",
    "frames_range",
    "height",
    "width",
    "precision",
    "opset",
    "track",
    "workspace_gb",
    "calibration",
)


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    precisions: tuple[str, ...]  # the first is the default
    options: frozenset[str]
    backend: str  # runtime that runs it: onnxruntime | tensorrt | triton
    device: str  # where it runs: "cpu" (also GPU) or "gpu"
    files: str  # what the artifact folder holds
    requires: tuple[str, ...]  # python modules needed to produce it
    fused_attention: bool = False  # attention as onnxruntime's fused MultiHeadAttention node (ORT-only graphs)

    @property
    def default_precision(self) -> str:
        return self.precisions[0]


_COMMON = frozenset({"frames", "frames_range", "height", "width", "opset"})

FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "onnx",
            "ONNX fp32, dynamic frame count; external data above 2 GB",
            ("fp32",),
            _COMMON | {"track"},
            "onnxruntime",
            "cpu",
            "model.onnx [+ model.onnx.data]",
            ("onnx", "onnxruntime"),
            fused_attention=True,
        ),
        Format(
            "onnx-fp16",
            "ONNX with fp16 weights and math; LayerNorm, softmax, RoPE, the first attention "
            "block and the heads stay fp32; fp32 inputs/outputs",
            ("fp16",),
            _COMMON | {"track"},
            "onnxruntime",
            "cpu",
            "model.onnx [+ model.onnx.data]",
            ("onnx", "onnxruntime"),
            fused_attention=True,
        ),
        Format(
            "onnx-int8",
            "ONNX with int8 weights (onnxruntime dynamic quantization of MatMul/Gemm; 7-bit weights, the same results "
            "on every CPU), for CPUs",
            ("int8",),
            _COMMON | {"track"},
            "onnxruntime",
            "cpu",
            "model.onnx [+ model.onnx.data]",
            ("onnx", "onnxruntime"),
            fused_attention=True,
        ),
        Format(
            "onnx-int8-static",
            "ONNX with int8 convolutions: the DPT heads' trunks statically quantized "
            "(QDQ, per-channel 7-bit weights, activation ranges calibrated on real frames: --calibration, default the "
            "bundled sample video) and the transformer's MatMuls dynamically; the heads' last projection, "
            "activations and the camera head stay fp32",
            ("int8",),
            _COMMON | {"calibration"},
            "onnxruntime",
            "cpu",
            "model.onnx [+ model.onnx.data]",
            ("onnx", "onnxruntime"),
            fused_attention=True,
        ),
        Format(
            "tensorrt",
            "TensorRT engine built from the ONNX graph: strongly typed, an optimization profile "
            "over the frame count, a timing cache",
            ("fp16", "fp32"),
            _COMMON | {"precision", "workspace_gb"},
            "tensorrt",
            "gpu",
            "model.engine + model.onnx",
            ("onnx", "tensorrt"),
        ),
        Format(
            "triton",
            "Triton Inference Server model repository (config.pbtxt + versioned ONNX model)",
            ("fp32", "fp16"),
            _COMMON | {"precision"},
            "triton",
            "cpu",
            "<name>/config.pbtxt + <name>/1/model.onnx",
            ("onnx", "onnxruntime"),
        ),
    )
}

ALIASES = {
    "trt": "tensorrt",
    "engine": "tensorrt",
    "onnx-fp32": "onnx",
    "onnx16": "onnx-fp16",
    "int8": "onnx-int8",
    "int8-static": "onnx-int8-static",
    "onnx-qdq": "onnx-int8-static",
}


def get_format(name: str) -> Format:
    """The format named ``name`` (aliases accepted); unknown names raise ValueError with close matches."""
    key = ALIASES.get(name, name)
    if key in FORMATS:
        return FORMATS[key]
    close = difflib.get_close_matches(name, list(FORMATS) + list(ALIASES), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown export format {name!r}.{hint} Valid formats: {', '.join(FORMATS)}")


def validate_options(fmt: Format, given: dict[str, object]) -> None:
    """Raise ValueError naming every option ``fmt`` does not accept (options left at None are not given)."""
    bad = sorted(k for k, v in given.items() if v not in (None, False) and k not in fmt.options)
    if bad:
        flags = ", ".join("--" + b.replace("_", "-") for b in bad)
        valid = ", ".join("--" + o.replace("_", "-") for o in sorted(fmt.options))
        raise ValueError(f"format {fmt.name!r} does not take {flags}; it accepts {valid}")
    precision = given.get("precision")
    if precision is not None and precision not in fmt.precisions:
        others = [f.name for f in FORMATS.values() if precision in f.precisions]
        raise ValueError(
            f"format {fmt.name!r} exports {'/'.join(fmt.precisions)}, not {precision}; "
            f"{precision} is available in: {', '.join(others) or 'no format'}"
        )


def markdown_table() -> str:
    """The README's format table."""
    lines = ["| format | precision | runs on | artifact | what it is |", "|---|---|---|---|---|"]
    for f in FORMATS.values():
        lines.append(
            f"| `{f.name}` | {', '.join(f.precisions)} | {f.backend} ({f.device}) | {f.files} | {f.description} |"
        )
    return "\n".join(lines)


def help_text() -> str:
    """One line per format for ``edgescene export --help``."""
    return "\n".join(f"  {f.name:<10} {'/'.join(f.precisions):<10} {f.description}" for f in FORMATS.values())


if __name__ == "__main__":
    print(markdown_table())
