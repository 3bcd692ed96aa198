"""Triton Inference Server model repository: the ``triton`` export format.

A Triton model repository is a folder of models, one sub-folder each, holding a model
configuration (``config.pbtxt``, protobuf text format) and numbered version folders::

    <repository>/
      <model_name>/
        config.pbtxt           # name, platform, tensors, instances, version policy
        1/
          model.onnx           # the fp32 ONNX graph (the ONNX Runtime backend's default file name)
          model.onnx.data      # its external weights, when it has any

The version folder is self-contained: the ONNX file and every external-data file it names are
hard-linked (same filesystem) or copied into ``1/``, so the repository can be moved or mounted
into a container on its own.

Serve it with the Triton container (CPU: drop ``--gpus all``; pick a release tag from NGC)::

    docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -p 8002:8002 \\
        -v /abs/path/to/<repository>:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
        tritonserver --model-repository=/models
    curl -s localhost:8000/v2/health/ready && curl -s localhost:8000/v2/models/<model_name>/config

then reconstruct through it with ``edgescene reconstruct VIDEO --model triton://HOST:8000/<model_name>``
(the runtime's ``triton`` backend), or send requests with ``tritonclient`` (``triton_client_example``
prints a snippet). Once the parity gate accepts the model, :func:`embed_artifact` appends the
artifact's JSON to ``config.pbtxt`` as the parameter ``edgescene_artifact``: Triton serves it back at
``/v2/models/<model_name>/config``, so a client needs nothing but the address.

Why ``max_batch_size: 0``. With a value >= 1 Triton treats the first axis of every tensor as a
batch of *independent* requests: it strips it from ``dims``, and its dynamic batcher may
concatenate several requests along it. Our first axis is the frame axis of ONE reconstruction
(VGGT's frames attend to each other), and some tensors (tracking queries) have no frame axis at
all, so requests must never be merged: 0 means "no batching", ``dims`` then give the full shape
(``-1`` for the dynamic frame axis) and each request runs as sent. For DINOv3 the first axis is
a real batch; a client sends its whole batch in one request. Because the configuration lists
every input and output, the ONNX Runtime backend's auto-complete (which would otherwise turn a
model whose tensors all start with a variable axis into a batching one) leaves it alone.

Precision. ``fp32`` serves the fp32 graph with ONNX Runtime (CPU, or CUDA on a GPU instance).
``fp16`` keeps the SAME fp32 ONNX file and adds the ONNX Runtime TensorRT accelerator with
``precision_mode: "FP16"`` to the configuration: on GPU instances TensorRT builds fp16 engines
from the graph when the model loads and again for each new input shape (this can take minutes
for large models; TensorRT's engine cache parameters can be added to the accelerator block by
hand). Tensors keep their fp32 data types. Instances on CPU ignore the accelerator, so fp16 with
``gpu=False`` is refused rather than silently served in fp32.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import onnx
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from edgescene.core.artifact import TRITON_ARTIFACT_PARAMETER, TensorSpec
from edgescene.core.atomic import atomic_write_text

log = logging.getLogger(__name__)

PLATFORM = "onnxruntime_onnx"
VERSION = "1"
MODEL_FILE = "model.onnx"  # the ONNX Runtime backend's default_model_filename
CONFIG_FILE = "config.pbtxt"
PRECISIONS = ("fp32", "fp16")
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")

# TensorSpec dtype (numpy name) -> (config.pbtxt data_type, KServe/tritonclient datatype)
DATA_TYPES: dict[str, tuple[str, str]] = {
    "float32": ("TYPE_FP32", "FP32"),
    "float16": ("TYPE_FP16", "FP16"),
    "int64": ("TYPE_INT64", "INT64"),
    "int32": ("TYPE_INT32", "INT32"),
}


def write_triton_repository(
    onnx_path: Path,
    repository: Path,
    model_name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    precision: Literal["fp32", "fp16"] = "fp32",
    max_frames: int | None = None,
    instances: int = 1,
    gpu: bool | None = None,
) -> dict[str, Any]:
    """Write ``repository/<model_name>/{config.pbtxt, 1/model.onnx [+ external data]}``.

    ``inputs``/``outputs`` must match the ONNX graph (names, dtypes, ranks, fixed sizes): every
    graph input listed, outputs a subset of the graph's; checked here, as Triton would at load.
    ``gpu``: True -> KIND_GPU instances, False -> KIND_CPU, None -> no kind (Triton picks: GPU
    when one is present). ``max_frames`` is recorded as a config parameter (Triton has no range
    for a ``-1`` dim; clients read it from ``/v2/models/<name>/config``). An existing version
    folder ``1/`` is replaced as a whole, so no stale weights stay behind.

    Returns the files written, relative to ``repository``:
    ``{"config": "<name>/config.pbtxt", "model": "<name>/1/model.onnx", "external_data": [...]}``.
    """
    onnx_path, repository = Path(onnx_path), Path(repository)
    _check_model_name(model_name)
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not supported for Triton; valid: {', '.join(PRECISIONS)}")
    if precision == "fp16" and gpu is False:
        raise ValueError(
            "precision 'fp16' needs GPU instances (TensorRT accelerator); use gpu=True or gpu=None, "
            "or precision 'fp32' for CPU instances"
        )
    if gpu not in (True, False, None):
        raise ValueError(f"gpu must be True (KIND_GPU), False (KIND_CPU) or None (Triton picks), got {gpu!r}")
    if isinstance(instances, bool) or not isinstance(instances, int) or instances < 1:
        raise ValueError(f"instances must be an integer >= 1, got {instances!r}")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames must be an integer >= 1 or None, got {max_frames!r}")
    if not inputs or not outputs:
        raise ValueError("a Triton model needs at least one input and one output TensorSpec")
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: ONNX model not found")

    graph_model = onnx.load(str(onnx_path), load_external_data=False)
    _check_specs_match_graph(graph_model, inputs, outputs, onnx_path)
    external = _external_data_locations(graph_model, onnx_path)

    text = render_config(
        model_name, inputs, outputs, precision=precision, max_frames=max_frames, instances=instances, gpu=gpu
    )
    _self_check(text, model_name, inputs, outputs, precision, instances, gpu)

    model_dir = repository / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    _write_version_folder(onnx_path, external, model_dir)
    atomic_write_text(model_dir / CONFIG_FILE, text)

    others = sorted(p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and p.name != VERSION)
    if others:
        log.warning(
            "%s also holds version folder(s) %s; with version_policy latest:1 Triton serves the highest",
            model_dir,
            ", ".join(others),
        )
    files = {
        "config": f"{model_name}/{CONFIG_FILE}",
        "model": f"{model_name}/{VERSION}/{MODEL_FILE}",
        "external_data": [f"{model_name}/{VERSION}/{loc}" for loc in external],
    }
    log.info(
        "triton repository %s: model %s (%s, %d instance(s), %s)",
        repository,
        model_name,
        precision,
        instances,
        {True: "GPU", False: "CPU", None: "device picked by Triton"}[gpu],
    )
    return files


def embed_artifact(config_path: Path, artifact: dict[str, Any]) -> None:
    """Append ``artifact`` (the accepted artifact.json, as a dict) to the model configuration at
    ``config_path`` as the string parameter ``edgescene_artifact`` (compact JSON), replacing the
    file atomically; the result is parsed back and must carry the same JSON."""
    import json

    config_path = Path(config_path)
    text = config_path.read_text(encoding="utf-8")
    if TRITON_ARTIFACT_PARAMETER in _parse_config(text).parameters:
        raise ValueError(f"{config_path} already carries {TRITON_ARTIFACT_PARAMETER!r}")
    payload = json.dumps(artifact, separators=(",", ":"), sort_keys=True)
    text += "\n".join(
        [
            "# What this model is (inputs, outputs, frame range, input size, normalisation, the parity gate's",
            "# verdict): the artifact.json of the export, read by `--model triton://host:port/<name>`.",
            "parameters {",
            f'  key: "{TRITON_ARTIFACT_PARAMETER}"',
            f'  value: {{ string_value: "{_escape(payload)}" }}',
            "}",
            "",
        ]
    )
    if _parse_config(text).parameters[TRITON_ARTIFACT_PARAMETER].string_value != payload:
        raise RuntimeError(f"internal error: {TRITON_ARTIFACT_PARAMETER} does not round-trip through config.pbtxt")
    atomic_write_text(config_path, text)


def render_config(
    model_name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    precision: str = "fp32",
    max_frames: int | None = None,
    instances: int = 1,
    gpu: bool | None = None,
) -> str:
    """The text of ``config.pbtxt`` (no checks beyond the tensor specs; see write_triton_repository)."""
    lines = [
        "# Triton Inference Server model configuration, written by edgescene (export format 'triton').",
        f"# Layout: <repository>/{model_name}/config.pbtxt and <repository>/{model_name}/{VERSION}/{MODEL_FILE}.",
        f'name: "{_escape(model_name)}"',
        f'platform: "{PLATFORM}"',
        "# 0 = no Triton batching: the first axis is the frame axis of one request (frames of one scene",
        "# are processed together), not a batch of independent requests that Triton may merge or split.",
        "max_batch_size: 0",
        "version_policy: { latest: { num_versions: 1 } }",
        "",
    ]
    lines += _tensor_block("input", inputs)
    lines += _tensor_block("output", outputs)
    kind = {True: "KIND_GPU", False: "KIND_CPU", None: None}[gpu]
    lines += ["instance_group ["]
    if kind is None:
        lines += ["  # no kind: Triton places the instances on the GPU(s) when present, else on the CPU"]
    lines += ["  {", f"    count: {instances}"] + ([f"    kind: {kind}"] if kind else []) + ["  }", "]"]
    if precision == "fp16":
        lines += [
            "# fp16: the ONNX file is the fp32 graph; on GPU instances ONNX Runtime hands it to TensorRT,",
            "# which builds fp16 engines at load time and for each new input shape. Tensors stay fp32.",
            "optimization {",
            "  execution_accelerators {",
            "    gpu_execution_accelerator [",
            "      {",
            '        name: "tensorrt"',
            '        parameters { key: "precision_mode" value: "FP16" }',
            "      }",
            "    ]",
            "  }",
            "}",
        ]
    if max_frames is not None:
        lines += [
            f"# The first (frame) axis, -1 above, takes 1..{max_frames} per request; the ONNX Runtime",
            "# backend ignores this key, clients read it from /v2/models/<name>/config.",
            "parameters {",
            '  key: "max_frames"',
            f'  value: {{ string_value: "{max_frames}" }}',
            "}",
        ]
    return "\n".join(lines) + "\n"


def triton_client_example(model_name: str, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> str:
    """A short ``tritonclient.http`` snippet for the exporter to print as the next command (not run)."""
    lines = [
        "import numpy as np",
        "import tritonclient.http as httpclient  # pip install 'tritonclient[http]'",
        "",
        'client = httpclient.InferenceServerClient(url="localhost:8000")',
        "arrays = {  # replace with real data; dynamic axes shown with size 1",
    ]
    for spec in inputs:
        shape = tuple(d if isinstance(d, int) and d >= 0 else 1 for d in spec.shape)
        lines.append(f"    {spec.name!r}: np.zeros({shape!r}, dtype=np.{_dtype(spec)}),  # {_shape_text(spec)}")
    lines += ["}", "inputs = []"]
    pairs = ", ".join(f"({s.name!r}, {DATA_TYPES[_dtype(s)][1]!r})" for s in inputs)
    lines += [
        f"for name, datatype in [{pairs}]:",
        "    tensor = httpclient.InferInput(name, list(arrays[name].shape), datatype)",
        "    tensor.set_data_from_numpy(arrays[name])",
        "    inputs.append(tensor)",
        f"outputs = [httpclient.InferRequestedOutput(name) for name in {[s.name for s in outputs]!r}]",
        f"result = client.infer({model_name!r}, inputs, outputs=outputs)",
    ]
    lines += [f"{_identifier(s.name)} = result.as_numpy({s.name!r})  # {_shape_text(s)}" for s in outputs]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- config text


def _tensor_block(key: str, specs: list[TensorSpec]) -> list[str]:
    lines = [f"{key} ["]
    for i, spec in enumerate(specs):
        about = _comment(f"{spec.name}: {_shape_text(spec)}" + (f" - {spec.description}" if spec.description else ""))
        dims = ", ".join(str(d) for d in _dims(spec))
        lines += [
            f"  # {about}",
            "  {",
            f'    name: "{_escape(spec.name)}"',
            f"    data_type: {DATA_TYPES[_dtype(spec)][0]}",
            f"    dims: [ {dims} ]",
            "  }" + ("," if i < len(specs) - 1 else ""),
        ]
    return lines + ["]"]


def _dtype(spec: TensorSpec) -> str:
    if spec.dtype not in DATA_TYPES:
        raise ValueError(
            f"tensor {spec.name!r}: dtype {spec.dtype!r} has no Triton mapping here; valid: {', '.join(DATA_TYPES)}"
        )
    return spec.dtype


def _dims(spec: TensorSpec) -> list[int]:
    """Ints as they are, axis names (and None) as -1."""
    dims = []
    for d in spec.shape:
        if isinstance(d, str) or d is None:
            dims.append(-1)
        elif isinstance(d, int) and not isinstance(d, bool) and d >= -1:
            dims.append(int(d))
        else:
            raise ValueError(f"tensor {spec.name!r}: shape entry {d!r} is neither a size >= 0 nor an axis name")
    return dims


def _shape_text(spec: TensorSpec) -> str:
    return "[" + ", ".join(str(d) for d in spec.shape) + f"] {spec.dtype}"


def _escape(text: str) -> str:
    """A string body for protobuf text format (backslash, quote and control characters escaped)."""
    from google.protobuf import text_encoding

    return text_encoding.CEscape(text, as_utf8=True)


def _comment(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)


def _identifier(name: str) -> str:
    ident = re.sub(r"\W", "_", name)
    return ident if ident.isidentifier() and not ident[0].isdigit() else f"out_{ident}"


# ----------------------------------------------------------------------------- checks


def _check_model_name(model_name: str) -> None:
    if not isinstance(model_name, str) or not MODEL_NAME_RE.fullmatch(model_name) or model_name in (".", ".."):
        raise ValueError(
            f"invalid Triton model name {model_name!r}: use letters, digits, '_', '.' and '-' "
            "(it names a folder of the repository)"
        )


def _graph_io(model: onnx.ModelProto) -> tuple[dict[str, Any], dict[str, Any]]:
    init = {t.name for t in model.graph.initializer}
    ins = {v.name: v for v in model.graph.input if v.name not in init}
    outs = {v.name: v for v in model.graph.output}
    return ins, outs


def _check_specs_match_graph(
    model: onnx.ModelProto, inputs: list[TensorSpec], outputs: list[TensorSpec], where: Path
) -> None:
    """What Triton's ONNX Runtime backend checks at load: every graph input configured, configured
    tensors exist, same data type, same rank, and fixed graph sizes configured as the same size."""
    graph_in, graph_out = _graph_io(model)
    for kind, specs, graph in (("input", inputs, graph_in), ("output", outputs, graph_out)):
        names = [s.name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"{kind}s listed twice: {dupes}")
        for spec in specs:
            if spec.name not in graph:
                raise ValueError(f"{where}: the graph has no {kind} {spec.name!r}; its {kind}s: {sorted(graph)}")
            _check_one(spec, graph[spec.name], kind, where)
    missing = sorted(set(graph_in) - {s.name for s in inputs})
    if missing:
        raise ValueError(f"{where}: graph inputs {missing} are not in the tensor specs; Triton needs every input")


def _check_one(spec: TensorSpec, value: onnx.ValueInfoProto, kind: str, where: Path) -> None:
    dims = _dims(spec)
    tensor_type = value.type.tensor_type
    graph_dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    if _dtype(spec) != graph_dtype:
        raise ValueError(f"{where}: {kind} {spec.name!r} is {graph_dtype} in the graph, the spec says {spec.dtype}")
    if not tensor_type.HasField("shape"):
        return
    graph_dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
    if len(graph_dims) != len(dims) or any(g != -1 and g != d for g, d in zip(graph_dims, dims, strict=True)):
        raise ValueError(
            f"{where}: {kind} {spec.name!r} has shape {graph_dims} in the graph (-1: dynamic), "
            f"the spec {list(spec.shape)} gives dims {dims}"
        )


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


def _external_data_locations(model: onnx.ModelProto, onnx_path: Path) -> list[str]:
    """External-data files the model names (relative to its folder), checked to exist inside it."""
    base = onnx_path.resolve().parent
    locations: list[str] = []
    for tensor in _all_tensors(model.graph):
        if not uses_external_data(tensor):
            continue
        location = ExternalDataInfo(tensor).location
        rel = PurePosixPath(location.replace("\\", "/"))
        if not location or rel.is_absolute() or ".." in rel.parts or not (base / rel).resolve().is_relative_to(base):
            raise ValueError(
                f"{onnx_path}: tensor {tensor.name!r} names external data {location!r} outside "
                "the model's folder; refusing to read it"
            )
        if str(rel) == MODEL_FILE:
            raise ValueError(f"{onnx_path}: external data named {MODEL_FILE!r} would collide with the model file")
        if not (base / rel).is_file():
            raise FileNotFoundError(f"{onnx_path}: external data {location!r} is missing (expected {base / rel})")
        if str(rel) not in locations:
            locations.append(str(rel))
    return locations


@functools.lru_cache(maxsize=1)
def _model_config_class() -> type:
    """A message class for the subset of Triton's ``inference.ModelConfig`` that we write.

    Triton's model_config.proto is not installed here, so this descriptor re-declares the fields we
    use (names, types and numbers as in Triton's proto); parsing our text with it catches typos in
    field or enum names, wrong value types and unbalanced braces."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(
        name="edgescene/triton_model_config_subset.proto", package="inference", syntax="proto3"
    )
    data_type = f.enum_type.add(name="DataType")
    for number, name in enumerate(
        (
            "INVALID",
            "BOOL",
            "UINT8",
            "UINT16",
            "UINT32",
            "UINT64",
            "INT8",
            "INT16",
            "INT32",
            "INT64",
            "FP16",
            "FP32",
            "FP64",
            "STRING",
            "BF16",
        )
    ):
        data_type.value.add(name=f"TYPE_{name}", number=number)

    def fields(msg: Any, spec: list[tuple]) -> None:
        for name, number, ftype, type_name, repeated in spec:
            field = msg.field.add(
                name=name, number=number, type=ftype, label=fd.LABEL_REPEATED if repeated else fd.LABEL_OPTIONAL
            )
            if type_name:
                field.type_name = type_name

    def map_field(msg: Any, full: str, name: str, number: int, value_type: int, value_type_name: str = "") -> None:
        entry = msg.nested_type.add(name="".join(p.title() for p in name.split("_")) + "Entry")
        entry.options.map_entry = True
        fields(entry, [("key", 1, fd.TYPE_STRING, "", False), ("value", 2, value_type, value_type_name, False)])
        fields(msg, [(name, number, fd.TYPE_MESSAGE, f"{full}.{entry.name}", True)])

    s, i32, i64, u32, m, e = fd.TYPE_STRING, fd.TYPE_INT32, fd.TYPE_INT64, fd.TYPE_UINT32, fd.TYPE_MESSAGE, fd.TYPE_ENUM
    group = f.message_type.add(name="ModelInstanceGroup")
    kind = group.enum_type.add(name="Kind")
    for number, name in enumerate(("KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL")):
        kind.value.add(name=name, number=number)
    fields(
        group,
        [
            ("name", 1, s, "", False),
            ("count", 2, i32, "", False),
            ("gpus", 3, i32, "", True),
            ("kind", 4, e, ".inference.ModelInstanceGroup.Kind", False),
        ],
    )
    for name, dims_number in (("ModelInput", 4), ("ModelOutput", 3)):
        fields(
            f.message_type.add(name=name),
            [
                ("name", 1, s, "", False),
                ("data_type", 2, e, ".inference.DataType", False),
                ("dims", dims_number, i64, "", True),
            ],
        )
    policy = f.message_type.add(name="ModelVersionPolicy")
    fields(policy.nested_type.add(name="Latest"), [("num_versions", 1, u32, "", False)])
    fields(policy, [("latest", 1, m, ".inference.ModelVersionPolicy.Latest", False)])
    optimization = f.message_type.add(name="ModelOptimizationPolicy")
    accelerators = optimization.nested_type.add(name="ExecutionAccelerators")
    accelerator = accelerators.nested_type.add(name="Accelerator")
    fields(accelerator, [("name", 1, s, "", False)])
    map_field(accelerator, ".inference.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator", "parameters", 2, s)
    acc = ".inference.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator"
    fields(
        accelerators, [("gpu_execution_accelerator", 1, m, acc, True), ("cpu_execution_accelerator", 2, m, acc, True)]
    )
    fields(
        optimization,
        [("execution_accelerators", 4, m, ".inference.ModelOptimizationPolicy.ExecutionAccelerators", False)],
    )
    fields(f.message_type.add(name="ModelParameter"), [("string_value", 1, s, "", False)])
    config = f.message_type.add(name="ModelConfig")
    fields(
        config,
        [
            ("name", 1, s, "", False),
            ("platform", 2, s, "", False),
            ("version_policy", 3, m, ".inference.ModelVersionPolicy", False),
            ("max_batch_size", 4, i32, "", False),
            ("input", 5, m, ".inference.ModelInput", True),
            ("output", 6, m, ".inference.ModelOutput", True),
            ("instance_group", 7, m, ".inference.ModelInstanceGroup", True),
            ("optimization", 12, m, ".inference.ModelOptimizationPolicy", False),
            ("backend", 17, s, "", False),
        ],
    )
    map_field(config, ".inference.ModelConfig", "parameters", 14, m, ".inference.ModelParameter")

    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


