"""Metric scale: position sources (GPX, CSV, EXIF, TUM, baseline), their errors, the robust fit, and
reconstructions whose outputs come out in metres."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from edgescene.core.sim3 import Sim3
from edgescene.runtime.metric import fit_positions, known_positions, lmeds_sim3
from edgescene.runtime.positions import (
    PositionError,
    exif_geodetic,
    geodetic_to_enu,
    parse_scale_source,
    read_csv_track,
    read_gpx,
    read_tum,
)
from edgescene.runtime.stream import FrameInfo

ORIGIN = (47.3769, 8.5417, 408.0)  # lat, lon, alt


def _rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


TRUE = Sim3(7.5, _rotation([0.3, 1.0, 0.2], 40.0), np.array([12.0, -3.0, 4.5]))


def _centres(n=20, seed=0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, n)
    return np.stack([np.cos(t), 0.3 * np.sin(2 * t), np.sin(t)], 1) + 0.01 * rng.normal(size=(n, 3))


# -------------------------------------------------------------------------------------- the fit
def test_a_known_similarity_is_recovered_exactly():
    src = _centres()
    fit = fit_positions(src, TRUE.apply(src), "test", "test frame")
    assert fit.mode == "full" and len(fit.inliers) == 20
    c = fit.map_to_metric
    assert c.s == pytest.approx(TRUE.s, rel=1e-6)
    assert np.allclose(c.R, TRUE.R, atol=1e-6) and np.allclose(c.t, TRUE.t, atol=1e-6)
    assert max(fit.residuals_m) < 1e-6


def test_outliers_are_rejected():
    src = _centres(30)
    dst = TRUE.apply(src) + np.random.default_rng(1).normal(scale=0.05, size=(30, 3))
    dst[[3, 11, 17, 25, 26]] += [[40, 0, 0], [0, -35, 10], [25, 25, 0], [0, 0, 60], [-30, 5, 5]]  # GPS jumps
    fit = fit_positions(src, dst, "test", "test frame")
    assert sorted(set(range(30)) - set(fit.inliers)) == [3, 11, 17, 25, 26]
    assert fit.map_to_metric.s == pytest.approx(TRUE.s, rel=0.01)
    report = fit.report()
    assert report["outliers"] == ["3", "11", "17", "25", "26"] and report["residual_rmse_m"] < 0.15


def test_a_straight_line_or_two_positions_give_scale_only():
    src = np.stack([np.linspace(0, 1, 10), np.zeros(10), np.zeros(10)], 1)
    dst = TRUE.apply(src)
    fit = fit_positions(src, dst, "test", "test frame")
    assert fit.mode == "scale" and fit.map_to_metric.s == pytest.approx(TRUE.s, rel=1e-9)
    assert np.array_equal(fit.map_to_metric.R, np.eye(3)) and "on a line" in fit.report()["note"]
    targets = np.full((5, 3), np.nan)
    targets[[1, 3]] = TRUE.apply(_centres(5)[[1, 3]])
    two = fit_positions(_centres(5), targets, "test", "test frame")
    assert two.mode == "scale" and two.map_to_metric.s == pytest.approx(TRUE.s, rel=1e-9) and two.used == [1, 3]


def test_too_few_positions_say_what_is_missing():
    targets = np.full((4, 3), np.nan)
    targets[0] = 0
    with pytest.raises(PositionError, match="1 position.* at least 2 .*--gps-offset"):
        fit_positions(_centres(4), targets, "gps:track.gpx", "enu")
    with pytest.raises(PositionError, match="do not move"):
        fit_positions(np.zeros((3, 3)), np.zeros((3, 3)), "test", "frame")


def test_lmeds_needs_three():
    with pytest.raises(PositionError, match="at least 3"):
        lmeds_sim3(np.zeros((2, 3)), np.zeros((2, 3)))


# ------------------------------------------------------------------------------------ sources
def _enu_to_geodetic(enu):
    import pymap3d

    lat, lon, alt = pymap3d.enu2geodetic(enu[:, 0], enu[:, 1], enu[:, 2], *ORIGIN)
    return np.stack([lat, lon, alt], 1)


def _write_gpx(path, times, geo):
    points = "".join(
        f'<trkpt lat="{la:.9f}" lon="{lo:.9f}"><ele>{al:.4f}</ele>'
        f"<time>{t.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}</time></trkpt>"
        for t, (la, lo, al) in zip(times, geo, strict=True)
    )
    path.write_text(
        '<?xml version="1.0"?><gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">'
        f"<trk><trkseg>{points}</trkseg></trk></gpx>"
    )


def test_geodetic_to_enu_round_trips():
    enu = np.array([[0.0, 0, 0], [100, -50, 3], [-2000, 1500, 40]])
    assert np.allclose(geodetic_to_enu(_enu_to_geodetic(enu), np.array(ORIGIN)), enu, atol=1e-6)


def test_gpx_track_at_a_lower_rate_matched_with_an_offset(tmp_path):
    # the track fixes every 2 s, starting 3.5 s before the video; keyframes every second of 15 s
    enu = np.stack([np.linspace(0, 40, 11), np.linspace(0, 20, 11) ** 1.2, np.zeros(11)], 1)
    start = datetime(2026, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    times = [start + timedelta(seconds=2 * i) for i in range(11)]
    gpx = tmp_path / "track.gpx"
    _write_gpx(gpx, times, _enu_to_geodetic(enu))
    track = read_gpx(gpx)
    assert track.absolute and len(track.times) == 11
    infos = [FrameInfo(index=i, timestamp_s=i / 10) for i in range(0, 150, 10)]  # 0, 1, ..., 14 s of video
    known = known_positions(parse_scale_source(f"gps:{gpx}", offset_s=3.5), infos, "video")
    # the fixes inside the keyframes' span, at video times 0.5, 2.5, ..., 12.5 s: each between two
    # keyframes, halfway; none extrapolated past the track or the video
    video_t = np.arange(11) * 2.0 - 3.5
    inside = (video_t >= 0) & (video_t <= 14)
    assert known.labels == [f"{t:.3f} s" for t in video_t[inside]] == ["0.500 s", "2.500 s", "4.500 s", "6.500 s",
                                                                      "8.500 s", "10.500 s", "12.500 s"]  # fmt: skip
    assert known.first.tolist() == [0, 2, 4, 6, 8, 10, 12] and np.allclose(known.weight, 0.5)
    key_clock = np.stack([np.arange(15.0), np.zeros(15), np.zeros(15)], 1)  # a camera at x = its time
    assert np.allclose(known.points(key_clock)[:, 0], video_t[inside])
    assert known.origin == pytest.approx(_enu_to_geodetic(enu[inside][:1])[0].tolist())  # the first fix used
    assert np.allclose(known.targets, enu[inside] - enu[inside][0], atol=1e-3)
    assert "East-North-Up" in known.frame


def test_a_track_sparser_than_the_clip_is_read_at_the_keyframes_it_covers(tmp_path):
    track = tmp_path / "t.csv"
    track.write_text("time,lat,lon,alt\n0,47.0,8.0,400\n10,47.001,8.001,410\n")
    infos = [FrameInfo(index=i, timestamp_s=t) for i, t in enumerate([2.0, 3.0, 4.0, 11.0])]
    known = known_positions(parse_scale_source(f"gps:{track}"), infos, "video")
    assert known.labels == ["frame 0", "frame 1", "frame 2"] and np.all(known.weight == 0)  # 11 s: past its end
    up = known.targets[:, 2]
    assert np.allclose(up - up[0], [0.0, 1.0, 2.0], atol=0.01)  # 1 m a second, interpolated


def test_pose_samples_between_photos_are_placed_between_their_cameras(tmp_path):
    tum = tmp_path / "poses.txt"
    tum.write_text("".join(f"{t} {2 * t} 0 0 0 0 0 1\n" for t in (0.5, 1.0, 2.5, 9.0)))
    infos = [FrameInfo(index=i) for i in (0, 1, 3)]  # photo indices as times: 2.5 lies between 1 and 3
    known = known_positions(parse_scale_source(f"poses:{tum}"), infos, "image(s)")
    assert known.labels == ["0.500 s", "1.000 s", "2.500 s"]  # 9 s: after the last photo
    cams = np.array([[0.0, 0, 0], [2.0, 0, 0], [6.0, 0, 0]])
    assert np.allclose(known.points(cams), known.targets)


def test_csv_tracks_in_seconds_or_iso_times(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("Time,Latitude,Longitude,Altitude\n0.0,47.0,8.0,400\n1.5,47.0001,8.0,401\n")
    track = read_csv_track(plain)
    assert not track.absolute and track.times.tolist() == [0.0, 1.5] and track.geodetic[1, 2] == 401
    iso = tmp_path / "iso.csv"
    iso.write_text("time,lat,lon\n2026-05-01T12:00:01Z,47.0,8.0\n2026-05-01T12:00:00Z,47.1,8.1\n")
    track = read_csv_track(iso)
    assert track.absolute and np.diff(track.times).tolist() == [1.0] and track.geodetic[0, 0] == 47.1  # sorted


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("a,b,c\n1,2,3\n", "missing time, lat, lon"),
        ("time,lat,lon\n", "no positions"),
        ("time,lat,lon\n0,47,8\n0,47,8\n", "share the time"),
        ("time,lat,lon\nnoon,47,8\n", "neither seconds nor an ISO"),
        ("time,lat,lon\n0,north,8\n", "must be numbers"),
        ("time,lat,lon\n0,147,8\n", "within"),
        ("time,lat,lon\n0,47,8\n2026-05-01T12:00:00Z,47,8\n", "mixes plain seconds"),
        ("time,lat,lon\n0,47\n", "columns"),
    ],
)
def test_malformed_csv_tracks(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(PositionError, match=message):
        read_csv_track(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<gpx><trk>", "not a valid GPX"),
        ('<?xml version="1.0"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"></gpx>', "no track"),
        (
            '<?xml version="1.0"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
            '<trkpt lat="47" lon="8"></trkpt></trkseg></trk></gpx>',
            "no <time>",
        ),
    ],
)
def test_malformed_gpx(tmp_path, text, message):
    path = tmp_path / "t.gpx"
    path.write_text(text)
    with pytest.raises(PositionError, match=message):
        read_gpx(path)


def test_tum_and_its_errors(tmp_path):
    good = tmp_path / "poses.txt"
    good.write_text("# time x y z qx qy qz qw\n1.0 1 2 3 0 0 0 1\n0.0 0 0 0 0 0 0 1\n")
    track = read_tum(good)
    assert track.times.tolist() == [0.0, 1.0] and track.xyz[1].tolist() == [1, 2, 3]
    bad = tmp_path / "bad.txt"
    bad.write_text("0 1 2 3\n")
    with pytest.raises(PositionError, match="8 numbers"):
        read_tum(bad)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gpx:track.gpx", "expected gps:FILE"),
        ("gps:", "needs a value"),
        ("gps:/no/such/track.gpx", "is not a file"),
        ("baseline:-1", "> 0 metres"),
        ("baseline:wide", "number of metres"),
        ("baseline:0.2@3", "@A,B"),
        ("baseline:0.2@3,3", "two different"),
        ("exif:yes", "takes no value"),
    ],
)
def test_bad_scale_sources(spec, message):
    with pytest.raises(PositionError, match=message):
        parse_scale_source(spec)


def _photo_with_gps(path, lat, lon, alt, rgb):
    from PIL import Image

    image = Image.fromarray(rgb)
    exif = image.getexif()
    gps = exif.get_ifd(0x8825)

    def dms(value):
        value = abs(value)
        d = int(value)
        m = int((value - d) * 60)
        s = (value - d - m / 60) * 3600
        return (float(d), float(m), round(s, 6))

    gps[1], gps[2] = ("N" if lat >= 0 else "S"), dms(lat)
    gps[3], gps[4] = ("E" if lon >= 0 else "W"), dms(lon)
    gps[5], gps[6] = (0 if alt >= 0 else 1), abs(alt)
    image.save(path, exif=exif)


def test_exif_gps_is_read_back(tmp_path):
    photo = tmp_path / "p.jpg"
    _photo_with_gps(photo, -33.8568, 151.2153, 12.5, np.zeros((8, 8, 3), np.uint8))
    lat, lon, alt = exif_geodetic(photo)
    assert (lat, lon, alt) == pytest.approx((-33.8568, 151.2153, 12.5), abs=1e-6)
    plain = tmp_path / "plain.jpg"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(plain)
    assert exif_geodetic(plain) is None


def test_malformed_exif_gps_names_the_photo(tmp_path):
    bad = tmp_path / "bad.jpg"
    _photo_with_gps(bad, 95.0, 8.5, 400.0, np.zeros((8, 8, 3), np.uint8))  # a latitude past the pole
    with pytest.raises(PositionError, match=r"bad\.jpg: EXIF GPS position out of range"):
        exif_geodetic(bad)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a JPEG")
    with pytest.raises(PositionError, match=r"broken\.jpg: cannot read its EXIF"):
        exif_geodetic(broken)


def test_baseline_between_named_frames():
    infos = [FrameInfo(index=i) for i in (0, 4, 9)]
    known = known_positions(parse_scale_source("baseline:0.193@4,9"), infos, "image(s)")
    assert known.first.tolist() == [1, 2] and known.labels == ["frame 4", "frame 9"]
    assert np.linalg.norm(known.targets[1] - known.targets[0]) == pytest.approx(0.193)
    with pytest.raises(PositionError, match=r"\[5\] are not keyframes"):
        known_positions(parse_scale_source("baseline:0.193@4,5"), infos, "image(s)")


# ------------------------------------------------------------------------- whole reconstructions
def _sample_track_csv(path, scale=3.0, shift=(10.0, 0.0, 5.0)):
    from edgescene.assets import sample_dir
    from edgescene.core.geometry import inverse_se3

    gt = np.load(sample_dir() / "sample_gt.npz")
    centres = scale * inverse_se3(gt["extrinsics"])[:, :, 3] + shift
    path.write_text("\n".join(f"{i / 10:.6f} {x} {y} {z} 0 0 0 1" for i, (x, y, z) in enumerate(centres)))
    return gt, centres


@pytest.fixture(scope="module")
def pose_track_runs(tmp_path_factory):
    """The sample's first 16 frames reconstructed twice: in metres from a pose track, and plain."""
    from edgescene.assets import default_model_dir, sample_dir
    from edgescene.runtime.reconstruct import ReconstructConfig, reconstruct_to_folder

    tmp_path = tmp_path_factory.mktemp("pose_track")
    gt, centres = _sample_track_csv(tmp_path / "rig.tum")
    out, plain = tmp_path / "metric", tmp_path / "plain"
    config = ReconstructConfig(max_frames=16, scale_from=f"poses:{tmp_path / 'rig.tum'}")
    report = reconstruct_to_folder(sample_dir() / "sample.mp4", default_model_dir(), out, config, progress=False)
    reconstruct_to_folder(
        sample_dir() / "sample.mp4", default_model_dir(), plain, ReconstructConfig(max_frames=16), progress=False
    )
    return gt, centres, report, out, plain


