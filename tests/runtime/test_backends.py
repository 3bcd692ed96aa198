"""The three backends behind open_session give the same IO and the same numbers.

- torch (preset + weights, checkpoint file) against the ONNX artifact exported from the same weights;
- native TensorRT against a stand-in ``tensorrt`` / cuda-python pair that computes on the host: the
  device check, buffers allocated once at the profile maximum, copies and one synchronize per call.
  It checks how the backend drives the APIs, not TensorRT;
- ``gpu`` + ``tensorrt``: a real engine exported here, compared with onnxruntime.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from trt_stand_ins import Err, FakeTrt, H, W

from edgescene.core.artifact import Artifact, ArtifactError, TensorSpec, write_artifact_json
from edgescene.export.parity import gate_images
from edgescene.export.pipeline import ExportConfig, export_model
from edgescene.models import create_model
from edgescene.runtime.session import open_session
from edgescene.trt.runner import check_engine_device, cuda_call

SIZES = {"vggt_tiny": (56, 84), "dinov3_tiny": (32, 48)}
QUIET = {"log": lambda line: None}


@pytest.fixture(scope="module")
def same_weights(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """preset -> (checkpoint, ONNX artifact exported from that checkpoint)."""
    root = tmp_path_factory.mktemp("backends")
    made = {}
    for preset, (height, width) in SIZES.items():
        torch.manual_seed(0)
        checkpoint = root / f"{preset}.pt"
        torch.save(create_model(preset).eval().state_dict(), checkpoint)
        result = export_model(
            ExportConfig(
                model=preset,
                weights=str(checkpoint),
                format="onnx",
                out=str(root / f"{preset}_onnx"),
                height=height,
                width=width,
                frames_range=(1, 2, 4),
            ),
            **QUIET,
        )
        assert result.accepted, result.report.format()
        made[preset] = (checkpoint, result.folder)
    return made


@pytest.mark.parametrize("preset", list(SIZES))
@pytest.mark.parametrize("source", ["preset", "checkpoint"])
def test_torch_backend_matches_the_onnx_artifact(same_weights, preset, source):
    checkpoint, folder = same_weights[preset]
    height, width = SIZES[preset]
    model, options = (preset, {"weights": checkpoint}) if source == "preset" else (checkpoint, {})
    reference = open_session(folder, device="cpu")
    session = open_session(model, device="cpu", height=height, width=width, **options)
    assert session.backend == "torch" and session.device == "cpu" and session.artifact.precision == "fp32"
    assert session.artifact.model["preset"] == preset
    sized = {"height": height, "width": width}
    for kind in ("input_spec", "output_spec"):  # identical IO at this size: names, shapes, dtypes
        assert [(t.name, [sized.get(d, d) for d in t.shape], t.dtype) for t in getattr(session, kind)()] == [
            (t.name, t.shape, t.dtype) for t in getattr(reference, kind)()
        ]
    assert session.artifact.normalization == reference.artifact.normalization
    for frames in (1, 3):
        feeds = {"images": gate_images(height, width, frames)}
        expected, got = reference(feeds), session(feeds)
        assert list(got) == list(expected)
        for name in expected:
            assert got[name].dtype == np.float32 and got[name].shape == expected[name].shape, name
            assert np.abs(got[name] - expected[name]).max() < 1e-4, name
    with pytest.raises(ValueError, match="must have shape|multiple of the patch size"):
        session({"images": gate_images(height + 5, width, 1)})
    if preset == "vggt_tiny":  # VGGT in PyTorch serves every multiple of the patch size
        assert session.artifact.served_sizes() is None
        other = session({"images": gate_images(height + 14, width - 14, 2)})
        assert other["depth"].shape == (2, height + 14, width - 14)
        with pytest.raises(
            ValueError, match=f"got \\[1, 3, {height + 14}, {width}\\] \\(input sizes served: {height}x{width}\\)"
        ):
            reference({"images": gate_images(height + 14, width, 1)})
    session.close()


def test_torch_backend_defaults_and_errors(same_weights):
    session = open_session("dinov3_tiny", device="cpu")  # random weights, default 224x224
    assert session.artifact.input_size == {"height": 224, "width": 224}
    assert session.artifact.model["source"] == "random-init"
    assert [t.shape for t in session.output_spec()] == [["batch", 64], ["batch", 196, 64]]
    assert session({"images": gate_images(224, 224, 2)})["patch_tokens"].shape == (2, 196, 64)
    # VGGT defaults to its own resolution at 4:3: 224 wide for vggt_tiny (392x518 for vggt_1b, 126x168 vggt_small)
    assert open_session("vggt_tiny", device="cpu").artifact.input_size == {"height": 168, "width": 224}
    with pytest.raises(ValueError, match="unknown model 'vggt_tinyy'.*Did you mean vggt_tiny"):
        open_session("vggt_tinyy")
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        open_session("vggt_tiny", height=50, width=84)
    with pytest.raises(ValueError, match="torch backend runs on auto/cpu/cuda, not device='tensorrt'"):
        open_session("vggt_tiny", device="tensorrt")
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['providers'\]"):
        open_session("vggt_tiny", providers=["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="weights= goes with a preset name"):
        open_session(same_weights["vggt_tiny"][0], weights=same_weights["vggt_tiny"][0])
    with pytest.raises(ValueError, match=r"'batch' axis is 3, outside this artifact's range 1\.\.2"):
        open_session("dinov3_tiny", device="cpu", height=32, width=32, max_frames=2)({"images": gate_images(32, 32, 3)})
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="sees no CUDA GPU"):
            open_session("vggt_tiny", device="cuda")


# ---------------------------------------------------------------------------------------------
# Native TensorRT against stand-ins

BUILT = {"gpu": "Orin", "compute_capability": "8.7", "tensorrt": "10.3.0"}


def _fake_trt_artifact(folder: Path, device: dict) -> Path:
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"onnx")
    (folder / "model.engine").write_bytes(b"engine")
    artifact = Artifact(
        format="tensorrt",
        precision="fp32",
        backend="tensorrt",
        model={
            "family": "dinov3",
            "preset": "fake",
            "source": "random-init",
            "source_sha256": None,
            "track_head": False,
        },
        files={"model": "model.onnx", "external_data": [], "engine": "model.engine"},
        inputs=[TensorSpec("images", ["frames", 3, H, W], "float32")],
        outputs=[TensorSpec("pooled", ["frames", 3], "float32"), TensorSpec("scaled", ["frames", 3, H, W], "float32")],
        input_size={"height": H, "width": W},
        frames={"min": 1, "opt": 2, "max": 4},
        normalization={},
        accepted=True,
        device=dict(device),
    )
    write_artifact_json(artifact, folder)
    return folder


def test_cuda_call_unpacks_and_raises():
    assert cuda_call((Err.cudaSuccess, 5)) == 5
    assert cuda_call((Err.cudaSuccess,)) is None
    assert cuda_call((0, 1, 2)) == (1, 2)
    with pytest.raises(RuntimeError, match=r"cudaErrorMemoryAllocation \(2\)"):
        cuda_call((Err.cudaErrorMemoryAllocation, 0))


def test_engine_device_check():
    check_engine_device(BUILT, {"gpu": "Jetson AGX Orin", "compute_capability": "8.7", "tensorrt": "10.3.0"})
    check_engine_device({}, {"gpu": "H100", "compute_capability": "9.0", "tensorrt": "10.9.0"})  # nothing recorded
    with pytest.raises(
        RuntimeError,
        match=r"engine built for sm 8\.7 with TensorRT 10\.3\.0 on Orin, this machine has "
        r"sm 9\.0 with TensorRT 10\.3\.0 on H100 \(differs in compute_capability\)"
        r": rebuild with `edgescene export --format tensorrt` here",
    ):
        check_engine_device(BUILT, {"gpu": "H100", "compute_capability": "9.0", "tensorrt": "10.3.0"})
    with pytest.raises(RuntimeError, match="differs in tensorrt"):
        check_engine_device(BUILT, {"gpu": "Orin", "compute_capability": "8.7", "tensorrt": "10.16.1"})


def test_a_mismatched_engine_is_refused_before_deserializing(tmp_path, trt_stand_ins):
    trt_stand_ins.props.major, trt_stand_ins.props.minor = 9, 0  # this "GPU" is sm 9.0, the engine was built for 8.7
    folder = _fake_trt_artifact(tmp_path / "engine", BUILT)
    with pytest.raises(RuntimeError, match=r"engine built for sm 8\.7 .* this machine has sm 9\.0 .*rebuild with"):
        open_session(folder)
    assert FakeTrt.Runtime.deserialized == 0
    with pytest.raises(ValueError, match="runs on an NVIDIA GPU only"):
        open_session(folder, device="cpu")


def test_the_native_backend_allocates_once_and_copies_once_per_call(tmp_path, trt_stand_ins):
    folder = _fake_trt_artifact(tmp_path / "engine", BUILT)
    session = open_session(folder, device_id=0)
    assert session.backend == "tensorrt" and session.device == "cuda"
    assert session.here == {"gpu": "Orin", "compute_capability": "8.7", "tensorrt": "10.3.0"}
    # one device buffer per tensor at the profile maximum (4 frames); pinned host buffers for the outputs
    assert trt_stand_ins.calls == ["malloc", "malloc", "malloc_host", "malloc", "malloc_host"]
    assert session._runner._buffers["images"].max_shape == (4, 3, H, W)
    assert session._runner._buffers["scaled"].nbytes == 4 * 3 * H * W * 4
    rng = np.random.default_rng(0)
    results = []
    for frames in (3, 1, 4, 3):
        trt_stand_ins.calls.clear()
        images = rng.random((frames, 3, H, W), dtype=np.float32)
        out = session({"images": images})
        assert trt_stand_ins.calls == [
            "cudaMemcpyHostToDevice",
            "cudaMemcpyDeviceToHost",
            "cudaMemcpyDeviceToHost",
            "sync",
        ]  # no allocation, one synchronize
        assert list(out) == ["pooled", "scaled"]
        np.testing.assert_allclose(out["pooled"], images.mean(axis=(2, 3)), rtol=1e-6)
        np.testing.assert_array_equal(out["scaled"], 2 * images)
        results.append((images, out))
    np.testing.assert_array_equal(results[0][1]["scaled"], 2 * results[0][0])  # not overwritten by later calls
    with pytest.raises(ValueError, match=r"'frames' axis is 5, outside this artifact's range 1\.\.4"):
        session({"images": np.zeros((5, 3, H, W), np.float32)})
    session.close()
    assert sorted(trt_stand_ins.calls[-6:]) == sorted(
        ["free", "free", "free_host", "free", "free_host", "stream_destroy"]
    )
    assert trt_stand_ins.memory == {}
    with pytest.raises(RuntimeError, match="closed"):
        session({"images": np.zeros((1, 3, H, W), np.float32)})


def test_an_unreadable_engine_and_missing_tensorrt(tmp_path, trt_stand_ins, monkeypatch):
    folder = _fake_trt_artifact(tmp_path / "engine", BUILT)
    (folder / "model.engine").write_bytes(b"corrupt")
    with pytest.raises(RuntimeError, match="could not deserialize.*rebuild with"):
        open_session(folder)
    monkeypatch.undo()
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)
    with pytest.raises(ImportError, match=r"edgescene\[runtime-gpu\]"):
        open_session(folder)


def test_an_unknown_engine_backend_name_is_refused(tmp_path):
    folder = _fake_trt_artifact(tmp_path / "engine", BUILT)
    text = (folder / "artifact.json").read_text().replace('"backend": "tensorrt"', '"backend": "openvino"')
    (folder / "artifact.json").write_text(text)
    with pytest.raises(ArtifactError, match="unknown backend 'openvino'"):
        open_session(folder)


# ---------------------------------------------------------------------------------------------
# Real TensorRT


def _tensorrt_missing() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    for module in ("tensorrt", "cuda"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'edgescene[runtime-gpu]')"
    return None


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(_tensorrt_missing() is not None, reason=str(_tensorrt_missing()))
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-3), ("fp16", 5e-2)])
def test_native_tensorrt_matches_onnxruntime(tmp_path, same_weights, precision, tolerance):
    checkpoint, onnx_folder = same_weights["vggt_tiny"]
    result = export_model(
        ExportConfig(
            model="vggt_tiny",
            weights=str(checkpoint),
            format="tensorrt",
            out=str(tmp_path / "engine"),
            height=56,
            width=84,
            frames_range=(1, 2, 4),
            precision=precision,
        ),
        **QUIET,
    )
    assert result.accepted, result.report.format()
    reference = open_session(onnx_folder, device="cpu")
    session = open_session(result.folder)
    assert session.backend == "tensorrt"
    assert [t.name for t in session.output_spec()] == [t.name for t in reference.output_spec()]
    for frames in (1, 3, 4, 2):
        feeds = {"images": gate_images(56, 84, frames)}
        expected, got = reference(feeds), session(feeds)
        for name in ("pose_enc", "depth", "world_points"):
            assert np.percentile(np.abs(got[name] - expected[name]), 99) < tolerance, (frames, name)
    session.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
def test_torch_backend_on_cuda_uses_autocast(same_weights):
    checkpoint, folder = same_weights["vggt_tiny"]
    session = open_session(checkpoint, device="cuda", height=56, width=84)
    assert session.artifact.precision in ("bf16", "fp16")
    got, expected = (
        session({"images": gate_images(56, 84, 2)}),
        open_session(folder, device="cpu")({"images": gate_images(56, 84, 2)}),
    )
    assert got["depth"].dtype == np.float32
    assert np.percentile(np.abs(got["depth"] - expected["depth"]), 99) < 5e-2
