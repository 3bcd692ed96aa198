"""edgescene.bench.fusion_backends: a tiny run's report, numpy alone and beside open3d where installed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgescene.bench import fusion_backends as fb
from edgescene.runtime import fusion_compiled
from edgescene.runtime.fusion import voxel_downsample

SIZE = (40, 64)


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
def test_project_map_equals_voxel_downsample_of_the_same_points(backend):
    if backend == "compiled" and not fusion_compiled.AVAILABLE:
        pytest.skip("numba is not installed (the compiled fusion backend)")
    frames, voxel, keeps = fb.stream_input(fb.render(*SIZE, frames=2))
    assert keeps.shape == (2, *SIZE) and 0.4 < keeps.mean() <= 0.6  # the top 50 % by confidence
    assert voxel > 0
    m = fb.ProjectMap(voxel, backend)
    for frame in frames:
        m.add(*frame)
    points, colors, weights = (np.concatenate(x) for x in zip(*frames, strict=True))
    ref = voxel_downsample(points, colors, voxel, weights)
    agreement = fb.compare(ref, m.result(), voxel)
    assert agreement["agrees"], agreement
    assert agreement["voxels"] == len(ref[0]) > 0


def test_report_without_open3d(monkeypatch, tmp_path):
    monkeypatch.setattr(fb, "open3d_or_none", lambda: None)
    out = tmp_path / "fb.json"
    fb.main(["--out", str(out), "--frames", "2", "--sizes", "40x64", "--repeats", "1"])
    data = json.loads(out.read_text())
    assert data["open3d"] == {"installed": False, "note": data["open3d"]["note"]}
    assert {"cpu", "cores", "python", "numpy"} <= set(data["machine"])
    (size,) = data["sizes"]
    assert size["size_hw"] == list(SIZE) and size["frames"] == 2 and size["voxel_size"] > 0
    expected = ["numpy", "compiled"] if fusion_compiled.AVAILABLE else ["numpy"]
    assert list(size["fusion"]) == expected and size["fusion"]["numpy"]["ms_per_frame"] > 0
    if fusion_compiled.AVAILABLE:
        assert size["fusion_agreement"]["compiled"]["agrees"] and size["fusion"]["compiled"]["ratio_to_numpy"] > 0
    assert size["fusion_agreement"]["numpy_vs_voxel_downsample_all_frames"]["agrees"]
    assert set(size["downsample_one_frame"]) == {"numpy", "numpy-unweighted"}
    assert "not installed" in out.with_suffix(".md").read_text()


def test_report_with_open3d():
    pytest.importorskip("open3d", reason="open3d is not installed: only the numpy backend can be measured")
    data = fb.run([SIZE], n_frames=2, repeats=1, import_runs=0)
    json.dumps(data)
    assert data["open3d"]["installed"] and data["open3d"]["package_folder_mib"] > 0
    assert data["open3d"]["cuda_measured"] is False
    (size,) = data["sizes"]
    fusion, agreement = size["fusion"], size["fusion_agreement"]
    assert set(fusion) - {"compiled"} == {"numpy", "open3d-hashmap", "open3d-hashmap-npgroup", "open3d-tsdf"}
    for name in ("open3d-hashmap", "open3d-hashmap-npgroup"):
        assert agreement[name]["agrees"], agreement[name]
        assert fusion[name]["ratio_to_numpy"] > 0
    down = size["downsample_one_frame"]
    assert down["open3d-hashmap"]["agreement"]["agrees"]
    assert down["open3d-tensor-f64"]["agreement"]["agrees"]
    assert "open3d-hashmap" in fb.to_markdown(data)
