"""One decoder: every entry point that turns an image file or bytes into pixels gives the same pixels
(and the same model input) under one policy (:mod:`edgescene.core.images`).

The files are made here with Pillow (OpenCV for the 16-bit RGB PNG, which Pillow cannot write):
an EXIF-rotated JPEG (Orientation 6, odd non-square size), an RGBA PNG with partly transparent
pixels, 16-bit grey and RGB PNGs, a palette GIF and a palette PNG.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image
from pixel_bomb import bomb_png

from edgescene.apps.service import _decode_frame
from edgescene.core.images import (
    UndecodableImage,
    decode_image,
    decode_image_float,
    probe_image,
)
from edgescene.core.preprocess import choose_model_size, load_and_preprocess_images, load_rgb, resize_pixels
from edgescene.runtime.frames import InputError, open_frames
from edgescene.train.data import readers

W, H = 37, 22  # odd, non-square


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.stack(np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h)), -1)
    return np.concatenate([base, rng.integers(0, 256, (h, w, 1))], -1).astype(np.uint8)


def _exif_jpeg(folder):
    exif = Image.Exif()
    exif[0x0112] = 6  # display: rotate 90 degrees clockwise
    path = folder / "phone.jpg"
    Image.fromarray(_texture(H, W, 1)).save(path, exif=exif.tobytes(), quality=95)
    return path


def _rgba_png(folder):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3] = _texture(H, W, 2)
    rgba[..., 3] = 255
    rgba[:5, :, 3] = 0  # fully transparent rows
    rgba[5:9, :, 3] = 128  # half transparent
    path = folder / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    return path, rgba


GREY16 = (np.arange(H * W, dtype=np.int64).reshape(H, W) * 65535 // (H * W - 1)).astype(np.uint16)


def _grey16_png(folder):
    grey = GREY16.copy()
    grey[0, :4] = (0, 128, 300, 65535)
    path = folder / "ir16.png"
    Image.fromarray(grey).save(path)
    return path, grey


def _rgb16_png(folder):
    rgb = np.stack([GREY16, GREY16[::-1], np.full_like(GREY16, 32896)], -1)
    path = folder / "rgb16.png"
    assert cv2.imwrite(str(path), rgb[..., ::-1])  # OpenCV writes BGR
    return path, rgb


def _palette(folder, suffix):
    path = folder / f"palette{suffix}"
    Image.fromarray(_texture(H, W, 3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    return {
        "exif_jpeg": _exif_jpeg(folder),
        "rgba_png": _rgba_png(folder)[0],
        "grey16_png": _grey16_png(folder)[0],
        "rgb16_png": _rgb16_png(folder)[0],
        "palette_gif": _palette(folder, ".gif"),
        "palette_png": _palette(folder, ".png"),
    }


ALL = ["exif_jpeg", "rgba_png", "grey16_png", "rgb16_png", "palette_gif", "palette_png"]
RUNTIME = [n for n in ALL if not n.endswith("gif")]  # .gif is not one of the runtime's image types


# ----------------------------------------------------------------------------- the policy


def test_exif_orientation_only_with_exif(files):
    path = files["exif_jpeg"]
    stored = decode_image(path)
    assert stored.shape == (H, W, 3) and stored.dtype == np.uint8
    rotated = decode_image(path, "exif")
    assert rotated.shape == (W, H, 3)
    np.testing.assert_array_equal(rotated, np.rot90(stored, k=-1))  # tag 6: 90 degrees clockwise
    (frame,) = open_frames(path, orientation="exif")
    np.testing.assert_array_equal(frame.rgb, rotated)
    (frame,) = open_frames(path)  # reconstruct's default, and /stream (which has no option): as stored
    np.testing.assert_array_equal(frame.rgb, stored)
    np.testing.assert_array_equal(_decode_frame(path.read_bytes(), 1), stored)
    assert probe_image(path) == probe_image(path.read_bytes())


def test_transparent_pixels_are_white(files, tmp_path):
    _, rgba = _rgba_png(tmp_path)
    rgb = decode_image(files["rgba_png"])
    assert np.all(rgb[:5] == 255)
    np.testing.assert_array_equal(rgb[9:], rgba[9:, :, :3])
    half = rgba[5:9, :, :3].astype(np.int64)
    assert np.all(np.abs(rgb[5:9].astype(np.int64) - (half * 128 + 255 * 127) / 255) <= 1)


def test_16bit_grey_is_scaled_and_rgb_keeps_the_high_byte(files, tmp_path):
    _, grey = _grey16_png(tmp_path)
    got = decode_image(files["grey16_png"])
    np.testing.assert_array_equal(got, np.repeat(np.rint(grey / 257.0).astype(np.uint8)[..., None], 3, 2))
    assert tuple(got[0, :4, 0]) == (0, 0, 1, 255)
    precise = decode_image_float(files["grey16_png"])
    assert precise.dtype == np.float32
    np.testing.assert_array_equal(np.rint(precise[..., 0] * 65535.0).astype(np.uint16), grey)
    _, rgb16 = _rgb16_png(tmp_path)
    np.testing.assert_array_equal(decode_image(files["rgb16_png"]), (rgb16 >> 8).astype(np.uint8))


def test_every_16bit_level_rounds_the_same_in_both_siblings(tmp_path):
    levels = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    path = tmp_path / "levels.png"
    Image.fromarray(levels).save(path)
    eight = decode_image(path)[..., 0]
    np.testing.assert_array_equal(eight, np.rint(levels.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8))
    np.testing.assert_array_equal(np.rint(decode_image_float(path)[..., 0] * 255.0).astype(np.uint8), eight)


def test_palette_is_expanded(files):
    for name in ("palette_gif", "palette_png"):
        with Image.open(files[name]) as im:
            assert im.mode == "P"
            expected = np.asarray(im.convert("RGB"))
        np.testing.assert_array_equal(decode_image(files[name]), expected)


# ----------------------------------------------------------------------------- every entry point


@pytest.mark.parametrize("name", ALL)
def test_every_entry_point_gives_the_same_pixels(files, name, tmp_path):
    path = files[name]
    data = path.read_bytes()
    rgb = decode_image(path)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    precise = decode_image_float(path)
    info = probe_image(path)

    # the two siblings: one policy
    np.testing.assert_array_equal(np.rint(precise * 255.0).astype(np.uint8), rgb)
    if info.bits == 8:
        np.testing.assert_array_equal(precise, rgb.astype(np.float32) / np.float32(255.0))
    # bytes and paths
    np.testing.assert_array_equal(decode_image(data), rgb)
    np.testing.assert_array_equal(decode_image(bytearray(data)), rgb)
    # the service's /stream frames (no EXIF rotation, as reconstruct)
    np.testing.assert_array_equal(_decode_frame(data, 1), rgb)
    # the training loaders (VGGT trainers: load_rgb; DINOv3: read_image)
    loaded = load_rgb(path)
    np.testing.assert_array_equal(loaded, rgb if info.bits == 8 else precise)
    torch = pytest.importorskip("torch")
    from edgescene.train.dinov3.data import read_image as dinov3_read

    tensor, single = dinov3_read(path)
    assert single == (name == "grey16_png")
    if info.bits == 8:
        assert torch.equal(tensor, torch.from_numpy(precise.transpose(2, 0, 1).copy()))
    else:  # 16-bit IR is stretched from its 1st..99th percentile of the same full-precision levels
        low, high = np.percentile(precise[..., 0], (1.0, 99.0))
        stretched = np.clip((precise - np.float32(low)) / np.float32(high - low), 0.0, 1.0)
        assert torch.equal(tensor, torch.from_numpy(stretched.transpose(2, 0, 1).copy()))
    # the dataset converter (edgescene preprocess): GIF is not one of its types
    if not name.endswith("gif"):
        decoded = readers.read_image(path)
        if decoded.pixels.ndim == 2:
            assert decoded.modality == "ir" and decoded.pixels.dtype == np.uint16
            np.testing.assert_array_equal(decoded.pixels.astype(np.float32) / np.float32(65535.0), precise[..., 0])
        else:
            np.testing.assert_array_equal(decoded.pixels, rgb)


@pytest.mark.parametrize("name", RUNTIME)
def test_the_runtime_and_the_trainers_feed_the_model_the_same_input(files, name):
    path = files[name]
    rgb = decode_image(path)
    (frame,) = open_frames(path)  # edgescene reconstruct's reading
    np.testing.assert_array_equal(frame.rgb, rgb)
    (listed,) = open_frames([path])
    np.testing.assert_array_equal(listed.rgb, rgb)
    resize, _ = choose_model_size(*rgb.shape[:2], "crop", None)
    runtime_input = resize_pixels(frame.rgb, resize)
    np.testing.assert_array_equal(runtime_input[None], load_and_preprocess_images(path))
    np.testing.assert_array_equal(runtime_input, resize_pixels(decode_image(path.read_bytes()), resize))
    np.testing.assert_array_equal(runtime_input, resize_pixels(_decode_frame(path.read_bytes(), 1), resize))
    if probe_image(path).bits == 8:  # the VGGT trainer's input from load_rgb
        np.testing.assert_array_equal(runtime_input, resize_pixels(load_rgb(path), resize))


def test_the_colmap_pose_frames_are_the_decoded_pixels(files, tmp_path):
    from edgescene.train.data.colmap_poses import _eight_bit

    for name in ("exif_jpeg", "rgba_png", "palette_png"):
        target = tmp_path / f"{name}.png"
        _eight_bit(files[name], target)
        np.testing.assert_array_equal(decode_image(target), decode_image(files[name]))
    target = tmp_path / "ir.png"
    _eight_bit(files["grey16_png"], target)
    assert probe_image(target).channels == 1 and decode_image(target).shape == (H, W, 3)


def test_the_viewer_thumbnails_are_the_decoded_pixels(files, tmp_path, monkeypatch):
    from edgescene.mapping import viewer
    from edgescene.runtime.outputs import thumbnail, write_ply

    names = ["exif_jpeg", "rgba_png", "grey16_png"]
    write_ply(tmp_path / "points.ply", np.zeros((1, 3), np.float32), np.zeros((1, 3), np.uint8))
    frames = [{"extrinsics": np.eye(4)[:3].tolist(), "intrinsics": np.eye(3).tolist()} for _ in names]
    (tmp_path / "cameras.json").write_text(json.dumps({"frames": frames, "image_size": [H, W]}))
    (tmp_path / "colmap" / "images").mkdir(parents=True)
    for k, name in enumerate(names):
        (tmp_path / "colmap" / "images" / f"{k:05d}.jpg").write_bytes(files[name].read_bytes())

    seen = {}

    class Recorder:
        def __init__(self, **kw):
            pass

        def update(self, *args):
            seen["thumbs"] = args[-1]

    monkeypatch.setattr(viewer, "SceneViewer", Recorder)
    viewer.view_folder(tmp_path)
    for thumb, name in zip(seen["thumbs"], names, strict=True):
        np.testing.assert_array_equal(thumb, thumbnail(decode_image(files[name])))


# ----------------------------------------------------------------------------- what is refused


def test_empty_data_is_refused(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UndecodableImage, match=r"cannot decode image empty\.png: it is empty \(0 bytes\); re-save"):
        decode_image(tmp_path / "empty.png")
    with pytest.raises(UndecodableImage, match="cannot decode frame 3: it is empty"):
        decode_image(b"", what="frame 3")
    with pytest.raises(InputError, match=r"empty\.png: it is empty"):
        list(open_frames(tmp_path / "empty.png"))
    with pytest.raises(readers.ReadError, match="empty file"):
        readers.read_image(tmp_path / "empty.png")


def test_garbage_and_truncated_data_are_refused(files, tmp_path):
    with pytest.raises(UndecodableImage, match=r"cannot decode image bytes: not an image format this decoder reads"):
        decode_image(b"this is not an image")
    with pytest.raises(ValueError, match=r"^frame 7: not a decodable image; send each frame as JPEG or PNG bytes$"):
        _decode_frame(b"this is not an image", 7)
    for name in ("exif_jpeg", "rgba_png"):
        data = files[name].read_bytes()
        cut = tmp_path / f"cut_{files[name].name}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(UndecodableImage, match=rf"cut_{files[name].name}: the data is truncated or corrupt"):
            decode_image(cut)
        with pytest.raises(UndecodableImage, match="truncated or corrupt"):
            decode_image_float(cut)
        with pytest.raises(InputError, match="truncated or corrupt"):
            list(open_frames(cut))
        with pytest.raises(readers.ReadError, match="truncated or corrupt"):
            readers.read_image(cut)
        with pytest.raises(ValueError, match="^frame 2: not a decodable image"):
            _decode_frame(cut.read_bytes(), 2)


def test_a_header_declared_pixel_bomb_is_refused_before_decoding(files, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESCENE_MAX_PIXELS", str(W * H - 1))
    path = files["rgba_png"]
    for call in (decode_image, decode_image_float, probe_image, load_rgb):
        with pytest.raises(ValueError, match=rf"image alpha\.png is {W}x{H} \(0\.0 megapixels\), above the limit"):
            call(path)
    with pytest.raises(ValueError, match=rf"^frame 4: the frame is {W}x{H} .*above the limit"):
        _decode_frame(path.read_bytes(), 4)
    with pytest.raises(InputError, match="above the limit"):
        list(open_frames(path))
    with pytest.raises(readers.ReadError, match="above the limit"):
        readers.read_image(path)
    monkeypatch.setenv("EDGESCENE_MAX_PIXELS", str(W * H))
    assert decode_image(path).shape == (H, W, 3)
    # a bomb Pillow itself stops (over twice the limit), from bytes
    monkeypatch.delenv("EDGESCENE_MAX_PIXELS")
    with pytest.raises(ValueError, match=r"^frame 1: the frame has 225\.0 megapixels, above the limit of 100\.0"):
        _decode_frame(bomb_png(15_000, 15_000), 1)


def test_bad_orientation_is_refused(files):
    with pytest.raises(ValueError, match="orientation must be one of none, exif, got 'up'"):
        decode_image(files["exif_jpeg"], "up")  # type: ignore[arg-type]
