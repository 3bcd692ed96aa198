"""The ``triton`` format: a model repository (config.pbtxt + self-contained version folder)
written from a tiny ONNX export, checked for layout, configuration and ONNX Runtime parity."""

from __future__ import annotations

import filecmp
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgescene.core.artifact import TensorSpec
from edgescene.export import triton
from edgescene.export.triton import embed_artifact, triton_client_example, write_triton_repository

INPUTS = [TensorSpec("images", ["frames", 3, 8, 8], "float32", "RGB in [0, 1]")]
OUTPUTS = [
    TensorSpec("depth", ["frames", 8, 8], "float32", "depth along z"),
    TensorSpec("features", ["frames", 16], "float32"),
]


class Tiny(nn.Module):
    """images (S, 3, 8, 8) -> depth (S, 8, 8), features (S, 16)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.head = nn.Linear(4, 16)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.relu(self.conv(images))
        return x.sum(dim=1), self.head(x.mean(dim=(2, 3)))


def export_tiny(folder: Path, external: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    torch.manual_seed(0)
    with warnings.catch_warnings():  # the TorchScript exporter (the project's pinned one) warns it is legacy
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            Tiny().eval(),
            (torch.rand(2, 3, 8, 8),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["depth", "features"],
            dynamic_axes={"images": {0: "frames"}, "depth": {0: "frames"}, "features": {0: "frames"}},
        )
    if external:
        model = onnx.load(str(path))
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="model.onnx.data",
            size_threshold=0,
        )
    return path


def run(path: Path, images: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["depth", "features"], {"images": images})


@pytest.fixture(params=[False, True], ids=["embedded", "external-data"])
def exported(request, tmp_path) -> tuple[Path, bool]:
    return export_tiny(tmp_path / "export", request.param), request.param


def test_layout_and_returned_files(exported, tmp_path):
    onnx_path, external = exported
    repo = tmp_path / "repo"
    files = write_triton_repository(onnx_path, repo, "tiny", INPUTS, OUTPUTS)

    assert files["config"] == "tiny/config.pbtxt"
    assert files["model"] == "tiny/1/model.onnx"
    assert files["external_data"] == (["tiny/1/model.onnx.data"] if external else [])
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")) == sorted(
        ["tiny", "tiny/1", files["config"], files["model"], *files["external_data"]]
    )  # nothing left over
    assert os.path.samefile(onnx_path, repo / files["model"])  # hard-linked: same filesystem
    for rel in files["external_data"]:
        assert os.path.samefile(onnx_path.parent / "model.onnx.data", repo / rel)
    # readable by a server running as another user (temp files start owner-only)
    assert (repo / "tiny/1").stat().st_mode & 0o755 == 0o755
    assert (repo / files["config"]).stat().st_mode & 0o644 == 0o644


def test_config_contents_fp32_cpu(exported, tmp_path):
    onnx_path, _ = exported
    write_triton_repository(onnx_path, tmp_path / "repo", "tiny", INPUTS, OUTPUTS, instances=2, gpu=False)
    text = (tmp_path / "repo/tiny/config.pbtxt").read_text()

    assert 'name: "tiny"' in text
    assert 'platform: "onnxruntime_onnx"' in text
    assert "max_batch_size: 0" in text
    assert "dims: [ -1, 3, 8, 8 ]" in text and "dims: [ -1, 8, 8 ]" in text and "dims: [ -1, 16 ]" in text
    assert "kind: KIND_CPU" in text and "count: 2" in text
    assert "tensorrt" not in text and "precision_mode" not in text
    assert "max_frames" not in text

    config = triton._parse_config(text)  # the same parser the writer's self-check uses
    assert config.name == "tiny" and config.max_batch_size == 0
    assert [(t.name, list(t.dims)) for t in config.input] == [("images", [-1, 3, 8, 8])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("depth", [-1, 8, 8]), ("features", [-1, 16])]
    assert {triton._enum_name(t, "data_type") for t in [*config.input, *config.output]} == {"TYPE_FP32"}
    assert config.version_policy.latest.num_versions == 1
    assert [(g.count, triton._enum_name(g, "kind")) for g in config.instance_group] == [(2, "KIND_CPU")]


def test_fp16_adds_tensorrt_accelerator_only_when_asked(tmp_path):
    onnx_path = export_tiny(tmp_path / "export", external=False)
    fp16 = write_triton_repository(onnx_path, tmp_path / "a", "tiny", INPUTS, OUTPUTS, precision="fp16", gpu=True)
    text = (tmp_path / "a" / fp16["config"]).read_text()
    assert "kind: KIND_GPU" in text
    config = triton._parse_config(text)
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and dict(accelerator.parameters) == {"precision_mode": "FP16"}
    # the ONNX in the version folder is the fp32 graph, tensors stay TYPE_FP32
    assert filecmp.cmp(onnx_path, tmp_path / "a" / fp16["model"], shallow=False)
    assert "TYPE_FP16" not in text

    auto = write_triton_repository(onnx_path, tmp_path / "b", "tiny", INPUTS, OUTPUTS, precision="fp16", gpu=None)
    text = (tmp_path / "b" / auto["config"]).read_text()
    assert 'precision_mode" value: "FP16"' in text
    assert "kind: KIND" not in text  # Triton picks the device

    gpu32 = write_triton_repository(onnx_path, tmp_path / "c", "tiny", INPUTS, OUTPUTS, precision="fp32", gpu=True)
    text = (tmp_path / "c" / gpu32["config"]).read_text()
    assert "kind: KIND_GPU" in text and "tensorrt" not in text

    with pytest.raises(ValueError, match="fp16"):
        write_triton_repository(onnx_path, tmp_path / "d", "tiny", INPUTS, OUTPUTS, precision="fp16", gpu=False)
    with pytest.raises(ValueError, match="int8"):
        write_triton_repository(onnx_path, tmp_path / "d", "tiny", INPUTS, OUTPUTS, precision="int8")
    assert not (tmp_path / "d").exists()


def test_max_frames_parameter(tmp_path):
    onnx_path = export_tiny(tmp_path / "export", external=False)
    files = write_triton_repository(onnx_path, tmp_path / "repo", "tiny", INPUTS, OUTPUTS, max_frames=8)
    config = triton._parse_config((tmp_path / "repo" / files["config"]).read_text())
    assert config.parameters["max_frames"].string_value == "8"
    with pytest.raises(ValueError, match="max_frames"):
        write_triton_repository(onnx_path, tmp_path / "repo", "tiny", INPUTS, OUTPUTS, max_frames=0)


def test_copied_model_runs_like_the_original_and_is_self_contained(exported, tmp_path):
    onnx_path, external = exported
    files = write_triton_repository(onnx_path, tmp_path / "repo", "tiny", INPUTS, OUTPUTS)
    rng = np.random.default_rng(0)
    for frames in (1, 3):
        images = rng.random((frames, 3, 8, 8), dtype=np.float32)
        for want, got in zip(run(onnx_path, images), run(tmp_path / "repo" / files["model"], images), strict=True):
            assert got.shape == want.shape and want.shape[0] == frames
            np.testing.assert_array_equal(got, want)

    images = rng.random((2, 3, 8, 8), dtype=np.float32)
    want = run(onnx_path, images)
    shutil.rmtree(onnx_path.parent)  # the version folder must not depend on the export folder
    for w, g in zip(want, run(tmp_path / "repo" / files["model"], images), strict=True):
        np.testing.assert_array_equal(g, w)


def test_copy_fallback_when_hard_link_fails(tmp_path, monkeypatch):
    onnx_path = export_tiny(tmp_path / "export", external=True)

    def no_link(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    files = write_triton_repository(onnx_path, tmp_path / "repo", "tiny", INPUTS, OUTPUTS)
    copied = tmp_path / "repo" / files["external_data"][0]
    assert not os.path.samefile(copied, onnx_path.parent / "model.onnx.data")
    assert filecmp.cmp(copied, onnx_path.parent / "model.onnx.data", shallow=False)


def test_rewrite_replaces_the_version_folder(tmp_path):
    with_data = export_tiny(tmp_path / "ext", external=True)
    embedded = export_tiny(tmp_path / "emb", external=False)
    repo = tmp_path / "repo"
    write_triton_repository(with_data, repo, "tiny", INPUTS, OUTPUTS)
    assert (repo / "tiny/1/model.onnx.data").is_file()
    files = write_triton_repository(embedded, repo, "tiny", INPUTS, OUTPUTS)
    assert files["external_data"] == []
    assert sorted(p.name for p in (repo / "tiny").iterdir()) == ["1", "config.pbtxt"]  # no staging leftovers
    assert sorted(p.name for p in (repo / "tiny/1").iterdir()) == ["model.onnx"]  # stale weights gone


@pytest.mark.parametrize("name", ["", "bad name", "a/b", "../up", "..", ".", "tiny\n", "modèle"])
def test_invalid_model_names_rejected(tmp_path, name):
    onnx_path = export_tiny(tmp_path / "export", external=False)
    with pytest.raises(ValueError, match="model name"):
        write_triton_repository(onnx_path, tmp_path / "repo", name, INPUTS, OUTPUTS)
    assert not (tmp_path / "repo").exists()


def test_valid_model_name_characters(tmp_path):
    onnx_path = export_tiny(tmp_path / "export", external=False)
    files = write_triton_repository(onnx_path, tmp_path / "repo", "VGGT_1B.fp32-v2", INPUTS, OUTPUTS)
    assert (tmp_path / "repo" / files["config"]).is_file()


@pytest.mark.parametrize(
    ("inputs", "outputs", "match"),
    [
        ([TensorSpec("pixels", ["frames", 3, 8, 8], "float32")], OUTPUTS, "no input 'pixels'"),
        ([], OUTPUTS, "at least one input"),
        (INPUTS, [TensorSpec("normals", ["frames", 8, 8], "float32")], "no output 'normals'"),
        ([TensorSpec("images", ["frames", 3, 8, 8], "float16")], OUTPUTS, "float32 in the graph"),
        ([TensorSpec("images", ["frames", 3, 16, 16], "float32")], OUTPUTS, "shape"),
        ([TensorSpec("images", ["frames", 3, "height", 8], "float32")], OUTPUTS, "shape"),
        ([TensorSpec("images", ["frames", 3, 8], "float32")], OUTPUTS, "shape"),
        ([TensorSpec("images", ["frames", 3, 8, 8], "uint8")], OUTPUTS, "valid: float32"),
    ],
)
def test_specs_must_match_the_graph(tmp_path, inputs, outputs, match):
    onnx_path = export_tiny(tmp_path / "export", external=False)
    with pytest.raises(ValueError, match=match):
        write_triton_repository(onnx_path, tmp_path / "repo", "tiny", inputs, outputs)


def test_output_subset_allowed(tmp_path):
    onnx_path = export_tiny(tmp_path / "export", external=False)
    files = write_triton_repository(onnx_path, tmp_path / "repo", "tiny", INPUTS, OUTPUTS[:1])
    config = triton._parse_config((tmp_path / "repo" / files["config"]).read_text())
    assert [t.name for t in config.output] == ["depth"]


def test_external_data_outside_the_folder_refused(tmp_path):
    onnx_path = export_tiny(tmp_path / "export", external=True)
    model = onnx.load(str(onnx_path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../elsewhere.data"
    onnx.save_model(model, str(onnx_path))
    (tmp_path / "elsewhere.data").write_bytes((onnx_path.parent / "model.onnx.data").read_bytes())
    with pytest.raises(ValueError, match="outside"):
        write_triton_repository(onnx_path, tmp_path / "repo", "tiny", INPUTS, OUTPUTS)


def test_client_example_is_python_naming_the_model_and_tensors():
    snippet = triton_client_example("tiny", INPUTS, OUTPUTS)
    compile(snippet, "<triton client example>", "exec")
    assert "tritonclient.http" in snippet and "'tiny'" in snippet
    assert "InferInput" in snippet and "'FP32'" in snippet
    assert all(f"'{s.name}'" in snippet for s in [*INPUTS, *OUTPUTS])


def test_the_accepted_artifact_is_embedded_for_clients_of_the_server(tmp_path):
    """embed_artifact: the artifact's JSON (quotes, backslashes, non-ASCII and newlines included) comes
    back from the config's edgescene_artifact parameter exactly; a second embedding is refused."""
    import json

    files = write_triton_repository(export_tiny(tmp_path / "e", False), tmp_path / "repo", "m", INPUTS, OUTPUTS)
    config_path = tmp_path / "repo" / files["config"]
    artifact = {"model": {"source": 'C:\\weights\\"vggt" ü\nline'}, "inputs": [{"shape": ["frames", 3]}], "ok": True}
    embed_artifact(config_path, artifact)
    config = triton._parse_config(config_path.read_text())
    assert json.loads(config.parameters["edgescene_artifact"].string_value) == artifact
    assert [t.name for t in config.input] == ["images"] and config.max_batch_size == 0  # the rest is kept
    before = config_path.read_text()
    with pytest.raises(ValueError, match="already carries 'edgescene_artifact'"):
        embed_artifact(config_path, artifact)
    assert config_path.read_text() == before