def test_reconstruct_in_metres_from_a_pose_track(pose_track_runs):
    gt, centres, report, out, plain = pose_track_runs
    fit = report["metric"]
    assert report["units"] == "metres" and fit["mode"] == "full" and fit["positions_used"] == 16
    cams = json.loads((out / "cameras.json").read_text())["frames"]
    c2w = np.array([f["camera_to_world"] for f in cams])[:, :3, 3]
    assert np.sqrt(np.mean(np.sum((c2w - centres[:16]) ** 2, 1))) == pytest.approx(fit["residual_rmse_m"], rel=1e-6)
    # the depth files scaled by the fit: metric depth against the truth x 3 (the demo model's own depth error aside)
    before = np.load(plain / "depth" / "00005.npz")["depth"]
    after = np.load(out / "depth" / "00005.npz")["depth"]
    assert np.allclose(after, before * fit["scale"], rtol=1e-5)
    ratio = np.median(after) / np.median(3 * gt["depth"][5])
    assert 0.7 < ratio < 1.3
    from edgescene.runtime.outputs import read_ply

    points, _ = read_ply(out / "points.ply")
    lo, hi = np.percentile(points, 5, axis=0), np.percentile(points, 95, axis=0)
    assert np.all(hi - lo > 1.0) and np.linalg.norm(np.median(points, 0) - centres[:16].mean(0)) < 60


