"""The COLMAP export: a model pycolmap reads back, one image per keyframe with the run's poses and
source intrinsics, thousands of points with real (fusion) observations, and bundle adjustment
that lowers the reprojection error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pycolmap = pytest.importorskip("pycolmap")

from PIL import Image

from edgescene.assets import default_model_dir, sample_dir
from edgescene.cli import main
from edgescene.mapping.colmap import export_colmap
from edgescene.runtime.reconstruct import ReconstructConfig, reconstruct_to_folder


@pytest.fixture(scope="module")
def recon(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("colmap") / "rec"
    reconstruct_to_folder(sample_dir() / "sample.mp4", default_model_dir(), out, ReconstructConfig(), progress=False)
    return out


def test_the_model_reads_back_with_the_runs_cameras_and_points(recon, tmp_path):
    result = export_colmap(recon, out=tmp_path / "colmap")
    rec = pycolmap.Reconstruction(str(tmp_path / "colmap" / "sparse" / "0"))
    cameras = json.loads((recon / "cameras.json").read_text())["frames"]
    source = json.loads((recon / "cameras_source.json").read_text())
    assert rec.num_images() == len(cameras) == result.images == 32
    assert rec.num_points3D() == result.points3D >= 1000
    for k, frame in enumerate(cameras):
        image = rec.images[k + 1]
        assert image.name == f"{k:05d}.jpg"
        np.testing.assert_allclose(image.cam_from_world().matrix(), np.asarray(frame["extrinsics"]), atol=1e-9)
        camera = rec.cameras[image.camera_id]
        h, w = source["image_size"][k]
        assert (camera.model.name, camera.width, camera.height) == ("PINHOLE", w, h)
        K = np.asarray(source["intrinsics"][k])
        np.testing.assert_allclose(camera.params, [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5])
        with Image.open(tmp_path / "colmap" / "images" / image.name) as jpg:
            assert jpg.size == (w, h)
    # every point has a track of two keyframes or more, and the observations are the measurements the
    # map was fused from: sub-pixel, but not zero (they are not the points' own projections)
    assert all(point.track.length() >= 2 for point in rec.points3D.values())
    assert 0.05 < result.reprojection_error_px < 1.0
    summary = json.loads((tmp_path / "colmap" / "export.json").read_text())
    assert summary["points3D"] == result.points3D and summary["bundle_adjusted"] is False


def test_bundle_adjustment_lowers_the_reprojection_error(recon, tmp_path):
    result = export_colmap(recon, out=tmp_path / "colmap", bundle_adjust=True)
    assert result.bundle_adjusted and result.reprojection_error_before_px is not None
    assert result.reprojection_error_px < 0.8 * result.reprojection_error_before_px
    assert result.points3D_removed < 0.01 * (result.points3D + result.points3D_removed)
    rec = pycolmap.Reconstruction(str(tmp_path / "colmap" / "sparse" / "0"))
    assert rec.num_points3D() == result.points3D >= 1000


def test_mistakes_are_named(recon, tmp_path):
    export_colmap(recon, out=tmp_path / "colmap")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_colmap(recon, out=tmp_path / "colmap")
    with pytest.raises(ValueError, match="min_track"):
        export_colmap(recon, out=tmp_path / "x", min_track=1)
    with pytest.raises(FileNotFoundError, match="--input SOURCE"):
        export_colmap(recon, out=tmp_path / "y", source=tmp_path / "moved.mp4")
    old = tmp_path / "old"
    shutil.copytree(recon, old)
    report = json.loads((old / "report.json").read_text())
    del report["map_voxel_size"]
    (old / "report.json").write_text(json.dumps(report))
    with pytest.raises(ValueError, match="reconstruct again"):
        export_colmap(old)
    with pytest.raises(FileNotFoundError, match="written by `edgescene reconstruct`"):
        export_colmap(tmp_path / "empty")


def test_image_folders_and_the_cli(tmp_path, capsys):
    from edgescene.runtime.frames import open_frames

    photos = tmp_path / "photos"
    photos.mkdir()
    for frame in open_frames(sample_dir() / "sample.mp4", max_frames=10):
        Image.fromarray(frame.rgb).save(photos / f"shot_{frame.index:02d}.png")
    out = tmp_path / "rec"
    assert main(["reconstruct", str(photos), "--out", str(out), "--colmap", "--window", "4"]) == 0
    text = capsys.readouterr().out
    assert "colmap: 10 images" in text
    assert (out / "colmap" / "sparse" / "0" / "points3D.bin").is_file()
    moved = tmp_path / "moved"
    photos.rename(moved)
    assert main(["colmap", str(out), "--overwrite"]) == 2  # the recorded input is gone
    assert "--input SOURCE" in capsys.readouterr().err
    assert main(["colmap", str(out), "--overwrite", "--input", str(moved)]) == 0
    assert main(["reconstruct", str(moved), "--out", str(tmp_path / "r2"), "--bundle-adjust"]) == 2
    assert "add --colmap" in capsys.readouterr().err
