"""Synthetic scenes: exact depth (analytic cases and multi-view warping), determinism, datasets on
disk in the manifest format, and the committed sample video with its ground truth."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edgescene.core.geometry import project_points, unproject_depth
from edgescene.core.manifest import read_manifest
from edgescene.train.data.synthetic import SynthConfig, generate_dataset, look_at, random_scene, render, render_sequence
from edgescene.train.data.synthetic.dataset import scene_seed
from edgescene.train.data.synthetic.sample import FRAMES, HEIGHT, WIDTH, render_sample, sample_asset_dir
from edgescene.train.data.synthetic.scene import Ground, Sphere

K = np.array([[120.0, 0, 64], [0, 120.0, 48], [0, 0, 1]])


def scene_with(scene, primitives):
    scene.primitives = primitives
    return scene


def test_depth_of_the_ground_seen_straight_down_is_the_height():
    scene = scene_with(random_scene(0), [Ground(texture=0)])
    camera = look_at(np.array([0.3, 2.5, -0.2]), np.array([0.3, 0.0, -0.2]), up=np.array([0.0, 0.0, 1.0]))
    _, depth = render(scene, K, camera, 96, 128)
    assert np.allclose(depth, 2.5, atol=1e-9)


def test_depth_of_a_sphere_centre_is_distance_minus_radius():
    scene = scene_with(random_scene(0), [Sphere((0.0, 1.0, 0.0), 0.7, 1)])
    camera = look_at(np.array([0.0, 1.0, -4.0]), np.array([0.0, 1.0, 0.0]))
    _, depth = render(scene, K, camera, 96, 128)
    assert depth[48, 64] == pytest.approx(4.0 - 0.7, abs=1e-6)
    assert depth[0, 0] == 0.0  # sky


def warp_to(depth_a, extr_a, extr_b, intrinsics):
    """Pixels of view a (with depth) projected into view b: (u, v) in b, projected depth, valid mask."""
    h, w = depth_a.shape
    points = unproject_depth(depth_a[None], extr_a[None], intrinsics[None])[0]
    pixels, z = project_points(points.reshape(-1, 3), extr_b, intrinsics)
    u, v = pixels[:, 0], pixels[:, 1]
    inside = (depth_a.reshape(-1) > 0) & (z > 0) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    return u, v, z, inside


def photometric_error(rgb_a, rgb_b, u, v, mask):
    """Per-pixel mean-over-channels |I_b(u, v) - I_a| (0..255 scale) over ``mask``, I_b bilinear."""
    sampled = cv2.remap(
        rgb_b.astype(np.float32),
        u[mask].astype(np.float32)[None],
        v[mask].astype(np.float32)[None],
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )[0]
    return np.abs(sampled - rgb_a.reshape(-1, 3)[mask]).mean(axis=1)


def warp_errors(seq) -> tuple[np.ndarray, np.ndarray]:
    """View 0 warped into view 2 with the true depth: per visible pixel, the colour error under the
    true pose and under view 2's pose turned 3 degrees (pixels hidden in view 2 are left out)."""
    frames, depth, extr, k = seq.frames, seq.depth, seq.extrinsics, seq.intrinsics
    h, w = depth.shape[1:]
    u, v, z, inside = warp_to(depth[0], extr[0], extr[2], k)
    seen = depth[2][np.clip(np.rint(v), 0, h - 1).astype(int), np.clip(np.rint(u), 0, w - 1).astype(int)]
    visible = inside & (np.abs(seen - z) < 0.02 * z)
    assert visible.sum() > 0.3 * h * w
    good = photometric_error(frames[0], frames[2], u, v, visible)
    wrong = extr[2].copy()
    wrong[:, :3] = cv2.Rodrigues(np.radians([0.0, 3.0, 0.0]))[0] @ wrong[:, :3]
    u_bad, v_bad, _, _ = warp_to(depth[0], extr[0], wrong, k)
    return good, photometric_error(frames[0], frames[2], u_bad, v_bad, visible)