def test_the_colmap_model_of_a_metric_run_is_in_metres(pose_track_runs, tmp_path):
    pytest.importorskip("pycolmap")
    from edgescene.assets import sample_dir
    from edgescene.mapping.colmap import export_colmap
    from edgescene.runtime.outputs import read_ply

    _, _, report, out, plain = pose_track_runs
    video = sample_dir() / "sample.mp4"
    metric = export_colmap(out, tmp_path / "m", source=video)
    model = export_colmap(plain, tmp_path / "p", source=video)
    # about the same tracks (the voxel size moved into metres with the map; the map re-binned on the
    # rotated grid merges some points: 20720 against 22580 measured), points that many times farther apart
    assert metric.images == model.images and 0.85 < metric.points3D / model.points3D < 1.0
    assert metric.reprojection_error_px < 1.0
    import pycolmap

    def spread(folder):
        rec = pycolmap.Reconstruction(str(folder / "sparse" / "0"))
        xyz = np.array([p.xyz for p in rec.points3D.values()])
        return np.median(np.linalg.norm(xyz - np.median(xyz, axis=0), axis=1))  # unmoved by the fit's rotation

    assert spread(tmp_path / "m") / spread(tmp_path / "p") == pytest.approx(report["metric"]["scale"], rel=0.05)
    assert len(read_ply(out / "points.ply")[0]) > 0


