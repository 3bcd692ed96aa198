"""edgescene.core.preprocess, upstream-exact path: load_and_preprocess_images and its Resize.

The reference below is written from the published description of upstream's
``vggt/utils/load_fn.py`` with PIL and torch (ToTensor = uint8 -> float32 / 255, F.pad with 1.0);
the implementation under test is numpy. They must agree to the bit (max |d| = 0) on images made
here: odd sizes, 16:9, portrait, RGBA, grey, palette, tiny, JPEG, and mixed-size batches.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from edgescene.runtime.preprocess import (  # the public runtime path (core.preprocess underneath)
    choose_model_size,
    decode_image,
    depth_to_source,
    load_and_preprocess_images,
    preprocess_frames,
    upstream_resize,
    upstream_size,
)


def reference(paths, mode="crop"):
    """Upstream's algorithm, written independently in PIL + torch."""
    images, shapes = [], set()
    for path in paths:
        img = Image.open(path)
        if img.mode == "RGBA":
            img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
        img = img.convert("RGB")
        width, height = img.size
        if mode == "pad" and width < height:
            new_h, new_w = 518, round(width * (518 / height) / 14) * 14
        else:
            new_w, new_h = 518, round(height * (518 / width) / 14) * 14
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
        t = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        if mode == "crop" and new_h > 518:
            start = (new_h - 518) // 2
            t = t[:, start : start + 518, :]
        if mode == "pad":
            hp, wp = 518 - t.shape[1], 518 - t.shape[2]
            t = F.pad(t, (wp // 2, wp - wp // 2, hp // 2, hp - hp // 2), mode="constant", value=1.0)
        shapes.add(tuple(t.shape[1:]))
        images.append(t)
    if len(shapes) > 1:
        mh, mw = max(s[0] for s in shapes), max(s[1] for s in shapes)
        padded = []
        for t in images:
            hp, wp = mh - t.shape[1], mw - t.shape[2]
            padded.append(F.pad(t, (wp // 2, wp - wp // 2, hp // 2, hp - hp // 2), mode="constant", value=1.0))
        images = padded
    return torch.stack(images).numpy()


def textured(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: every resize kernel difference shows."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 255 / max(w - 1, 1)), (yy * 255 / max(h - 1, 1)), ((xx + yy) * 3) % 256][:channels], -1)
    noisy = base + rng.integers(-40, 40, size=(h, w, channels))
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("upstream_images")
    made = {}

    def save(name, array, mode=None, **kw):
        path = folder / name
        Image.fromarray(array, mode).save(path, **kw) if mode else Image.fromarray(array).save(path, **kw)
        made[name.split(".")[0]] = path

    save("odd.png", textured(333, 517))
    save("odd2.png", textured(101, 263, seed=1))
    save("wide169.png", textured(360, 640, seed=2))
    save("portrait.png", textured(640, 480, seed=3))
    save("square.png", textured(300, 300, seed=4))
    rgba = np.concatenate([textured(150, 210, seed=5), textured(150, 210, 1, seed=6)], -1)
    save("rgba.png", rgba)
    save("grey.png", textured(200, 120, 1, seed=7)[..., 0], "L")
    save("tiny.png", textured(7, 9, seed=8))
    save("photo.jpg", textured(243, 365, seed=9), quality=90)
    Image.fromarray(textured(90, 160, seed=10)).convert("P", palette=Image.Palette.ADAPTIVE).save(
        folder / "palette.png"
    )
    made["palette"] = folder / "palette.png"
    return made


SINGLE = ["odd", "odd2", "wide169", "portrait", "square", "rgba", "grey", "tiny", "photo", "palette"]


@pytest.mark.parametrize("mode", ["crop", "pad"])
@pytest.mark.parametrize("name", SINGLE)
def test_single_image_equals_upstream_bit_for_bit(images, name, mode):
    got = load_and_preprocess_images([images[name]], mode=mode)
    want = reference([images[name]], mode)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() == 0.0


@pytest.mark.parametrize("mode", ["crop", "pad"])
@pytest.mark.parametrize("names", [["wide169", "portrait", "tiny"], ["odd", "rgba", "grey", "photo", "odd2"]])
def test_mixed_sizes_equal_upstream_bit_for_bit(images, names, mode):
    paths = [images[n] for n in names]
    got, want = load_and_preprocess_images(paths, mode=mode), reference(paths, mode)
    assert got.shape == want.shape and np.abs(got - want).max() == 0.0


def test_sizes_follow_upstreams_rule():
    assert upstream_size(1080, 1920, "crop") == (294, 518)  # 16:9: the whole frame, slightly stretched
    assert upstream_size(1080, 1920, "pad") == (294, 518)
    assert upstream_size(1920, 1080, "crop") == (924, 518)  # portrait: cropped to 518 rows afterwards
    assert upstream_size(1920, 1080, "pad") == (518, 294)
    r = upstream_resize(1080, 1920, "crop")
    assert (r.dst_h, r.dst_w) == (294, 518) and r.describe()["offset_xy"] == [0, 0]
    r = upstream_resize(1920, 1080, "crop")
    assert (r.dst_h, r.dst_w) == (518, 518) and r.describe()["offset_xy"] == [0, -203]
    r = upstream_resize(1080, 1920, "pad")
    assert (r.dst_h, r.dst_w) == (518, 518) and r.describe()["offset_xy"] == [0, 112]
    # Python's round: 0.5 goes to the even neighbour (h*518/w/14 = 18.5 -> 18)
    assert upstream_size(259, 518, "crop")[0] == round(259 * (518 / 518) / 14) * 14 == 252


def test_too_elongated_image_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="too elongated"):
        upstream_size(10, 2000, "crop")


def test_arrays_go_through_the_same_code(images):
    rgb = decode_image(images["wide169"])
    batch, resizes = preprocess_frames([rgb, rgb])
    assert np.abs(batch - reference([images["wide169"]] * 2)).max() == 0.0
    assert resizes[0].describe() == {
        "source_hw": [360, 640],
        "resized_hw": [294, 518],
        "offset_xy": [0, 0],
        "model_hw": [294, 518],
        "scale_xy": [518 / 640, 294 / 360],
        "mode": "crop",
    }


def test_decode_image_orientation_is_an_option(tmp_path):
    rgb = textured(20, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    for suffix in (".jpg", ".png", ".webp", ".tiff"):
        path = tmp_path / f"oriented{suffix}"
        Image.fromarray(rgb).save(path, exif=exif.tobytes(), **({"quality": 95} if suffix == ".jpg" else {}))
        # upstream: pixels as Pillow decodes them; Pillow's TIFF decoder itself applies the tag
        assert decode_image(path).shape == ((30, 20, 3) if suffix == ".tiff" else (20, 30, 3)), suffix
        assert decode_image(path, orientation="exif").shape == (30, 20, 3), suffix
    with pytest.raises(ValueError, match="orientation"):
        decode_image(tmp_path / "oriented.png", orientation="auto")


def test_decode_image_16_bit_is_scaled_not_clipped(tmp_path):
    ramp = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    Image.fromarray(ramp).save(tmp_path / "ir16.png")
    rgb = decode_image(tmp_path / "ir16.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (8, 8, 3)
    np.testing.assert_array_equal(rgb[..., 0], np.rint(ramp * (255 / 65535)).astype(np.uint8))


def test_decode_image_refuses_garbage(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match="cannot decode image"):
        decode_image(tmp_path / "bad.png")


def test_resize_maps_pixels_exactly_both_ways():
    r = upstream_resize(1920, 1080, "crop")  # portrait: stretched y, cropped rows
    uv = r.to_model_points(np.array([[540.0, 960.0], [0.0, 0.0]]))
    np.testing.assert_allclose(uv[0], [259.0, 259.0], atol=1e-9)  # centre to centre
    np.testing.assert_allclose(uv[1], [0.0, -203.0], atol=1e-9)
    np.testing.assert_allclose(r.to_source_points(uv), [[540.0, 960.0], [0.0, 0.0]], atol=1e-9)
    K = np.array([[500.0, 0, 259], [0, 500.0, 259], [0, 0, 1]])
    Ks = r.to_source_intrinsics(K)
    np.testing.assert_allclose(Ks[:2, 2], [540.0, 960.0], atol=1e-9)
    np.testing.assert_allclose([Ks[0, 0], Ks[1, 1]], [500 * 1080 / 518, 500 * 1920 / 924], rtol=1e-12)


def test_depth_maps_back_to_source_pixels():
    r = upstream_resize(120, 200, "crop")  # 84 x 140? no: 200 -> 518 wide, 120 -> 308 rows
    assert (r.dst_h, r.dst_w) == (308, 518)
    depth = np.tile(np.arange(r.dst_w, dtype=np.float32), (r.dst_h, 1))  # depth = model column
    src = depth_to_source(depth, r)
    assert src.shape == (120, 200)
    expected_col = np.floor((np.arange(200) + 0.5) * 518 / 200).astype(np.float32)
    np.testing.assert_array_equal(src[60], expected_col)
    # a cropped portrait: the rows the model never saw are NaN, the rest finite
    r = upstream_resize(400, 200, "crop")
    src = depth_to_source(np.ones((r.dst_h, r.dst_w), np.float32), r)
    seen = np.isfinite(src).all(axis=1)
    assert not seen[0] and not seen[-1] and seen[200]
    assert abs(int(seen.sum()) - round(518 * 400 / (r.resized_h or 1))) <= 1


def test_choose_model_size_never_crops_more_than_upstream():
    r, note = choose_model_size(1080, 1920, "crop", None)
    assert (r.dst_h, r.dst_w) == (294, 518) and note == ""
    r, note = choose_model_size(1080, 1920, "crop", [(392, 518), (294, 518)])
    assert (r.dst_h, r.dst_w) == (294, 518) and note == ""
    r, note = choose_model_size(1080, 1920, "crop", [(392, 518)])  # padded: the whole frame still seen
    assert (r.dst_h, r.dst_w) == (392, 518) and "padded" in note and r.describe()["offset_xy"] == [0, 49]
    r, note = choose_model_size(1920, 1080, "crop", [(392, 518)])  # portrait cannot fit: fitted whole
    assert (r.dst_h, r.dst_w) == (392, 518) and "fitted whole" in note and r.valid_mask().sum() < 392 * 518
    u, v = r.to_model_points(np.array([[0.0, 0.0], [1080.0, 1920.0]])).T
    assert v.min() >= 0 and v.max() <= 392 and u.min() >= 0 and u.max() <= 518
