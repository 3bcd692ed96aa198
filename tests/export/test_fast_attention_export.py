"""Exporting VGGT with fast attention: the ONNX graph passes the parity gate against the fast PyTorch
model at every gated frame count (one frame included), records the setting, and the runtime keeps
exact and fast artifacts apart."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgescene.core.artifact import ArtifactError
from edgescene.export.pipeline import ExportConfig, export_model
from edgescene.runtime.session import open_session

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from edgescene.models.vggt import build_vggt

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(build_vggt("vggt_tiny").state_dict(), path)
    return path


def _export(checkpoint, out, fast, frames_range=(1, 3, 6), unproject=False):
    config = ExportConfig(
        model=str(checkpoint),
        format="onnx",
        out=str(out),
        height=56,
        width=84,
        frames_range=frames_range,
        fast_attention=fast,
        unproject=unproject,
    )
    return export_model(config, log=lambda line: None)


def test_a_fast_export_passes_the_gate_against_the_fast_model(checkpoint, tmp_path):
    result = _export(checkpoint, tmp_path / "fast", True)
    assert result.accepted
    assert [case.frames for case in result.report.cases] == [1, 2, 3, 5, 6]  # one frame included
    fast = result.artifact.model["fast_attention"]
    assert fast["stride"] == 2 and fast["ratio"] == 1.0 and "token merging" in fast["method"]
    assert json.loads((tmp_path / "fast" / "artifact.json").read_text())["model"]["fast_attention"] == fast
    # the exported graph at a frame count the trace did not see equals the PyTorch fast model
    torch_fast = open_session(checkpoint, "cpu", height=56, width=84, fast_attention=True)
    onnx_fast = open_session(tmp_path / "fast", fast_attention=True)
    images = np.random.default_rng(0).random((5, 3, 56, 84), dtype=np.float32)
    want, got = torch_fast({"images": images}), onnx_fast({"images": images})
    for name in ("pose_enc", "depth", "world_points"):
        np.testing.assert_allclose(got[name], want[name], atol=2e-4, rtol=0, err_msg=name)
    exact = open_session(checkpoint, "cpu", height=56, width=84)({"images": images})
    assert np.abs(exact["pose_enc"] - got["pose_enc"]).max() > 1e-4  # it is not the exact model


def test_an_exact_artifact_is_not_run_as_fast(checkpoint, tmp_path):
    _export(checkpoint, tmp_path / "exact", False)
    with pytest.raises(ArtifactError, match="re-export with `edgescene export ... --fast-attention`"):
        open_session(tmp_path / "exact", fast_attention=True)
    assert "fast_attention" not in open_session(tmp_path / "exact").artifact.model


def test_dinov3_has_no_fast_attention(tmp_path):
    with pytest.raises(ValueError, match="--fast-attention is for VGGT"):
        export_model(
            ExportConfig(
                model="dinov3_vits16", format="onnx", out=str(tmp_path / "d"), height=32, width=32, fast_attention=True
            ),
            log=lambda line: None,
        )


def test_unprojection_inside_the_graph_feeds_the_runtime(checkpoint, tmp_path):
    """export --unproject adds depth_points; the runtime then fuses them instead of unprojecting on the
    CPU, and the reconstruction matches the one that unprojects in numpy (float32 vs float64 rounding)."""
    from edgescene.assets import sample_dir
    from edgescene.runtime.reconstruct import ReconstructConfig, reconstruct_to_folder

    plain = _export(checkpoint, tmp_path / "plain", False, frames_range=(1, 4, 4))
    inside = _export(checkpoint, tmp_path / "inside", False, frames_range=(1, 4, 4), unproject=True)
    assert inside.accepted and [t.name for t in inside.artifact.outputs][-1] == "depth_points"
    assert "depth_points" not in [t.name for t in plain.artifact.outputs]
    config = ReconstructConfig(window=4, overlap=2, max_frames=10, pipeline=False)
    reports = {
        name: reconstruct_to_folder(
            sample_dir() / "sample.mp4", folder, tmp_path / f"rec_{name}", config, progress=False
        )
        for name, folder in (("plain", plain.folder), ("inside", inside.folder))
    }
    assert reports["plain"]["keyframes"] == reports["inside"]["keyframes"] == 10
    cams = {name: json.loads((tmp_path / f"rec_{name}" / "cameras.json").read_text())["frames"] for name in reports}
    for a, b in zip(cams["plain"], cams["inside"], strict=True):
        np.testing.assert_allclose(b["extrinsics"], a["extrinsics"], atol=1e-4)
    assert abs(reports["plain"]["points"] - reports["inside"]["points"]) <= 0.01 * reports["plain"]["points"]
    torch_session = open_session(checkpoint, "cpu", height=56, width=84, unproject=True)
    assert "depth_points" in torch_session({"images": np.zeros((2, 3, 56, 84), np.float32)})