def test_reconstruct_geotagged_photos_with_given_intrinsics_from_the_cli(tmp_path, capsys):
    """The acceptance: photos with EXIF GPS, known intrinsics -> a metric, ENU-referenced reconstruction."""
    import pymap3d

    from edgescene.assets import sample_dir
    from edgescene.cli import main
    from edgescene.core.geometry import inverse_se3
    from edgescene.runtime.frames import open_frames

    gt = np.load(sample_dir() / "sample_gt.npz")
    centres = 4.0 * inverse_se3(gt["extrinsics"])[:, :, 3]  # metres: the sample's room, 4x
    enu = centres @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]).T  # its x, -z, y as east, north, up
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, frame in enumerate(open_frames(sample_dir() / "sample.mp4", max_frames=12)):
        lat, lon, alt = pymap3d.enu2geodetic(*enu[i], *ORIGIN)
        _photo_with_gps(photos / f"{i:03d}.jpg", lat, lon, alt, frame.rgb)
    k = gt["intrinsics"]
    (tmp_path / "K.json").write_text(json.dumps({"fx": k[0, 0], "fy": k[1, 1], "cx": k[0, 2], "cy": k[1, 2]}))
    out = tmp_path / "out"
    code = main(["reconstruct", str(photos), "--out", str(out), "--intrinsics", str(tmp_path / "K.json"),
                 "--scale-from", "exif", "--keyframe-threshold", "0", "--crs", "EPSG:32632", "--quiet"])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "metres from exif (full fit, " in text and "East-North-Up about lat 47.37" in text
    report = json.loads((out / "report.json").read_text())
    fit = report["metric"]
    assert fit["positions_used"] == 12 and fit["enu_origin"]["lat"] == pytest.approx(ORIGIN[0], abs=1e-3)
    assert report["intrinsics"]["source"] == "given"
    cams = json.loads((out / "cameras.json").read_text())["frames"]
    c2w = np.array([f["camera_to_world"] for f in cams])[:, :3, 3]
    truth = enu[:12] - enu[0]  # ENU about the first photo
    extent = np.max(np.linalg.norm(truth[:, None] - truth[None], axis=-1))
    assert (
        np.sqrt(np.mean(np.sum((c2w - truth) ** 2, 1))) < 0.25 * extent
    )  # the demo model's ATE aside, placed in metres
    assert fit["scale"] > 0 and fit["residual_rmse_m"] < 0.25 * extent
    # the cloud in UTM 32N as well: around the origin's easting and northing, within the room's size
    import pyproj

    from edgescene.runtime.outputs import read_ply

    e0, n0 = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True).transform(ORIGIN[1], ORIGIN[0])
    utm, _ = read_ply(out / "points_crs.ply")
    assert fit["crs"]["epsg"] == "EPSG:32632" and "points_crs.ply" in report["outputs"]
    assert np.linalg.norm(np.median(utm[:, :2], axis=0) - [e0, n0]) < 50