def _parse_config(text: str) -> Any:
    """Parse config.pbtxt text with the ModelConfig subset (raises text_format.ParseError)."""
    from google.protobuf import text_format

    return text_format.Parse(text, _model_config_class()())


def _self_check(
    text: str,
    model_name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    precision: str,
    instances: int,
    gpu: bool | None,
) -> None:
    """Round-trip the generated text through the parser and compare it with what was asked for."""
    from google.protobuf import text_format

    try:
        config = _parse_config(text)
    except text_format.ParseError as exc:
        raise RuntimeError(f"internal error: generated config.pbtxt does not parse ({exc}):\n{text}") from exc
    problems = []
    if (config.name, config.platform, config.max_batch_size) != (model_name, PLATFORM, 0):
        problems.append("name/platform/max_batch_size")
    for got, want in ((config.input, inputs), (config.output, outputs)):
        got_rows = [(t.name, _enum_name(t, "data_type"), list(t.dims)) for t in got]
        want_rows = [(s.name, DATA_TYPES[s.dtype][0], _dims(s)) for s in want]
        if got_rows != want_rows:
            problems.append(f"tensors {got_rows} != {want_rows}")
    want_kind = {True: "KIND_GPU", False: "KIND_CPU", None: "KIND_AUTO"}[gpu]
    if [(g.count, _enum_name(g, "kind")) for g in config.instance_group] != [(instances, want_kind)]:
        problems.append("instance_group")
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    has_fp16 = any(a.name == "tensorrt" and a.parameters.get("precision_mode") == "FP16" for a in accelerators)
    if has_fp16 != (precision == "fp16"):
        problems.append("tensorrt accelerator")
    if problems:
        raise RuntimeError(f"internal error: generated config.pbtxt failed its self-check ({'; '.join(problems)})")


def _enum_name(message: Any, field: str) -> str:
    return message.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number[getattr(message, field)].name


# ----------------------------------------------------------------------------- files


def _place(src: Path, dst: Path) -> None:
    """Hard-link ``src`` at ``dst`` (same filesystem), else copy it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_version_folder(onnx_path: Path, external: list[str], model_dir: Path) -> None:
    """Build ``1/`` in a hidden staging folder, then swap it in, so an interrupted export never
    leaves a half-written version folder and a re-export leaves no stale external-data files."""
    stage = Path(tempfile.mkdtemp(prefix=f".{VERSION}.tmp-", dir=model_dir))
    os.chmod(stage, 0o755)  # mkdtemp makes it owner-only; a server in a container may run as another user
    version_dir = model_dir / VERSION
    old = model_dir / f".{VERSION}.old-{uuid.uuid4().hex[:8]}"
    try:
        _place(onnx_path, stage / MODEL_FILE)
        for location in external:
            _place(onnx_path.parent / location, stage / location)
        if version_dir.exists():
            os.replace(version_dir, old)
        os.replace(stage, version_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if old.exists() and not version_dir.exists():
            os.replace(old, version_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
