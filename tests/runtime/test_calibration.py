"""Known intrinsics: the calibration file's forms and errors, their mapping into model pixels, and a
reconstruction that uses them in place of the model's field of view."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgescene.core.preprocess import choose_model_size
from edgescene.runtime.calibration import CalibrationError, load_calibration, parse_calibration, to_model_pixels

K = np.array([[500.0, 0.0, 321.5], [0.0, 498.0, 239.0], [0.0, 0.0, 1.0]])


def _rays(k: np.ndarray, uv: np.ndarray) -> np.ndarray:
    d = np.linalg.solve(k, np.c_[uv, np.ones(len(uv))].T).T
    return d / np.linalg.norm(d, axis=1, keepdims=True)


@pytest.mark.parametrize(
    "data",
    [
        {"fx": 500, "fy": 498, "cx": 321.5, "cy": 239},
        {"K": K.tolist()},
        K.tolist(),
        {"fx": 500, "fy": 498, "cx": 321.5, "cy": 239, "dist": [0, 0, 0, 0, 0]},
    ],
)
def test_one_camera_in_every_form(data):
    cal = parse_calibration(data)
    assert np.array_equal(cal.for_frame("a.png", (640, 480)), K)
    assert cal.describe()["kind"] == "one camera"


def test_a_calibration_at_another_resolution_is_scaled_and_another_aspect_refused():
    cal = parse_calibration({"K": K.tolist(), "width": 1280, "height": 960})
    assert np.allclose(cal.for_frame(None, (640, 480)), np.diag([0.5, 0.5, 1]) @ K)
    with pytest.raises(CalibrationError, match="another aspect ratio"):
        cal.for_frame(None, (640, 360))


def test_per_frame_entries_are_found_by_relative_path():
    k2 = K * [[2], [2], [1]]
    cal = parse_calibration({"seq/0001.png": {"intrinsics": K.tolist()}, "seq/0002.png": {"intrinsics": k2.tolist()}})
    assert np.array_equal(cal.for_frame("/data/run/seq/0002.png", (640, 480)), k2)
    with pytest.raises(CalibrationError, match="no intrinsics for /data/run/seq/0003.png"):
        cal.for_frame("/data/run/seq/0003.png", (640, 480))
    with pytest.raises(CalibrationError, match="no intrinsics"):
        cal.for_frame("/data/xseq/0001.png", (640, 480))  # a path boundary, not a suffix of a name


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"fx": 500, "fy": 498, "cx": 320}, "missing cy"),
        ({"fx": -5, "fy": 498, "cx": 320, "cy": 240}, "must be > 0"),
        ({"K": [[1, 2], [3, 4]]}, "3x3"),
        ({"K": [[500, 1, 320], [0, 500, 240], [0, 0, 1]]}, "skew"),
        ({"fx": 500, "fy": 500, "cx": 320, "cy": 240, "dist": [0.1, 0, 0, 0]}, "undistort"),
        ({"fx": "wide", "fy": 500, "cx": 320, "cy": 240}, "must be numbers"),
        ({"fx": 500, "fy": 500, "cx": 320, "cy": 240, "width": 640}, "both 'width' and 'height'"),
        ({"a.png": {"focal": 3}}, "per-frame entry"),
        ("K", "expected a JSON object"),
        ({}, "empty"),
    ],
)
def test_bad_calibrations_say_what_is_wrong(data, message):
    with pytest.raises(CalibrationError, match=message):
        parse_calibration(data)


def test_unreadable_files(tmp_path):
    with pytest.raises(CalibrationError, match="no such file"):
        load_calibration(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{fx: 1")
    with pytest.raises(CalibrationError, match="not valid JSON"):
        load_calibration(bad)


@pytest.mark.parametrize("mode", ["crop", "pad"])
@pytest.mark.parametrize("hw", [(480, 640), (640, 480), (301, 977)])
def test_model_pixels_see_the_same_rays_as_the_source(mode, hw):
    h, w = hw
    k = np.array([[0.9 * w, 0, w / 2 + 3.3], [0, 0.9 * w, h / 2 - 2.1], [0, 0, 1]])
    resize, _ = choose_model_size(h, w, mode, None, 518, 14)
    km = to_model_pixels(k, resize)
    rng = np.random.default_rng(0)
    src = rng.uniform([0, 0], [w, h], (50, 2))
    model = src * [resize.scale_x, resize.sy] + [resize.offset_x, resize.offset_y]
    assert np.allclose(_rays(km, model), _rays(k, src), atol=1e-12)
    assert np.allclose(resize.to_source_intrinsics(km), k)  # and back (cameras_source.json)


def test_reconstruct_uses_given_intrinsics(tmp_path):
    from edgescene.assets import default_model_dir, sample_dir
    from edgescene.runtime.reconstruct import ReconstructConfig, reconstruct_to_folder

    truth = np.load(sample_dir() / "sample_gt.npz")["intrinsics"]
    calibration = tmp_path / "K.json"
    calibration.write_text(json.dumps({"K": (truth * [[1.1], [1.1], [1]]).tolist()}))  # 10 % longer focal
    out = tmp_path / "out"
    config = ReconstructConfig(max_frames=12, intrinsics=str(calibration))
    report = reconstruct_to_folder(sample_dir() / "sample.mp4", default_model_dir(), out, config, progress=False)
    given = report["intrinsics"]
    assert given["source"] == "given" and given["kind"] == "one camera"
    # the model's own focal length is within a few % of the truth (0.98-1.10 measured), so about 1/1.1 of this one
    assert 0.8 < given["focal_ratio_median"] < 1.0 and len(given["focal_ratio_per_window"]) == report["windows"]
    source = json.loads((out / "cameras_source.json").read_text())
    assert source["intrinsics_source"] == "given"
    assert np.allclose(source["intrinsics"], truth * [[1.1], [1.1], [1]])
    cameras = json.loads((out / "cameras.json").read_text())
    assert cameras["intrinsics_source"] == "given"
    model_k = np.array(cameras["frames"][0]["intrinsics"])
    assert all(np.allclose(f["intrinsics"], model_k) for f in cameras["frames"])  # one camera, every keyframe
    assert model_k[0, 0] == pytest.approx(1.1 * truth[0, 0] * cameras["image_size"][1] / 256)  # mapped to model pixels


def test_a_frame_the_calibration_misses_fails_before_the_model_runs(tmp_path):
    from PIL import Image

    from edgescene.assets import default_model_dir
    from edgescene.runtime.reconstruct import ReconstructConfig, reconstruct_to_folder

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.fromarray(np.full((60, 80, 3), 40 * i, np.uint8)).save(frames / f"{i}.png")
    calibration = tmp_path / "K.json"
    calibration.write_text(json.dumps({"0.png": {"intrinsics": K.tolist()}, "1.png": {"intrinsics": K.tolist()}}))
    config = ReconstructConfig(intrinsics=str(calibration), keyframe_threshold=0.0)
    with pytest.raises(CalibrationError, match=r"no intrinsics for .*2\.png"):
        reconstruct_to_folder(frames, default_model_dir(), tmp_path / "out", config, progress=False)
    assert not (tmp_path / "out").exists()
