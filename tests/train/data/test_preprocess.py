"""``edgescene preprocess``: a mixed folder of real small files (made here with OpenCV, PyAV and
tifffile) -> PNGs + manifest; modalities, bit depths, tiles and geo, video sampling, cameras,
per-file errors, incremental re-runs, overwrite protection, workers and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import tifffile

from edgescene.cli import main
from edgescene.core.manifest import read_manifest
from edgescene.train.data.preprocess import PreprocessConfig, preprocess_folder, tile_grid
from edgescene.train.data.readers import sample_indices

SIZE, TILE, MAX_FRAMES, VIDEO_FRAMES = 32, 64, 8, 20
GEO_ORIGIN, GEO_PIXEL = (500_000.0, 4_000_000.0), 10.0
SAT_W, SAT_H = 150, 100  # tiled by TILE into 3 x 2
K_RGB = [[50.0, 0.0, 30.0], [0.0, 52.0, 22.0], [0.0, 0.0, 1.0]]
E_RGB = [[1.0, 0.0, 0.0, 0.1], [0.0, 1.0, 0.0, 0.2], [0.0, 0.0, 1.0, 0.3]]
BAD = {
    "broken/corrupt.jpg": "cannot decode image",
    "broken/broken.mp4": "unreadable video",
    "misc/notes.xyz": "unsupported file type .xyz",
    "photos/bad_modality.png": "'modality' must be one of",
}
GOOD_SOURCES = [
    "clips/walk.mp4",
    "ir/thermal16.png",
    "ir/thermal8.png",
    "photos/rgb.jpg",
    "photos/rgba.png",
    "sat/multiband16.tif",
    "sat/scene.tif",
]


def _geotiff(path: Path, pixels: np.ndarray) -> None:
    keys = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633)  # projected, PixelIsArea, EPSG:32633
    tifffile.imwrite(
        path,
        pixels,
        photometric="rgb" if pixels.shape[2] == 3 else "minisblack",
        planarconfig="contig",
        extratags=[
            (33550, "d", 3, (GEO_PIXEL, GEO_PIXEL, 0.0), False),
            (33922, "d", 6, (0.0, 0.0, 0.0, *GEO_ORIGIN, 0.0), False),
            (34735, "H", len(keys), keys, False),
        ],
    )


def _video(path: Path, frames: int, width: int = 64, height: int = 48) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.full((height, width, 3), (i * 12) % 255, np.uint8)
            img[:, (i * 3) % width] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_raw(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for d in ("photos", "ir", "sat", "clips", "broken", "misc"):
        (root / d).mkdir(parents=True)
    yy, xx = np.mgrid[0:45, 0:64]
    rgb = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).astype(np.uint8)
    cv2.imwrite(str(root / "photos/rgb.jpg"), rgb[:, :, ::-1])
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[:, 20:] = (0, 0, 255, 255)  # BGRA: opaque red on the right, fully transparent black on the left
    cv2.imwrite(str(root / "photos/rgba.png"), rgba)
    cv2.imwrite(str(root / "photos/bad_modality.png"), rgb[:, :, ::-1])
    thermal16 = np.tile(np.arange(60, dtype=np.uint16) * 1000 + 500, (20, 1))  # 500 .. 59500 left to right
    cv2.imwrite(str(root / "ir/thermal16.png"), thermal16)
    cv2.imwrite(str(root / "ir/thermal8.png"), np.tile(np.arange(40, dtype=np.uint8) * 6, (40, 1)))
    _geotiff(root / "sat/scene.tif", rng.integers(0, 256, (SAT_H, SAT_W, 3), dtype=np.uint8))
    _geotiff(root / "sat/multiband16.tif", rng.integers(1000, 5000, (30, 40, 4), dtype=np.uint16))
    _video(root / "clips/walk.mp4", VIDEO_FRAMES)
    (root / "broken/corrupt.jpg").write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    (root / "broken/broken.mp4").write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    (root / "misc/notes.xyz").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"hidden")
    (root / "metadata.json").write_text(
        json.dumps(
            {
                "photos/rgb.jpg": {"intrinsics": K_RGB, "extrinsics": E_RGB, "note": "front camera"},
                "ir/thermal16.png": {"intrinsics": K_RGB},
                "photos/rgba.png": {"modality": "ir"},
                "photos/bad_modality.png": {"modality": "thermal"},
                "clips/walk.mp4": {"camera_model": "test-cam"},
                "missing/nothing.jpg": {"note": "matches no file"},
            }
        )
    )
    return root


@pytest.fixture
def raw(tmp_path) -> Path:
    return make_raw(tmp_path / "raw")


def config(raw: Path, out: Path, **overrides) -> PreprocessConfig:
    options = dict(
        input_dir=raw,
        output_dir=out,
        size=SIZE,
        max_video_frames=MAX_FRAMES,
        tile_size=TILE,
        metadata_json=raw / "metadata.json",
    )
    options.update(overrides)
    return PreprocessConfig(**options)


def output_mtimes(out: Path) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*.png")}


def test_mixed_folder_gives_the_expected_manifest(raw, tmp_path):
    out = tmp_path / "out"
    calls = []
    summary = preprocess_folder(config(raw, out), progress=lambda done, total, src: calls.append((done, total)))
    manifest = read_manifest(out)
    by_id = {e.id: e for e in manifest.entries}
    tiles = [(x, y) for x, y, _, _ in tile_grid(SAT_W, SAT_H, TILE)]
    frames = sample_indices(VIDEO_FRAMES, MAX_FRAMES)
    expected = {"photos/rgb.jpg", "photos/rgba.png", "ir/thermal16.png", "ir/thermal8.png", "sat/multiband16.tif"}
    expected |= {f"sat/scene.tif#t{x}_{y}" for x, y in tiles} | {f"clips/walk.mp4#f{i}" for i in frames}
    assert set(by_id) == expected
    assert [e.id for e in manifest.entries] == sorted(by_id)
    assert calls[-1] == (len(GOOD_SOURCES) + len(BAD), len(GOOD_SOURCES) + len(BAD))

    for e in manifest.entries:
        img = cv2.imread(str(out / e.path), cv2.IMREAD_UNCHANGED)
        assert img.shape[:2] == (e.height, e.width) and (img.ndim == 2) == (e.channels == 1)
        assert img.dtype == (np.uint16 if e.bit_depth == 16 else np.uint8)
        if e.tile is None:
            assert max(e.width, e.height) == SIZE, e.id

    modalities = {i: e.modality for i, e in by_id.items() if "#" not in i}
    assert modalities == {
        "photos/rgb.jpg": "visible",
        "photos/rgba.png": "ir",
        "ir/thermal16.png": "ir",
        "ir/thermal8.png": "ir",
        "sat/multiband16.tif": "satellite",
    }
    assert summary.modalities == {"visible": len(frames) + 1, "ir": 3, "satellite": len(tiles) + 1}

    # RGBA: composited on white, 3 channels kept although the metadata relabels it "ir"
    rgba = by_id["photos/rgba.png"]
    assert (rgba.channels, rgba.bit_depth, rgba.width, rgba.height) == (3, 8, 32, 24)
    img = cv2.imread(str(out / rgba.path))[:, :, ::-1]
    assert (img[:, :12] >= 250).all() and (abs(img[:, -12:].astype(int) - (255, 0, 0)) <= 3).all()

    # 16-bit IR: stays 16-bit single channel, the gradient survives resampling
    ir16 = by_id["ir/thermal16.png"]
    assert (ir16.channels, ir16.bit_depth, ir16.original_width, ir16.original_height) == (1, 16, 60, 20)
    ir = cv2.imread(str(out / ir16.path), cv2.IMREAD_UNCHANGED)
    assert ir.dtype == np.uint16 and (np.diff(ir.astype(int), axis=1) > 0).all()
    assert ir.max() > 0.95 * 59500 and ir.min() < 3000
    ir8 = by_id["ir/thermal8.png"]
    assert (ir8.channels, ir8.bit_depth) == (1, 8)

    # cameras: intrinsics + extrinsics -> camera scaled to the output; intrinsics alone -> metadata
    cam = by_id["photos/rgb.jpg"]
    sx, sy = cam.width / 64, cam.height / 45
    assert (cam.width, cam.height) == (32, 23) and cam.metadata["note"] == "front camera"
    np.testing.assert_allclose(cam.camera["intrinsics"], [[50 * sx, 0, 30 * sx], [0, 52 * sy, 22 * sy], [0, 0, 1]])
    assert cam.camera["extrinsics"] == E_RGB
    assert ir16.camera is None
    np.testing.assert_allclose(
        ir16.metadata["intrinsics_scaled"],
        [[50 * 32 / 60, 0, 30 * 32 / 60], [0, 52 * 11 / 20, 22 * 11 / 20], [0, 0, 1]],
    )

    # video: uniformly sampled frames, in order, with the video's metadata
    seq = manifest.sequences()["clips/walk.mp4"]
    assert len(seq) == min(MAX_FRAMES, VIDEO_FRAMES)
    idx = [e.frame_index for e in seq]
    assert idx == frames and idx[0] == 0 and idx[-1] == VIDEO_FRAMES - 1 and np.all(np.diff(idx) > 0)
    assert all(e.metadata == {"camera_model": "test-cam"} and e.modality == "visible" for e in seq)
    assert np.all(np.diff([e.timestamp_s for e in seq]) > 0)
    assert (seq[0].width, seq[0].height, seq[0].channels) == (32, 24, 3)

    # tiles: cover the GeoTIFF exactly; each tile's pixel (0, 0) maps to its top-left corner
    sat = [e for e in manifest.entries if e.source == "sat/scene.tif"]
    coverage = np.zeros((SAT_H, SAT_W), int)
    for e in sat:
        t = e.tile
        coverage[t["y"] : t["y"] + t["height"], t["x"] : t["x"] + t["width"]] += 1
        assert max(e.width, e.height) == SIZE and e.path == f"tiles/sat/scene/x{t['x']}_y{t['y']}.png"
        assert e.geo["crs"] == "EPSG:32633" and (e.original_width, e.original_height) == (SAT_W, SAT_H)
        a, b, c, d, ee, f = e.geo["transform"]
        assert (c, f) == pytest.approx((GEO_ORIGIN[0] + GEO_PIXEL * t["x"], GEO_ORIGIN[1] - GEO_PIXEL * t["y"]))
        assert (a, b, d) == pytest.approx((GEO_PIXEL * t["width"] / e.width, 0, 0))
        assert ee == pytest.approx(-GEO_PIXEL * t["height"] / e.height)
        # the bottom-right corner of the tile lands on the source's geo coordinates too
        assert a * e.width + c == pytest.approx(GEO_ORIGIN[0] + GEO_PIXEL * (t["x"] + t["width"]))
    assert (coverage == 1).all()

    # 16-bit multi-band GeoTIFF: first 3 bands, percentile-scaled to 8-bit, scaling recorded
    mb = by_id["sat/multiband16.tif"]
    assert (mb.channels, mb.bit_depth, mb.tile) == (3, 8, None)
    scaling = mb.metadata["radiometric_scaling"]
    assert scaling["method"] == "percentile" and scaling["percentiles"] == [2.0, 98.0] and len(scaling["bands"]) == 3
    assert all(1000 <= band["low"] < band["high"] <= 5000 for band in scaling["bands"])
    assert mb.geo["transform"][0] == pytest.approx(GEO_PIXEL * 40 / 32)

    # per-file errors, warnings, summary
    errors = {err["source"]: err["error"] for err in manifest.errors}
    assert set(errors) == set(BAD)
    for source, words in BAD.items():
        assert words in errors[source], errors[source]
    assert (summary.processed, summary.skipped_unchanged, summary.failed) == (len(GOOD_SOURCES), 0, len(BAD))
    text = summary.format()
    for source in BAD:
        assert f"error: {source}: " in text
    assert "warning: metadata key 'missing/nothing.jpg' matches no file" in text
    assert "metadata.json" not in errors and ".DS_Store" not in errors
    assert f"manifest: {out / 'manifest.json'}" in text


def test_second_run_is_incremental_and_touching_a_source_redoes_only_it(raw, tmp_path):
    out = tmp_path / "out"
    preprocess_folder(config(raw, out))
    before = output_mtimes(out)
    first = read_manifest(out)

    again = preprocess_folder(config(raw, out))
    assert (again.processed, again.skipped_unchanged, again.failed, again.written) == (
        0,
        len(GOOD_SOURCES),
        len(BAD),
        0,
    )
    assert output_mtimes(out) == before
    assert [e.id for e in read_manifest(out).entries] == [e.id for e in first.entries]

    cv2.imwrite(str(raw / "ir/thermal8.png"), np.full((40, 40), 99, np.uint8))  # new content, new mtime
    (raw / "photos/rgba.png").unlink()
    third = preprocess_folder(config(raw, out))
    assert (third.processed, third.skipped_unchanged, third.written) == (1, len(GOOD_SOURCES) - 2, 1)
    assert third.removed_sources == ["photos/rgba.png"] and "removed: photos/rgba.png" in third.format()
    after = output_mtimes(out)
    changed = {p for p in before if after.get(p) != before[p]}
    assert changed == {"images/ir/thermal8.png"}  # the removed source's file is left on disk untouched
    manifest = read_manifest(out)
    assert "photos/rgba.png" not in {e.source for e in manifest.entries}
    assert cv2.imread(str(out / "images/ir/thermal8.png"), cv2.IMREAD_UNCHANGED).max() == 99


def test_foreign_file_is_not_overwritten_without_overwrite(raw, tmp_path):
    out = tmp_path / "out"
    (out / "images/photos").mkdir(parents=True)
    (out / "images/photos/rgb.png").write_bytes(b"someone else's file")
    summary = preprocess_folder(config(raw, out))
    errors = {e["source"]: e["error"] for e in summary.errors}
    assert "images/photos/rgb.png" in errors["photos/rgb.jpg"] and "--overwrite" in errors["photos/rgb.jpg"]
    assert (out / "images/photos/rgb.png").read_bytes() == b"someone else's file"
    assert "photos/rgb.jpg" not in {e.source for e in read_manifest(out).entries}

    replaced = preprocess_folder(config(raw, out, overwrite=True))
    assert replaced.processed == 1 and replaced.skipped_unchanged == len(GOOD_SOURCES) - 1
    assert cv2.imread(str(out / "images/photos/rgb.png")).shape == (23, 32, 3)


def test_interrupted_run_resumes_and_identical_leftovers_are_adopted(raw, tmp_path):
    out = tmp_path / "out"

    def interrupt(done, total, source):
        if source == "ir/thermal8.png":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        preprocess_folder(config(raw, out), progress=interrupt)
    saved = {e.source for e in read_manifest(out).entries}
    assert saved == {"clips/walk.mp4", "ir/thermal16.png", "ir/thermal8.png"}  # progress kept
    resumed = preprocess_folder(config(raw, out))
    assert (resumed.skipped_unchanged, resumed.processed) == (3, len(GOOD_SOURCES) - 3)

    before = output_mtimes(out)
    (out / "manifest.json").unlink()  # files left without a manifest, as a hard kill can leave them
    adopted = preprocess_folder(config(raw, out))
    assert adopted.processed == len(GOOD_SOURCES) and adopted.written == 0 and adopted.failed == len(BAD)
    assert output_mtimes(out) == before


def test_output_folder_inside_the_input_is_skipped(raw):
    out = raw / "processed"
    preprocess_folder(config(raw, out))
    again = preprocess_folder(config(raw, out))
    assert again.skipped_unchanged == len(GOOD_SOURCES) and again.failed == len(BAD)
    assert not any(e.source.startswith("processed/") for e in read_manifest(out).entries)


def test_changed_options_are_refused_without_overwrite(raw, tmp_path):
    out = tmp_path / "out"
    preprocess_folder(config(raw, out))
    with pytest.raises(ValueError, match="--size 32 .*now --size 48.*--overwrite"):
        preprocess_folder(config(raw, out, size=48))
    redone = preprocess_folder(config(raw, out, size=48, overwrite=True))
    assert redone.processed == len(GOOD_SOURCES) and redone.skipped_unchanged == 0
    assert read_manifest(out).options["size"] == 48


def test_workers_give_identical_results(raw, tmp_path):
    preprocess_folder(config(raw, tmp_path / "one"))
    preprocess_folder(config(raw, tmp_path / "two", workers=2))
    one, two = read_manifest(tmp_path / "one"), read_manifest(tmp_path / "two")
    assert one.entries == two.entries and one.errors == two.errors
    assert {p: (tmp_path / "one" / p).read_bytes() for p in output_mtimes(tmp_path / "one")} == {
        p: (tmp_path / "two" / p).read_bytes() for p in output_mtimes(tmp_path / "two")
    }


def test_grayscale_16bit_video_becomes_16bit_ir_frames(tmp_path):
    if "ffv1" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no ffv1 encoder")
    raw = tmp_path / "raw"
    raw.mkdir()
    with av.open(str(raw / "thermal.mkv"), "w") as container:
        stream = container.add_stream("ffv1", rate=5)
        stream.width, stream.height, stream.pix_fmt = 40, 30, "gray16le"
        for i in range(5):
            img = np.full((30, 40), 10000 + 5000 * i, np.uint16)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="gray16le")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    preprocess_folder(PreprocessConfig(raw, tmp_path / "out", size=SIZE, max_video_frames=3))
    seq = read_manifest(tmp_path / "out").sequences()["thermal.mkv"]
    assert [e.frame_index for e in seq] == [0, 2, 4]
    assert all((e.modality, e.channels, e.bit_depth) == ("ir", 1, 16) for e in seq)
    values = [int(cv2.imread(str(tmp_path / "out" / e.path), cv2.IMREAD_UNCHANGED)[5, 5]) for e in seq]
    assert values == [10000, 20000, 30000]


def test_config_validation_names_the_option(tmp_path):
    with pytest.raises(ValueError, match="--size must be an integer from 16"):
        PreprocessConfig(tmp_path, tmp_path / "out", size=0)
    with pytest.raises(ValueError, match="--workers"):
        PreprocessConfig(tmp_path, tmp_path / "out", workers=0)
    with pytest.raises(ValueError, match="--input-dir .* is not an existing folder"):
        PreprocessConfig(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(ValueError, match="--output-dir must differ"):
        PreprocessConfig(tmp_path, tmp_path)
    bad = tmp_path / "meta.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="--metadata-json .*expected an object"):
        preprocess_folder(PreprocessConfig(tmp_path, tmp_path / "out", metadata_json=bad))
    assert not (tmp_path / "out").exists()


def test_sampling_and_tiling_helpers():
    assert sample_indices(20, 8) == [0, 3, 5, 8, 11, 14, 16, 19]
    assert sample_indices(5, 32) == [0, 1, 2, 3, 4] and sample_indices(7, 1) == [0]
    assert tile_grid(100, 50, 2048) == [(0, 0, 100, 50)]
    assert tile_grid(150, 100, 64) == [
        (0, 0, 64, 64),
        (64, 0, 64, 64),
        (128, 0, 22, 64),
        (0, 64, 64, 36),
        (64, 64, 64, 36),
        (128, 64, 22, 36),
    ]


def test_cli_end_to_end(raw, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "preprocess",
        "--input-dir",
        str(raw),
        "--output-dir",
        str(out),
        "--size",
        str(SIZE),
        "--max-video-frames",
        str(MAX_FRAMES),
        "--tile-size",
        str(TILE),
        "--metadata-json",
        str(raw / "metadata.json"),
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"files: processed {len(GOOD_SOURCES)}, skipped_unchanged 0, failed {len(BAD)}" in text
    assert "error: misc/notes.xyz: unsupported file type" in text
    assert len(read_manifest(out).entries) > len(GOOD_SOURCES)

    assert main(args) == 0
    assert f"skipped_unchanged {len(GOOD_SOURCES)}" in capsys.readouterr().out
    assert main([*args[:5], "--size", "48"]) == 2  # option change without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args[:4], str(tmp_path / "other"), "--size", "0"]) == 2
    assert "--size must be an integer" in capsys.readouterr().err
    shutil.rmtree(out)