def test_rendered_depth_is_consistent_with_the_cameras():
    """Warp view 0 into view 2 with the true depth and poses: the colours agree; with a pose off by
    3 degrees they do not. Pixels hidden in view 2 (true-pose depth test) are left out of both."""
    good, bad = warp_errors(render_sequence(seed=11, trajectory="orbit", frames=8, width=256, height=192))
    # Left with the true pose: bilinear resampling of 8-bit images and occlusion edges.
    assert np.median(good) < 1.0 and good.mean() < 3.5, (np.median(good), good.mean())
    assert np.median(bad) > 4 * np.median(good) and bad.mean() > 2.5 * good.mean(), (np.median(bad), bad.mean())


def test_sequences_are_deterministic_and_differ_by_seed():
    a = render_sequence(seed=5, trajectory="handheld", frames=3, width=64, height=48)
    b = render_sequence(seed=5, trajectory="handheld", frames=3, width=64, height=48)
    c = render_sequence(seed=6, trajectory="handheld", frames=3, width=64, height=48)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.depth, b.depth)
    assert np.array_equal(a.extrinsics, b.extrinsics)
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("trajectory", ["orbit", "walk", "handheld", "loop_orbit", "figure_eight"])
def test_every_trajectory_sees_the_scene(trajectory):
    seq = render_sequence(seed=3, trajectory=trajectory, frames=6, width=64, height=48)
    rotations = seq.extrinsics[:, :, :3]
    assert np.allclose(rotations @ rotations.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    assert all((d > 0).mean() > 0.4 for d in seq.depth)  # mostly scene, not sky
    centers = -np.einsum("sji,sj->si", rotations, seq.extrinsics[:, :, 3])
    assert np.linalg.norm(np.diff(centers, axis=0), axis=1).sum() > 0.1  # the camera moves


@pytest.mark.parametrize("trajectory", ["loop_orbit", "figure_eight"])
def test_loop_trajectories_come_back_to_where_they_started(trajectory):
    """The loops revisit: a late frame stands within a tenth of the path's extent of an early one and
    looks the same way (what loop closure must find), while the default mix never uses them."""
    from edgescene.train.data.synthetic import TRAJECTORIES
    from edgescene.train.data.synthetic.trajectories import make_trajectory

    extrinsics = make_trajectory(trajectory, np.random.default_rng(4), 40, 2.5)
    rotations, t = extrinsics[:, :, :3], extrinsics[:, :, 3]
    centres = -np.einsum("sji,sj->si", rotations, t)
    extent = np.linalg.norm(centres.max(0) - centres.min(0))
    early, late = range(0, 8), range(30, 40)
    gap = min(np.linalg.norm(centres[i] - centres[j]) for i in early for j in late)
    assert gap < 0.1 * extent
    i, j = min(((i, j) for i in early for j in late), key=lambda p: np.linalg.norm(centres[p[0]] - centres[p[1]]))
    angle = np.degrees(np.arccos(np.clip((np.trace(rotations[i] @ rotations[j].T) - 1) / 2, -1, 1)))
    assert angle < 15
    assert trajectory not in TRAJECTORIES


def test_dataset_on_disk_follows_the_manifest_schema(tmp_path):
    config = SynthConfig(out_dir=str(tmp_path / "synth"), scenes=3, frames=4, width=64, height=48)
    summary = generate_dataset(config)
    assert summary.frames == 12
    manifest = read_manifest(tmp_path / "synth")
    sequences = manifest.sequences()
    assert sorted(sequences) == ["scene_0000", "scene_0001", "scene_0002"]
    for entries in sequences.values():
        assert [e.frame_index for e in entries] == [0, 1, 2, 3]
        for e in entries:
            image = cv2.imread(str(tmp_path / "synth" / e.path))
            depth = np.load(tmp_path / "synth" / e.depth)
            assert image.shape == (48, 64, 3) and depth.shape == (48, 64) and depth.dtype == np.float32
            assert np.array(e.camera["extrinsics"]).shape == (3, 4)
    again = render_sequence(
        seed=scene_seed(0, 1), trajectory="walk", frames=4, width=64, height=48
    )  # scenes take trajectories in turn
    assert np.array_equal(np.load(tmp_path / "synth" / sequences["scene_0001"][2].depth), again.depth[2])
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate_dataset(config)


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="unknown trajectories"):
        SynthConfig(out_dir="x", trajectories=("spiral",))
    with pytest.raises(ValueError, match="frames must be >= 1"):
        SynthConfig(out_dir="x", frames=0)


