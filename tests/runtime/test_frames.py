"""Tests for edgescene.runtime.frames on small real files written here with OpenCV and PyAV."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from edgescene.runtime import frames as fr
from edgescene.runtime.frames import Frame, InputError, natural_key, open_frames

# ----------------------------------------------------------------------------- helpers


def texture(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A random RGB texture, smoothed so that it survives lossy video coding."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def write_video(path: Path, images: list[np.ndarray], fps: int = 10) -> Path:
    h, w = images[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "12"}
        for img in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def ramp_video(path: Path, n: int, fps: int = 10, h: int = 48, w: int = 64) -> Path:
    """Frame i is a flat grey of level 8 * i (mod 256) so the decoded index can be read back."""
    return write_video(path, [np.full((h, w, 3), (8 * i) % 256, np.uint8) for i in range(n)], fps)


@pytest.fixture(scope="module")
def video30(tmp_path_factory) -> Path:
    return ramp_video(tmp_path_factory.mktemp("video") / "clip.mp4", 30, fps=10)


# ----------------------------------------------------------------------------- images


def test_single_image(tmp_path):
    img = texture(0)
    src = open_frames(write_png(tmp_path / "a.png", img))
    assert src.kind == "image(s)"
    assert "a.png" in src.describe()
    (f,) = list(src)
    assert isinstance(f, Frame)
    assert f.index == 0 and f.timestamp_s is None and f.source == str(tmp_path / "a.png")
    assert f.rgb.dtype == np.uint8 and f.rgb.shape == (48, 64, 3)
    np.testing.assert_array_equal(f.rgb, img)  # PNG is lossless and channels are RGB, not BGR


def test_jpeg_colour_order(tmp_path):
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 220  # red
    path = tmp_path / "red.jpg"
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (f,) = open_frames(str(path))
    r, g, b = f.rgb.reshape(-1, 3).mean(0)
    assert r > 200 and g < 20 and b < 20


def test_folder_natural_order_hidden_and_other_files(tmp_path):
    for name, level in [("img10.png", 10), ("img2.png", 2), ("IMG3.png", 3), ("img1.png", 1), (".hidden.png", 99)]:
        write_png(tmp_path / name, np.full((8, 8, 3), level, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    write_png(tmp_path / "sub" / "img0.png", np.zeros((8, 8, 3), np.uint8))  # not recursive
    src = open_frames(tmp_path)
    assert src.frame_count == 4 and "4 images" in src.describe()
    got = list(src)
    assert [Path(f.source).name for f in got] == ["img1.png", "img2.png", "IMG3.png", "img10.png"]
    assert [int(f.rgb[0, 0, 0]) for f in got] == [1, 2, 3, 10]
    assert [f.index for f in got] == [0, 1, 2, 3]
    assert sorted(["a10", "a2", "a1b", "a1"], key=natural_key) == ["a1", "a1b", "a2", "a10"]


def test_folder_skips_corrupt_image_and_keeps_the_rest(tmp_path, caplog):
    write_png(tmp_path / "f1.png", np.full((8, 8, 3), 1, np.uint8))
    (tmp_path / "f2.jpg").write_bytes(b"this is not a jpeg")
    write_png(tmp_path / "f3.png", np.full((8, 8, 3), 3, np.uint8))
    with caplog.at_level(logging.WARNING, logger=fr.__name__):
        got = list(open_frames(tmp_path))
    assert [Path(f.source).name for f in got] == ["f1.png", "f3.png"]
    assert [f.index for f in got] == [0, 2]  # position in the list
    assert any("f2.jpg" in r.getMessage() for r in caplog.records)


def test_all_corrupt_is_an_input_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"garbage")
    (tmp_path / "b.jpg").write_bytes(os.urandom(100))
    with pytest.raises(InputError, match="no image could be read"):
        list(open_frames(tmp_path))
    with pytest.raises(InputError, match="a.png"):
        list(open_frames(tmp_path / "a.png"))  # a single image is never silently skipped


def test_list_input(tmp_path):
    paths = [write_png(tmp_path / f"p{i}.png", np.full((8, 8, 3), 10 * i, np.uint8)) for i in range(3)]
    src = open_frames([str(paths[2]), paths[0]])  # order of the list is kept, str or Path
    got = list(src)
    assert [f.index for f in got] == [0, 1]
    assert [int(f.rgb[0, 0, 0]) for f in got] == [20, 0]


def test_rgba_is_composited_on_white(tmp_path):
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[0, 0] = (255, 0, 0, 255)  # opaque blue (BGRA)
    bgra[0, 1] = (0, 0, 0, 0)  # transparent black -> white
    bgra[0, 2] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    path = tmp_path / "alpha.png"
    assert cv2.imwrite(str(path), bgra)
    (f,) = open_frames(path)
    assert f.rgb.shape == (4, 4, 3) and f.rgb.dtype == np.uint8
    assert tuple(f.rgb[0, 0]) == (0, 0, 255)
    assert tuple(f.rgb[0, 1]) == (255, 255, 255)
    assert np.all(np.abs(f.rgb[0, 2].astype(int) - 127) <= 1)


def test_16bit_grayscale(tmp_path):
    grey = np.array([[0, 257 * 100, 65535]], np.uint16).repeat(3, axis=0)
    path = tmp_path / "depthish.png"
    assert cv2.imwrite(str(path), grey)
    (f,) = open_frames(path)
    assert f.rgb.dtype == np.uint8 and f.rgb.shape == (3, 3, 3)
    np.testing.assert_array_equal(f.rgb[0], [[0, 0, 0], [100, 100, 100], [255, 255, 255]])


def test_8bit_grayscale(tmp_path):
    path = tmp_path / "g.png"
    assert cv2.imwrite(str(path), np.full((5, 6), 77, np.uint8))
    (f,) = open_frames(path)
    assert f.rgb.shape == (5, 6, 3) and np.all(f.rgb == 77)


def test_motion_threshold_on_images(tmp_path):
    a, b = texture(1), texture(2)
    seq = [a, a, a, b, b, a]
    paths = [write_png(tmp_path / f"s{i}.png", img) for i, img in enumerate(seq)]
    got = list(open_frames(paths, motion_threshold=0))  # 0: exact duplicates only
    assert [f.index for f in got] == [0, 3, 5]
    assert len(list(open_frames(paths, motion_threshold=255))) == 1
    assert [f.index for f in open_frames(paths, max_frames=2)] == [0, 1]


# ----------------------------------------------------------------------------- video


def test_video_decode_count_indices_timestamps(video30):
    src = open_frames(video30)
    assert src.kind == "video"
    assert src.fps == pytest.approx(10)
    assert src.frame_count == 30
    assert src.duration_s == pytest.approx(3.0, abs=0.15)
    assert "clip.mp4" in src.describe() and "64x48" in src.describe()
    got = list(src)
    assert [f.index for f in got] == list(range(30))
    assert [f.timestamp_s for f in got] == pytest.approx([i / 10 for i in range(30)], abs=1e-3)
    assert got[7].source == f"{video30}#f000007"
    assert all(f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.uint8 for f in got)
    levels = [float(f.rgb.mean()) for f in got]
    assert levels == pytest.approx([8 * i for i in range(30)], abs=3)  # frames come in order
    assert len(list(src)) == 30  # iterable again


def test_every_s_sampling(video30):
    got = list(open_frames(video30, every_s=0.5))
    assert [f.index for f in got] == [0, 5, 10, 15, 20, 25]
    assert [f.timestamp_s for f in got] == pytest.approx([0, 0.5, 1.0, 1.5, 2.0, 2.5], abs=1e-3)
    assert [f.index for f in open_frames(video30, every_s=0.3)] == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]
    assert [f.index for f in open_frames(video30, every_s=0.01)] == list(range(30))  # finer than the frame rate


def test_max_frames(video30):
    assert [f.index for f in open_frames(video30, max_frames=4)] == [0, 1, 2, 3]
    assert [f.index for f in open_frames(video30, every_s=1.0, max_frames=2)] == [0, 10]
    assert [f.index for f in open_frames(video30, max_frames=1000)] == list(range(30))


def test_motion_threshold_on_video(tmp_path):
    a, b, c = texture(3), texture(4), texture(5)
    seq = [a, a, a, b, b, c, c, c, a, a]
    path = write_video(tmp_path / "rep.mp4", seq, fps=5)
    got = list(open_frames(path, motion_threshold=4))
    assert [f.index for f in got] == [0, 3, 5, 8]
    assert len(list(open_frames(path))) == 10


def test_video_display_rotation_is_applied_only_with_orientation_exif(tmp_path):
    img = np.zeros((48, 64, 3), np.uint8)
    img[:16, :16] = 255  # top-left corner marked
    path = tmp_path / "phone.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.set_display_rotation(90)  # display: turn 90 degrees counter-clockwise
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (stored,) = list(open_frames(path))  # default "none": pixels as stored, as upstream
    assert stored.rgb.shape == (48, 64, 3) and stored.rotation_deg == 0 and stored.orientation == "none"
    src = open_frames(path, orientation="exif")
    (f,) = list(src)
    assert f.rgb.shape == (64, 48, 3) and "48x64" in src.describe()
    assert f.rotation_deg == 90 and f.orientation == "exif"
    assert f.rgb[-8:, :8].mean() > 200 and f.rgb[:8, :8].mean() < 50  # top-left went to bottom-left
    with pytest.raises(ValueError, match="orientation must be 'none'"):
        open_frames(path, orientation="auto")


def test_video_is_read_lazily(tmp_path, monkeypatch):
    path = ramp_video(tmp_path / "long.mp4", 200, fps=25)
    converted = []
    real = fr._frame_rgb
    monkeypatch.setattr(fr, "_frame_rgb", lambda f, rotate=False: converted.append(1) or real(f, rotate))
    src = open_frames(path)
    assert len(converted) == 1  # opening probes the first frame only
    assert not any(isinstance(v, (list, tuple, np.ndarray)) for v in vars(src).values())
    converted.clear()
    first_two = list(itertools.islice(src, 2))
    assert [f.index for f in first_two] == [0, 1]
    assert len(converted) == 2
    it = iter(src)
    next(it)
    it.close()  # stopping early closes the decoder (no error, nothing left open)


# ----------------------------------------------------------------------------- errors


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_frames(tmp_path / "nope.mp4")
    with pytest.raises(InputError, match="does not exist"):
        open_frames([tmp_path / "nope.png"])


def test_unsupported_type(tmp_path):
    (tmp_path / "model.ply").write_text("ply")
    with pytest.raises(InputError, match=r"unsupported file type '\.ply'.*\.png"):
        open_frames(tmp_path / "model.ply")


def test_corrupt_video(tmp_path):
    path = tmp_path / "random.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="cannot decode video .*random.mp4") as raised:
        open_frames(path)
    assert "Errno" not in str(raised.value) and "()" not in str(raised.value)  # no C error numbers or calls


def test_zero_frame_video(tmp_path):
    path = tmp_path / "empty.mp4"
    with av.open(str(path), "w") as container:  # a valid MP4 with no video frames
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    assert path.stat().st_size > 0
    with pytest.raises(InputError, match="no frames"):
        open_frames(path)


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no images in folder"):
        open_frames(tmp_path)
    (tmp_path / "readme.txt").write_text("x")
    ramp_video(tmp_path / "clip.mp4", 2)
    with pytest.raises(InputError, match="pass the video itself"):
        open_frames(tmp_path)


def test_bad_options(tmp_path, video30):
    img = write_png(tmp_path / "a.png", texture(0))
    with pytest.raises(InputError, match="videos only"):
        open_frames(img, every_s=0.5)
    with pytest.raises(InputError, match="every_s"):
        open_frames(video30, every_s=0)
    with pytest.raises(InputError, match="max_frames"):
        open_frames(video30, max_frames=0)
    with pytest.raises(InputError, match="motion_threshold"):
        open_frames(video30, motion_threshold=-1)
    with pytest.raises(InputError, match="empty"):
        open_frames([])
    with pytest.raises(InputError, match="video inside a list"):
        open_frames([img, video30])
    assert issubclass(InputError, ValueError)


# -- limits on every frame, not on the header (a video decompression bomb) -------------------------


@pytest.fixture(scope="module")
def frame_jpegs():
    from pixel_bomb import big_jpeg

    small = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()
    return small, big_jpeg(12000, 10000)  # 120 megapixels, over the default limit of 100


def test_a_frame_over_the_pixel_limit_after_the_header_is_refused_while_decoding(tmp_path, frame_jpegs):
    from pixel_bomb import mjpeg_mkv

    small, big = frame_jpegs
    path = mjpeg_mkv(tmp_path / "bomb.mkv", [small, small, big, small])
    source = open_frames(path)  # the header and the first frame are 64x48
    assert (source.width, source.height) == (64, 48)
    seen = []
    with pytest.raises(InputError, match=r"frame 2 of video bomb\.mkv.*above the limit of 100\.0 megapixels"):
        for frame in source:
            seen.append(frame.index)
    assert seen == [0, 1]  # the frames before it came through; the bomb never did


def test_probing_more_frames_refuses_an_early_bomb_when_the_video_is_opened(tmp_path, frame_jpegs):
    from pixel_bomb import mjpeg_mkv

    small, big = frame_jpegs
    path = mjpeg_mkv(tmp_path / "bomb.mkv", [small, big, small])
    assert open_frames(path).height == 48  # one frame probed: opens
    with pytest.raises(InputError, match="megapixels"):
        open_frames(path, probe_frames=3)
    with pytest.raises(InputError, match="probe_frames must be a positive integer"):
        open_frames(path, probe_frames=0)


def test_the_pixel_limit_is_checked_on_each_decoded_frame(tmp_path, frame_jpegs, monkeypatch):
    """Also where the decoder does not know the limit (FFmpeg's max_pixels left at its default)."""
    from pixel_bomb import mjpeg_mkv

    small, _ = frame_jpegs
    tiny = cv2.imencode(".jpg", np.full((24, 32, 3), 90, np.uint8))[1].tobytes()
    path = mjpeg_mkv(tmp_path / "grows.mkv", [tiny, small, tiny])  # the header says 32x24
    monkeypatch.setattr(fr, "max_pixels", lambda: 2**31 - 1)  # the decoder's option: no limit
    monkeypatch.setenv("EDGESCENE_MAX_PIXELS", str(32 * 24))  # check_pixels: 64x48 is over
    with pytest.raises(InputError, match=r"frame 1 of video grows\.mkv is 64x48 \(0\.0 megapixels\), above"):
        open_frames(path, probe_frames=2)
    with pytest.raises(InputError, match=r"frame 1 of video grows\.mkv is 64x48"):
        list(open_frames(path))


def test_a_video_without_a_duration_in_its_header_is_stopped_by_max_frames(tmp_path, frame_jpegs):
    from pixel_bomb import mjpeg_mkv

    small, _ = frame_jpegs
    path = mjpeg_mkv(tmp_path / "live.mkv", [small] * 40, duration_in_header=False)
    source = open_frames(path, max_frames=12)
    assert source.duration_s is None and source.frame_count is None
    assert source.expected_count() == 12
    assert [f.index for f in source] == list(range(12))
