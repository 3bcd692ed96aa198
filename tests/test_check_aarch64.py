"""scripts/check_aarch64.py: the Debian mirror from apt's sources, and the comparison behind make check-aarch64
(the emulated arm64 run itself needs root and minutes: docs/aarch64.md has its result)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_aarch64.py"
spec = importlib.util.spec_from_file_location("check_aarch64", SCRIPT)
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)

DEB822 = """\
Types: deb
# http://snapshot.example/archive/debian-security/20250520T000000Z
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Enabled: no
Types: deb
URIs: http://off.example/debian
Suites: bookworm

Types: deb
# a comment between fields
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_mirror_from_deb822_skips_other_suites_sources_and_disabled_entries(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    files = check.source_files((str(tmp_path / "sources.list"), str(tmp_path / "sources.list.d")))
    assert check.find_mirror("bookworm", files) == "http://mirror.example/debian"
    with pytest.raises(LookupError, match="'trixie'"):
        check.find_mirror("trixie", files)


def test_mirror_from_one_line_sources_and_only_files_apt_reads(tmp_path):
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=arm64 signed-by=/k.gpg] https://opts.example/debian bookworm main  # trailing\n"
    )
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "other.list.disabled-by-farm").write_text("deb http://disabled.example/debian bookworm main\n")
    (tmp_path / "d" / "a.list").write_text("deb http://later.example/debian bookworm main\n")
    files = check.source_files((str(tmp_path / "sources.list"), str(tmp_path / "d")))
    assert [f.name for f in files] == ["sources.list", "a.list"]
    assert check.find_mirror("bookworm", files) == "https://opts.example/debian"
    assert check.find_mirror("bookworm", files[1:]) == "http://later.example/debian"


def _folder(path: Path, depth_offset: float = 0.0, extrinsic_offset: float = 0.0, frames: int = 3) -> Path:
    rng = np.random.default_rng(0)
    (path / "depth").mkdir(parents=True)
    cams = []
    for i in range(frames):
        ext = np.hstack([np.eye(3), np.full((3, 1), 0.1 * i)])
        ext[0, 3] += extrinsic_offset
        intr = [[150.0 + i, 0.0, 84.0], [0.0, 150.0, 63.0], [0.0, 0.0, 1.0]]
        cams.append({"index": i, "source": f"/abs/path/f{i}", "intrinsics": intr, "extrinsics": ext.tolist()})
        depth = (1.0 + rng.random((6, 8))).astype(np.float32) + np.float32(depth_offset)
        conf = (1.0 + 50 * rng.random((6, 8))).astype(np.float32)
        np.savez(path / "depth" / f"{i:05d}.npz", depth=depth, conf=conf, frame_index=np.int64(i))
    (path / "cameras.json").write_text(json.dumps({"image_size": [6, 8], "frames": cams}))
    (path / "cameras_source.json").write_text(json.dumps({"intrinsics": [c["intrinsics"] for c in cams]}))
    report = {
        "frames_seen": frames,
        "keyframes": frames,
        "windows": 1,
        "points": 100,
        "backend": {"name": "onnxruntime", "device": "cpu"},
        "timings_s": {"model_s": 1.0, "total_s": 2.0},
    }
    (path / "report.json").write_text(json.dumps(report))
    return path


def test_identical_folders_are_within_tolerance(tmp_path):
    result = check.compare_folders(_folder(tmp_path / "a"), _folder(tmp_path / "b"))
    assert result["within_tolerance"]
    assert result["max_abs"]["depth"] == 0.0 and result["max_abs"]["extrinsics"] == 0.0
    assert [row["index"] for row in result["frames"]] == [0, 1, 2]
    assert result["mismatches"] == []