def test_a_source_the_input_cannot_use_fails_before_the_model_runs(tmp_path):
    from edgescene.assets import default_model_dir, sample_dir
    from edgescene.runtime.reconstruct import ReconstructConfig, reconstruct_to_folder

    with pytest.raises(PositionError, match="for a video give its track"):
        reconstruct_to_folder(
            sample_dir() / "sample.mp4", default_model_dir(), tmp_path / "out", ReconstructConfig(scale_from="exif"),
            progress=False, on_progress=lambda p: pytest.fail(f"the run started: {p.stage}"),
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_exif_needs_photos_and_gps_needs_video(tmp_path):
    with pytest.raises(PositionError, match="for a video give its track"):
        known_positions(parse_scale_source("exif"), [FrameInfo(index=0, timestamp_s=0.0)], "video")
    track = tmp_path / "t.csv"
    track.write_text("time,lat,lon\n0,47,8\n1,47.001,8\n")
    with pytest.raises(PositionError, match="use --scale-from exif"):
        known_positions(parse_scale_source(f"gps:{track}"), [FrameInfo(index=0, source="a.jpg")], "image(s)")


# ------------------------------------------------------------------------------- projected CRS
def test_crs_codes_are_checked():
    from edgescene.runtime.crs import CRSError, check_crs

    pytest.importorskip("pyproj")
    assert check_crs("epsg:32632") == "EPSG:32632"
    with pytest.raises(CRSError, match="give an EPSG code"):
        check_crs("UTM32")
    with pytest.raises(CRSError, match="not a projected CRS"):
        check_crs("EPSG:4326")
    with pytest.raises(CRSError, match="unknown to PROJ"):
        check_crs("EPSG:999999")


def test_enu_points_land_where_pyproj_puts_their_geodetic_position():
    import pymap3d

    pyproj = pytest.importorskip("pyproj")
    from edgescene.runtime.crs import enu_to_crs

    enu = np.array([[0.0, 0.0, 0.0], [250.0, -120.0, 15.0]])
    out = enu_to_crs(enu, ORIGIN, "EPSG:32632")
    lat, lon, alt = pymap3d.enu2geodetic(250.0, -120.0, 15.0, *ORIGIN)
    e, n = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True).transform(lon, lat)
    assert np.allclose(out[1], [e, n, alt], atol=1e-6)
    assert np.linalg.norm(out[1, :2] - out[0, :2]) == pytest.approx(np.hypot(250, 120), rel=1e-3)  # UTM scale ~0.9996