def test_committed_sample_video_matches_its_ground_truth():
    import av

    folder = sample_asset_dir()
    gt = np.load(folder / "sample_gt.npz")
    frames, depth, intrinsics, extrinsics, description = render_sample()
    # float64 rounding differs by an ulp between numpy releases (8.9e-16 measured with numpy 2.4.6)
    np.testing.assert_allclose(gt["intrinsics"], intrinsics, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gt["extrinsics"], extrinsics, rtol=0, atol=1e-12)
    assert np.array_equal(gt["depth"], depth.astype(np.float16))
    assert json.loads((folder / "sample.json").read_text())["seed"] == description["seed"]
    with av.open(str(folder / "sample.mp4")) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert decoded.shape == (FRAMES, HEIGHT, WIDTH, 3)
    mse = np.mean((decoded.astype(np.float64) - frames) ** 2)
    # PSNR of the H.264 encoding against the exact render; 4:2:0 chroma subsampling caps it near 29.5 dB
    assert 10 * np.log10(255**2 / mse) > 27


def test_natural_textures_and_camera_effects_keep_the_seeds_geometry():
    from edgescene.train.data.synthetic.dataset import render_sequence

    plain = render_sequence(5, "orbit", 3, 96, 72)
    real = render_sequence(5, "orbit", 3, 96, 72, textures="natural", camera_effects=True)
    again = render_sequence(5, "orbit", 3, 96, 72, textures="natural", camera_effects=True)
    assert np.array_equal(plain.depth, real.depth) and np.array_equal(plain.extrinsics, real.extrinsics)
    assert np.array_equal(plain.intrinsics, real.intrinsics)
    assert np.abs(plain.frames.astype(int) - real.frames).mean() > 10  # other surfaces, another camera
    assert np.array_equal(real.frames, again.frames)  # reproducible from the seed
    mixed = render_sequence(5, "orbit", 3, 96, 72, textures="mixed")
    assert np.array_equal(mixed.depth, plain.depth)
    with pytest.raises(ValueError, match="textures must be one of procedural, natural, mixed"):
        SynthConfig(out_dir="x", textures="photos")


def test_a_natural_texture_wraps_without_a_seam_and_never_uses_the_evaluation_pair():
    from edgescene.train.data.synthetic.textures import NATURAL_SOURCES, natural_texture

    assert "stereo_motorcycle" not in NATURAL_SOURCES
    for seed in range(6):
        tex = natural_texture(np.random.default_rng(seed), 64)
        assert tex.shape == (64, 64, 3) and tex.dtype == np.float32 and tex.min() >= 0 and tex.max() <= 1
        inside = np.abs(np.diff(tex, axis=1)).mean()
        seam = np.abs(tex[:, 0] - tex[:, -1]).mean()  # the wrap-around neighbours
        assert seam <= 2 * inside + 1e-3, (seed, seam, inside)