def test_a_depth_or_camera_difference_over_the_tolerance_fails(tmp_path):
    ref = _folder(tmp_path / "ref")
    depth = check.compare_folders(ref, _folder(tmp_path / "depth", depth_offset=2e-4))
    assert not depth["within_tolerance"]
    assert depth["max_abs"]["depth"] == pytest.approx(2e-4, rel=0.05)
    assert depth["max_abs"]["extrinsics"] == 0.0
    close = check.compare_folders(ref, _folder(tmp_path / "close", extrinsic_offset=5e-5))
    assert close["within_tolerance"] and close["max_abs"]["extrinsics"] == pytest.approx(5e-5)
    far = check.compare_folders(ref, _folder(tmp_path / "far", extrinsic_offset=1.5e-4))
    assert not far["within_tolerance"]


def test_folders_that_do_not_match_frame_for_frame_fail(tmp_path):
    result = check.compare_folders(_folder(tmp_path / "a"), _folder(tmp_path / "b", frames=2))
    assert not result["within_tolerance"]
    assert any("camera frames differ" in m for m in result["mismatches"])
    assert any("depth files differ" in m for m in result["mismatches"])


def test_compare_gates_only_the_named_pairs_and_writes_nested_meta_without_paths(tmp_path, capsys):
    env = tmp_path / "env.json"
    env.write_text(json.dumps({"machine": "aarch64"}))
    ref, same, off = _folder(tmp_path / "a"), _folder(tmp_path / "b"), _folder(tmp_path / "c", depth_offset=1e-3)
    out = tmp_path / "docs" / "result.json"
    common = ["--out", str(out), "--meta", "timings_s.debootstrap=null", "--meta", "timings_s.total=12.5",
              "--meta", "qemu.cpu=cortex-a76", "--meta-json", f"aarch64={env}"]  # fmt: skip
    pairs = ["--pair", "same_pixels", str(ref), str(same), "--pair", "video", str(ref), str(off)]
    assert check.main(["compare", *pairs, "--gate", "same_pixels", *common]) == 0
    text = out.read_text()
    result = json.loads(text)
    assert result["passed"] and result["comparisons"]["same_pixels"]["gate"]
    assert not result["comparisons"]["video"]["within_tolerance"] and not result["comparisons"]["video"]["gate"]
    assert result["timings_s"] == {"debootstrap": None, "total": 12.5}
    assert result["qemu"] == {"cpu": "cortex-a76"} and result["aarch64"] == {"machine": "aarch64"}
    assert str(tmp_path) not in text and "/abs/path" not in text
    assert "[video] cameras and depth NOT within 0.0001" in capsys.readouterr().out
    assert check.main(["compare", *pairs, "--gate", "same_pixels", "--gate", "video", *common]) == 1
    assert not json.loads(out.read_text())["passed"]


def test_decoded_frames_of_the_sample_and_their_comparison(tmp_path):
    sample = Path(__file__).resolve().parents[1] / "edgescene" / "assets" / "sample" / "sample.mp4"
    assert check.write_frames(sample, tmp_path / "a", max_frames=2) == 2
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["00000.png", "00001.png", "decoded.npz"]
    with np.load(tmp_path / "a" / "decoded.npz") as z:
        rgb, planes = z["rgb"], z["planes"]
    assert rgb.shape == (2, 192, 256, 3) and rgb.dtype == np.uint8
    assert planes.shape == (2, 288, 256)  # yuv420p: H * 3 / 2 rows
    shifted = rgb.astype(np.int16)
    shifted[0, 0, 0, 0] += 2 if shifted[0, 0, 0, 0] < 200 else -2
    np.savez(tmp_path / "b.npz", rgb=shifted.astype(np.uint8), planes=planes)
    diff = check.compare_decoded(tmp_path / "a" / "decoded.npz", tmp_path / "b.npz")
    assert diff["planes"]["max_abs"] == 0 and diff["planes"]["fraction_differing"] == 0
    assert diff["rgb"]["max_abs"] == 2 and 0 < diff["rgb"]["fraction_differing"] < 1e-5


def test_describe_python_names_versions_without_paths():
    info = check.describe_python()
    assert info["packages"]["numpy"]["version"] == np.__version__
    assert not any(str(Path(p)) in json.dumps(info) for p in (Path.home(), Path(np.__file__).parent))