def test_a_double_ply_keeps_millimetres_at_utm_magnitudes(tmp_path):
    from edgescene.runtime.outputs import read_ply, write_ply

    points = np.array([[318384.6741, 5154517.3512, 370.1592], [318384.6752, 5154517.3523, 370.1601]])
    colors = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    write_ply(tmp_path / "p.ply", points, colors, double=True)
    back, c = read_ply(tmp_path / "p.ply")
    assert np.array_equal(back, points) and np.array_equal(c, colors)


def test_crs_needs_a_geodetic_scale_source():
    from edgescene.runtime.reconstruct import ReconstructConfig

    with pytest.raises(ValueError, match="needs --scale-from gps:FILE or exif"):
        ReconstructConfig(crs="EPSG:32632")
    with pytest.raises(ValueError, match="needs --scale-from gps:FILE or exif"):
        ReconstructConfig(crs="EPSG:32632", scale_from="baseline:1")


def test_position_priors_are_on_by_default_and_can_be_turned_off():
    import argparse

    from edgescene.commands.reconstruct import add_reconstruct_arguments
    from edgescene.runtime.reconstruct import ReconstructConfig

    assert ReconstructConfig().position_priors and ReconstructConfig(scale_from="exif").position_priors
    parser = argparse.ArgumentParser()
    add_reconstruct_arguments(parser)
    assert parser.parse_args(["in.mp4", "--out", "o"]).position_priors is True
    assert parser.parse_args(["in.mp4", "--out", "o", "--no-position-priors"]).position_priors is False
