"""Decompression bombs are refused from the header, before any decoding, wherever frames are read."""

from __future__ import annotations

import resource

import numpy as np
import pytest
from PIL import Image
from pixel_bomb import bomb_png

from edgescene.assets import sample_dir
from edgescene.core.preprocess import DEFAULT_MAX_PIXELS, decode_image, load_rgb, max_pixels
from edgescene.runtime.frames import InputError, open_frames


@pytest.mark.parametrize("side", [15_000, 30_000])
def test_a_pixel_bomb_is_refused_before_decoding(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(side, side))
    assert path.stat().st_size < 300_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    megapixels = f"{side * side / 1e6:.1f} megapixels"
    with pytest.raises(ValueError, match=rf"bomb\.png .*{megapixels}\)?, above the limit of 100\.0 megapixels"):
        decode_image(path)
    with pytest.raises(ValueError, match=rf"{megapixels}\)?, above the limit"):
        load_rgb(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50  # a decoded 15000^2 RGB image alone is 675 MB


def test_the_limit_is_configurable_and_validated(tmp_path, monkeypatch):
    assert max_pixels() == DEFAULT_MAX_PIXELS
    path = tmp_path / "small.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(path)
    assert decode_image(path).shape == (40, 50, 3)
    monkeypatch.setenv("EDGESCENE_MAX_PIXELS", "1999")
    with pytest.raises(ValueError, match=r"50x40 \(0\.0 megapixels\), above the limit"):
        decode_image(path)
    monkeypatch.setenv("EDGESCENE_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="EDGESCENE_MAX_PIXELS must be a positive integer"):
        max_pixels()


def test_the_check_leaves_pillows_own_guard_as_it_was(tmp_path, monkeypatch):
    """A low limit for edgescene's decoding must not leak into other Pillow users of the process
    (the COLMAP export's JPEGs once failed after a test had set 1999)."""
    path = tmp_path / "small.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(path)
    guard_before = Image.MAX_IMAGE_PIXELS
    monkeypatch.setenv("EDGESCENE_MAX_PIXELS", "1999")
    with pytest.raises(ValueError, match="above the limit"):
        decode_image(path)
    monkeypatch.setenv("EDGESCENE_MAX_PIXELS", "4000")
    assert decode_image(path).shape == (40, 50, 3)
    assert guard_before == Image.MAX_IMAGE_PIXELS


def test_video_frames_are_checked_from_the_header(monkeypatch):
    monkeypatch.setenv("EDGESCENE_MAX_PIXELS", str(256 * 192 - 1))  # the sample video is 256x192
    with pytest.raises(InputError, match=r"video sample\.mp4 frames is 256x192 .*above the limit"):
        open_frames(sample_dir() / "sample.mp4")
    monkeypatch.setenv("EDGESCENE_MAX_PIXELS", str(256 * 192))
    assert open_frames(sample_dir() / "sample.mp4").width == 256