def test_camera_effects_change_only_the_pixels_and_refuse_other_arrays():
    from edgescene.train.data.synthetic.camera_effects import apply_camera_effects

    frames = np.full((4, 40, 60, 3), 128, np.uint8)
    out, effects = apply_camera_effects(frames, np.random.default_rng(0))
    assert out.shape == frames.shape and out.dtype == np.uint8
    centre, corner = out[:, 20, 30].astype(float).mean(), out[:, 0, 0].astype(float).mean()
    assert corner < centre or effects.vignetting < 0.05  # darker corners: vignetting
    assert len({round(float(f.mean()), 1) for f in out}) > 1  # exposure drifts from frame to frame
    with pytest.raises(ValueError, match=r"frames must be \(S, H, W, 3\) uint8"):
        apply_camera_effects(frames.astype(np.float32), np.random.default_rng(0))


@pytest.mark.parametrize("layout", ["room", "terrain"])
def test_rooms_and_terrain_are_consistent_across_views(layout):
    """The warp test above, in the other layouts: colours agree under the true poses and the
    exact depth, and not under a pose 3 degrees off."""
    seq = render_sequence(seed=11, trajectory="orbit", frames=5, width=128, height=96, layout=layout)
    assert seq.scene.layout == layout
    good, bad = warp_errors(seq)
    # measured: median 0.94 / 0.54 (room / terrain), 5.1 / 3.1 with the pose 3 degrees off
    assert np.median(good) < 1.2 and np.median(bad) > 4 * np.median(good), (np.median(good), np.median(bad))
    assert bad.mean() > 2 * good.mean(), (good.mean(), bad.mean())


def test_a_room_is_closed_and_terrain_points_lie_on_the_height_field():
    from edgescene.train.data.synthetic.layouts import Terrain, build_scene

    for trajectory in ("orbit", "walk", "handheld"):
        room = render_sequence(seed=4, trajectory=trajectory, frames=3, width=64, height=48, layout="room")
        assert (room.depth > 0).all()  # walls and a ceiling all round: no sky
        assert room.depth.max() < 2 * 1.5 * 5.0 * 1.5  # inside the hall's diagonal
    seq = render_sequence(seed=4, trajectory="walk", frames=2, width=64, height=48, layout="terrain")
    terrain = seq.scene.primitives[0]
    assert isinstance(terrain, Terrain)
    points = unproject_depth(seq.depth[:1], seq.extrinsics[:1], seq.intrinsics[None])[0].reshape(-1, 3)
    points = points[seq.depth[0].reshape(-1) > 0]
    on_field = np.abs(points[:, 1] - terrain.height(points[:, 0], points[:, 2])) < 1e-6
    assert on_field.mean() > 0.85  # 0.91 measured; the rest are objects standing on it
    near = np.hypot(points[:, 0], points[:, 2]) < 10
    assert np.abs(terrain.height(points[near, 0], points[near, 2])).max() < 0.4  # gentle where cameras go
    rng_points = np.random.default_rng(0).uniform(-40, 40, (2000, 2))
    gx, gz = terrain.gradient(rng_points[:, 0], rng_points[:, 1])
    assert np.hypot(gx, gz).max() <= terrain.slope  # the marching step's bound holds
    assert build_scene(4, "terrain").describe() == seq.scene.describe()  # the seed is the scene
    with pytest.raises(ValueError, match="layout must be one of objects, room, terrain"):
        build_scene(4, "cave")
    with pytest.raises(ValueError, match="unknown layouts"):
        SynthConfig(out_dir="x", layouts=("cave",))


def test_layouts_take_turns_so_each_meets_every_trajectory(tmp_path):
    config = SynthConfig(
        out_dir=str(tmp_path / "s"),
        scenes=6,
        frames=2,
        width=32,
        height=24,
        trajectories=("orbit", "walk"),
        layouts=("objects", "room", "terrain"),
    )
    generate_dataset(config)
    seen = {(e.metadata["layout"], e.metadata["trajectory"]) for e in read_manifest(tmp_path / "s").entries}
    assert seen == {(layout, t) for layout in ("objects", "room", "terrain") for t in ("orbit", "walk")}
