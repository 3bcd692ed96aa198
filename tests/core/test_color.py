"""YUV 4:2:0 -> RGB that gives the same pixels on every CPU (core.color), and the runtime using it."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from edgescene.core.color import yuv420_to_rgb, yuv420_to_rgb_exact
from edgescene.runtime.frames import frame_to_rgb

SAMPLE = str(Path(__file__).resolve().parents[2] / "edgescene" / "assets" / "sample" / "sample.mp4")


def reference(y, u, v, full_range, kr, kb):
    """The real-valued conversion, chroma repeated over each 2x2 block, rounded and clipped."""
    h, w = y.shape
    up = lambda c: np.repeat(np.repeat(c.astype(np.float64), 2, 0), 2, 1)[:h, :w] - 128.0
    luma = y.astype(np.float64) if full_range else (y - 16.0) * 255.0 / 219.0
    scale = 1.0 if full_range else 255.0 / 224.0
    cb, cr = up(u) * scale, up(v) * scale
    kg = 1.0 - kr - kb
    r = luma + 2 * (1 - kr) * cr
    g = luma - 2 * (1 - kb) * kb / kg * cb - 2 * (1 - kr) * kr / kg * cr
    b = luma + 2 * (1 - kb) * cb
    return np.clip(np.rint(np.stack([r, g, b], -1)), 0, 255)


def planes(h, w, seed=0):
    rng = np.random.default_rng(seed)
    ch, cw = (h + 1) // 2, (w + 1) // 2
    return (
        rng.integers(0, 256, (h, w), dtype=np.uint8),
        rng.integers(0, 256, (ch, cw), dtype=np.uint8),
        rng.integers(0, 256, (ch, cw), dtype=np.uint8),
    )


@pytest.mark.parametrize(
    ("full_range", "matrix", "kr", "kb"),
    [(False, "bt601", 0.299, 0.114), (True, "bt601", 0.299, 0.114), (False, "bt709", 0.2126, 0.0722)],
)
@pytest.mark.parametrize(("h", "w"), [(48, 64), (35, 51)])
def test_the_integer_conversion_matches_the_formula_within_one_level(full_range, matrix, kr, kb, h, w):
    y, u, v = planes(h, w)
    rgb = yuv420_to_rgb_exact(y, u, v, full_range=full_range, matrix=matrix)
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
    diff = np.abs(rgb.astype(np.float64) - reference(y, u, v, full_range, kr, kb))
    assert diff.max() <= 1 and diff.mean() < 0.01  # off by one only where the formula lands on .5


def test_limited_range_even_frames_take_opencvs_integer_path_within_one_level():
    """Within the legal limited range (OpenCV clamps luma below 16 to black before scaling)."""
    y, u, v = planes(64, 96, seed=1)
    y, u, v = np.clip(y, 16, 235), np.clip(u, 16, 240), np.clip(v, 16, 240)
    fast = yuv420_to_rgb(y, u, v)
    diff = np.abs(fast.astype(np.float64) - reference(y, u, v, False, 0.299, 0.114))
    assert diff.max() <= 1 and diff.mean() < 0.2
    assert np.array_equal(yuv420_to_rgb(*planes(35, 51)), yuv420_to_rgb_exact(*planes(35, 51)))  # odd: numpy


def test_bad_planes_and_matrices_are_refused():
    y, u, v = planes(48, 64)
    with pytest.raises(ValueError, match=r"chroma planes must be \(24, 32\)"):
        yuv420_to_rgb(y, u[:, :-1], v)
    with pytest.raises(ValueError, match="unknown YUV matrix 'bt2020'"):
        yuv420_to_rgb(y, u, v, matrix="bt2020")


def test_the_runtime_decodes_video_frames_through_it():
    """The sample video (yuv420p, limited range): the runtime's pixels are core.color's, not FFmpeg's
    converter's (which on x86-64 is 1.4 levels darker on average and differs from arm64's)."""
    with av.open(SAMPLE) as container:
        frame = next(container.decode(video=0))
        assert frame.format.name == "yuv420p"
        y = frame.to_ndarray()  # the planes, stacked: (H * 3 / 2, W)
        h, w = frame.height, frame.width
        u = y[h : h + h // 4].reshape(h // 2, w // 2)
        v = y[h + h // 4 :].reshape(h // 2, w // 2)
        rgb = frame_to_rgb(frame)
        assert np.array_equal(rgb, yuv420_to_rgb(y[:h], u, v))
        swscale = frame.to_ndarray(format="rgb24").astype(np.int16)
    diff = rgb.astype(np.int16) - swscale
    assert np.abs(diff).max() <= 3  # the same picture, to a few levels


def test_an_odd_sized_full_range_video_takes_the_numpy_path(tmp_path):
    """MJPEG in AVI decodes to yuvj420p (full range) at odd sizes: padded planes, chroma of ceil(H/2)."""
    path = tmp_path / "odd.avi"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=5)
        stream.width, stream.height, stream.pix_fmt = 65, 49, "yuvj420p"
        ramp = np.linspace(0, 255, 65)[None, :, None]
        image = np.clip(ramp + rng.normal(0, 5, (49, 65, 3)), 0, 255).astype(np.uint8)
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")), *stream.encode()]:
            container.mux(packet)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        assert (frame.format.name, frame.width, frame.height) == ("yuvj420p", 65, 49)
        rgb = frame_to_rgb(frame)
        swscale = frame.to_ndarray(format="rgb24").astype(np.int16)
    assert rgb.shape == (49, 65, 3)
    diff = np.abs(rgb.astype(np.int16) - swscale)
    assert diff.mean() < 0.5 and diff.max() <= 6  # measured 0.18 and 4 (chroma interpolation at edges)
    assert np.abs(rgb.astype(np.int16) - image).mean() < 6  # and the picture that was encoded
