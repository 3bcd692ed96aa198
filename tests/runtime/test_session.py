"""open_session on exported ONNX artifacts (onnxruntime backend, CPU): running, input checks,
provider choice and its errors, refused folders, IO binding, and the runtime staying free of torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgescene.core.artifact import ARTIFACT_JSON, ArtifactError, read_artifact
from edgescene.export.parity import gate_images
from edgescene.export.pipeline import ExportConfig, export_model
from edgescene.runtime.backends.onnxruntime import (
    CPU,
    CUDA,
    TRT,
    OnnxRuntimeSession,
    profile_shapes,
    provider_list,
    resolve_device,
)
from edgescene.runtime.session import open_session

VGGT_H, VGGT_W = 56, 84
DINO_H, DINO_W = 32, 48


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("artifacts")
    quiet = {"log": lambda line: None}
    vggt = export_model(
        ExportConfig(
            model="vggt_tiny",
            format="onnx",
            out=str(root / "vggt"),
            height=VGGT_H,
            width=VGGT_W,
            frames_range=(1, 2, 4),
        ),
        **quiet,
    )
    dino = export_model(
        ExportConfig(
            model="dinov3_tiny",
            format="onnx",
            out=str(root / "dinov3"),
            height=DINO_H,
            width=DINO_W,
            frames_range=(1, 2, 4),
        ),
        **quiet,
    )
    assert vggt.accepted and dino.accepted
    return {"vggt": vggt.folder, "dinov3": dino.folder}


@pytest.mark.parametrize("family, size", [("vggt", (VGGT_H, VGGT_W)), ("dinov3", (DINO_H, DINO_W))])
@pytest.mark.parametrize("frames", [1, 3])
def test_artifact_folder_runs_on_cpu(exported, family, size, frames):
    with open_session(exported[family], device="cpu") as session:
        assert session.backend == "onnxruntime" and session.device == "cpu"
        assert session.providers == [CPU]
        out = session({"images": gate_images(*size, frames)})
        assert list(out) == [t.name for t in session.output_spec()]
        for spec in session.output_spec():
            expected = tuple(frames if isinstance(d, str) else d for d in spec.shape)
            assert out[spec.name].shape == expected and out[spec.name].dtype == np.float32, spec.name
            assert np.isfinite(out[spec.name]).all()


def test_auto_is_cpu_on_a_cpu_build_and_artifact_json_path_is_accepted(exported):
    session = open_session(exported["vggt"] / ARTIFACT_JSON)
    assert session.device == ("cuda" if CUDA in ort.get_available_providers() else "cpu")
    assert [t.name for t in session.input_spec()] == ["images"]


def test_inputs_are_checked_against_the_artifact(exported):
    session = open_session(exported["vggt"], device="cpu")
    images = gate_images(VGGT_H, VGGT_W, 2)
    with pytest.raises(ValueError, match=r"inputs must be exactly \['images'\].*unknown \['image'\]"):
        session({"image": images})
    with pytest.raises(ValueError, match="missing"):
        session({})
    with pytest.raises(ValueError, match=r"must have shape \['frames', 3, 56, 84\], got \[2, 3, 28, 84\]"):
        session({"images": images[:, :, :28]})
    with pytest.raises(ValueError, match="must have shape"):
        session({"images": images[0]})  # rank 3
    with pytest.raises(ValueError, match=r"'frames' axis is 5, outside this artifact's range 1\.\.4"):
        session({"images": gate_images(VGGT_H, VGGT_W, 5)})
    with pytest.raises(ValueError, match="must be float32.*got uint8"):
        session({"images": (images * 255).astype(np.uint8)})
    # float64 is the same kind: cast, same result
    np.testing.assert_allclose(
        session({"images": images.astype(np.float64)})["depth"], session({"images": images})["depth"], rtol=0, atol=0
    )


def test_an_unavailable_provider_names_the_available_ones_and_the_package(exported):
    available = ort.get_available_providers()
    if TRT in available:
        pytest.skip(f"this onnxruntime has the TensorRT EP ({available})")
    with pytest.raises(RuntimeError) as info:
        open_session(exported["vggt"], device="tensorrt")
    message = str(info.value)
    assert TRT in message and "onnxruntime-gpu" in message
    assert all(p in message for p in available)
    if CUDA not in available:
        with pytest.raises(RuntimeError, match=f"{CUDA}.*onnxruntime-gpu"):
            open_session(exported["vggt"], device="cuda")
    with pytest.raises(RuntimeError, match="not available here"):
        OnnxRuntimeSession(exported["vggt"], providers=["NoSuchExecutionProvider"])
    with pytest.raises(ValueError, match="not both"):
        OnnxRuntimeSession(exported["vggt"], device="cpu", providers=[CPU])


def test_provider_choice_and_tensorrt_ep_options(exported, tmp_path):
    artifact = read_artifact(exported["vggt"])
    assert resolve_device("auto", [CPU], "fp32") == "cpu"
    assert resolve_device("auto", [TRT, CUDA, CPU], "fp32") == "cuda"  # the TensorRT EP is opt-in
    assert resolve_device("auto", [TRT, CUDA, CPU], "int8") == "cpu"
    assert resolve_device("tensorrt", [CPU], "fp32") == "tensorrt"
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("gpu", [CPU], "fp32")

    providers = provider_list("tensorrt", artifact, [TRT, CUDA, CPU], tmp_path / "cache", device_id=1)
    assert [p for p, _ in providers] == [TRT, CUDA, CPU]
    trt_options = providers[0][1]
    assert trt_options["trt_fp16_enable"] is False  # fp32 artifact
    assert trt_options["trt_engine_cache_enable"] and trt_options["trt_timing_cache_enable"]
    assert trt_options["trt_engine_cache_path"] == str(tmp_path / "cache") == trt_options["trt_timing_cache_path"]
    assert trt_options["device_id"] == 1 and providers[1][1] == {"device_id": 1}
    assert trt_options["trt_profile_min_shapes"] == "images:1x3x56x84"
    assert trt_options["trt_profile_opt_shapes"] == "images:2x3x56x84"
    assert trt_options["trt_profile_max_shapes"] == "images:4x3x56x84"
    artifact.precision, artifact.format = "fp16", "onnx-fp16"  # precision in the graph: TensorRT keeps its types
    assert provider_list("tensorrt", artifact, [TRT, CUDA, CPU], tmp_path)[0][1]["trt_fp16_enable"] is False
    artifact.format = "triton"  # an fp32 graph that Triton serves in fp16
    assert provider_list("tensorrt", artifact, [TRT, CUDA, CPU], tmp_path)[0][1]["trt_fp16_enable"] is True
    assert [p for p, _ in provider_list("cuda", artifact, [CUDA, CPU])] == [CUDA, CPU]


def test_profile_shapes_cover_every_input():
    from edgescene.core.artifact import Artifact, TensorSpec

    artifact = Artifact(
        format="onnx",
        precision="fp32",
        backend="onnxruntime",
        model={},
        files={},
        inputs=[TensorSpec("images", [2, 3, 56, 84], "float32"), TensorSpec("query_points", [8, 2], "float32")],
        outputs=[],
        input_size={},
        frames={"min": 2, "opt": 2, "max": 2},
        normalization={},
    )
    assert profile_shapes(artifact)["trt_profile_max_shapes"] == "images:2x3x56x84,query_points:8x2"


def test_io_binding_reuses_output_buffers_and_matches_plain_run(exported):
    plain = open_session(exported["vggt"], device="cpu")
    bound = open_session(exported["vggt"], device="cpu", io_binding=True, intra_op_num_threads=1)
    first_images, second_images = gate_images(VGGT_H, VGGT_W, 3), gate_images(VGGT_H, VGGT_W, 3)[::-1].copy()
    first = bound({"images": first_images})
    buffers = {name: value for name, (_, value) in bound._buffers.items()}
    kept = {k: v.copy() for k, v in first.items()}
    second = bound({"images": second_images})
    assert all(bound._buffers[name][1] is buffers[name] for name in buffers)  # same shape: reused
    for name in first:  # results outlive the call
        np.testing.assert_array_equal(first[name], kept[name])
        np.testing.assert_allclose(second[name], plain({"images": second_images})[name], atol=1e-6)
    bound({"images": gate_images(VGGT_H, VGGT_W, 1)})
    assert bound._buffers["depth"][0] == (1, VGGT_H, VGGT_W)  # new shape: new buffer
    bound.close()
    with pytest.raises(RuntimeError, match="closed"):
        bound({"images": first_images})


def test_two_threads_on_one_bound_session_get_their_own_results(exported):
    """IO binding reuses output buffers: without the session's lock one thread's depth could land in the
    other's result. Each thread's outputs must equal its serial run, call after call."""
    import threading

    session = open_session(exported["vggt"], device="cpu", io_binding=True, intra_op_num_threads=1)
    feeds = [gate_images(VGGT_H, VGGT_W, 2), gate_images(VGGT_H, VGGT_W, 2)[::-1].copy()]
    serial = [session({"images": f}) for f in feeds]
    failures: list[str] = []

    def client(i: int) -> None:
        for _ in range(15):
            out = session({"images": feeds[i]})
            if not all(np.array_equal(out[k], serial[i][k]) for k in out):
                failures.append(f"client {i}")

    threads = [threading.Thread(target=client, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    session.close()


def test_without_the_cpu_arena_results_are_the_same(exported):
    images = gate_images(VGGT_H, VGGT_W, 2)
    with_arena = open_session(exported["vggt"], device="cpu")
    without = open_session(exported["vggt"], device="cpu", cpu_mem_arena=False)
    assert with_arena._session.get_session_options().enable_cpu_mem_arena is True
    assert without._session.get_session_options().enable_cpu_mem_arena is False
    expected = with_arena({"images": images})
    for _ in range(2):
        got = without({"images": images})
        assert all(np.array_equal(got[k], expected[k]) for k in expected)


def test_options_and_devices_are_validated(exported):
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['threads'\].*intra_op_num_threads"):
        open_session(exported["vggt"], threads=2)
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, tensorrt"):
        open_session(exported["vggt"], device="gpu")
    with pytest.raises(ValueError, match="intra_op_num_threads"):
        open_session(exported["vggt"], intra_op_num_threads=-1)


def test_a_rejected_artifact_is_refused(exported, tmp_path):
    folder = shutil.copytree(exported["dinov3"], tmp_path / "rejected")
    data = json.loads((folder / ARTIFACT_JSON).read_text())
    data["accepted"] = False
    (folder / ARTIFACT_JSON).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="failed its parity gate"):
        open_session(folder)


def test_a_folder_without_metadata_and_other_things_are_refused(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not checked")
    with pytest.raises(ArtifactError, match=f"no {ARTIFACT_JSON}"):
        open_session(tmp_path)
    with pytest.raises(ArtifactError, match="artifact folder.*checkpoint.*preset name"):
        open_session(tmp_path / "model.onnx")
    with pytest.raises(ArtifactError, match="neither an existing path nor a preset name"):
        open_session("resnet50")
    with pytest.raises(ArtifactError, match="does not exist"):
        open_session(tmp_path / "missing.pt")


LEAN = """
import sys
if sys.argv[2] == "blocked":
    sys.modules["torch"] = None  # any import of torch raises ImportError
import numpy as np
from edgescene.runtime.session import open_session
session = open_session(sys.argv[1])
out = session({"images": np.random.default_rng(0).random((2, 3, 56, 84), dtype=np.float32)})
assert out["depth"].shape == (2, 56, 84)
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "edgescene.models")))
assert loaded == (["torch"] if sys.argv[2] == "blocked" else []), loaded
assert sys.modules.get("torch") is None
print("ok", session.backend, session.device)
"""


@pytest.mark.parametrize("mode", ["blocked", "available"])
def test_the_runtime_opens_an_artifact_without_torch(exported, mode):
    """With torch blocked the session opens and runs; with torch installed it is still never imported."""
    result = subprocess.run([sys.executable, "-c", LEAN, str(exported["vggt"]), mode], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok onnxruntime")
