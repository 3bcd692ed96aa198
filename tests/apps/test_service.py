"""The HTTP service: every endpoint through TestClient, with the bundled model and sample video."""

from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
from bundled import BUNDLED_LABEL
from fastapi.testclient import TestClient
from pixel_bomb import bomb_png

from edgescene.apps.service import ServiceConfig, create_app
from edgescene.apps.uploads import resolve_inside
from edgescene.assets import DEFAULT_MODEL, sample_dir
from edgescene.runtime.frames import open_frames

SAMPLE = sample_dir() / "sample.mp4"


def _video():
    return ("files", ("sample.mp4", SAMPLE.read_bytes(), "video/mp4"))


def _png(rgb: np.ndarray, name: str = "frame.png"):
    ok, buf = cv2.imencode(".png", rgb[..., ::-1])
    assert ok
    return ("files", (name, buf.tobytes(), "image/png"))


def _wait(client, job_id: str, timeout_s: float = 120.0) -> dict:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise TimeoutError(job)


@pytest.fixture()
def client(tmp_path):
    with TestClient(create_app(ServiceConfig(jobs_dir=tmp_path / "jobs", max_upload_mb=2.0, queue_size=1))) as c:
        yield c


def test_health_and_models(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["queue_capacity"] == 1 and health["workers"] == 1
    models = client.get("/models").json()
    bundled = models[0]
    assert bundled["name"] == DEFAULT_MODEL and bundled["bundled"] and bundled["usable"]
    assert bundled["family"] == "vggt" and bundled["input_size"] == {"height": 126, "width": 168}


def test_video_job_runs_and_serves_its_outputs(client, tmp_path):
    r = client.post("/jobs", files=[_video()], data={"max_frames": "10", "conf_percentile": "30"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "video" and job["status"] in ("queued", "running") and job["model"] == DEFAULT_MODEL
    job = _wait(client, job["id"])
    assert job["status"] == "done", job
    assert "demo model" in job["message"] and "facebook/VGGT-1B" in job["message"]  # the bundled model says so
    assert "--model" not in job["message"] and "GET /models" in job["message"]  # the API's words, not the CLI's
    assert job["progress"] == 1.0 and job["frames_seen"] == 10
    assert {"scene.glb", "points.ply", "cameras.json", "report.json", "trajectory.tum"} <= set(job["outputs"])
    glb = client.get(f"/jobs/{job['id']}/files/scene.glb")
    assert glb.status_code == 200 and glb.content[:4] == b"glTF"
    cameras = client.get(f"/jobs/{job['id']}/files/cameras.json").json()
    assert len(cameras["frames"]) == json.loads(client.get(f"/jobs/{job['id']}/files/report.json").text)["keyframes"]
    depth = client.get(f"/jobs/{job['id']}/files/depth/00000.npz")
    assert depth.status_code == 200
    assert [j["id"] for j in client.get("/jobs").json()] == [job["id"]]


def test_a_running_job_reports_the_runs_progress_and_one_only_when_done(client):
    from edgescene.runtime.progress import STAGES

    job = client.post("/jobs", files=[_video()]).json()
    samples = []
    end = time.monotonic() + 120
    while time.monotonic() < end:
        job = client.get(f"/jobs/{job['id']}").json()
        samples.append(job)
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.02)
    assert job["status"] == "done", job
    assert job["progress"] == 1.0 and job["stage"] is None and job["eta_s"] is None
    running = [j for j in samples if j["status"] == "running" and j["stage"] is not None]
    assert running and all(j["stage"] in STAGES and j["progress"] < 1.0 for j in running)
    progress = [j["progress"] for j in samples]
    assert progress == sorted(progress)
    assert any(j["stage"] == "reconstructing" and j["message"].startswith("frame ") for j in running)
    assert any(j["eta_s"] is not None and "left" in j["message"] for j in running)  # after the first window
    listed = client.get("/jobs").json()[0]
    assert listed["stage"] is None and listed["progress"] == 1.0


def test_loop_closure_job_reports_what_it_found(client, monkeypatch):
    r = client.post("/jobs", files=[_video()], data={"max_frames": "40", "loop_closure": "true"})
    assert r.status_code == 202, r.text
    job = _wait(client, r.json()["id"])
    assert job["status"] == "done", job
    report = client.get(f"/jobs/{job['id']}/files/report.json").json()
    assert report["config"]["loop_closure"] is True
    lc = report["loop_closure"]
    assert lc["windows"] == report["windows"] and isinstance(lc["loops"], list) and "applied" in lc

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gtsam" else real(name, *a))
    r = client.post("/jobs", files=[_video()], data={"loop_closure": "true"})
    assert r.status_code == 422 and "edgescene[mapping]" in r.json()["detail"]


def test_a_job_with_intrinsics_and_a_pose_track_comes_out_in_metres(client, tmp_path):
    from edgescene.core.geometry import inverse_se3

    gt = np.load(sample_dir() / "sample_gt.npz")
    k = gt["intrinsics"]
    calibration = json.dumps({"fx": k[0, 0], "fy": k[1, 1], "cx": k[0, 2], "cy": k[1, 2]}).encode()
    centres = 2.0 * inverse_se3(gt["extrinsics"])[:, :, 3]
    track = "\n".join(f"{i / 10:.3f} {x} {y} {z} 0 0 0 1" for i, (x, y, z) in enumerate(centres)).encode()
    sidecars = [
        ("intrinsics", ("K.json", calibration, "application/json")),
        ("track", ("rig.tum", track, "text/plain")),
    ]
    r = client.post("/jobs", files=[_video(), *sidecars], data={"max_frames": "12", "scale_from": "poses"})
    assert r.status_code == 202, r.text
    job = _wait(client, r.json()["id"])
    assert job["status"] == "done", job
    assert job["config"]["scale_from"] == "poses:track.tum" and job["config"]["intrinsics"] == "calibration.json"
    report = client.get(f"/jobs/{job['id']}/files/report.json").json()
    assert report["units"] == "metres" and report["metric"]["mode"] == "full"
    assert report["metric"]["scale_source"] == "poses:track.tum"  # no server path reaches the client
    assert report["intrinsics"]["source"] == "given" and report["intrinsics"]["file"] == "calibration.json"
    assert "in metres from poses:track.tum (full fit, 12 of 12 positions kept, RMSE " in job["message"]


def test_a_per_image_calibration_follows_the_uploaded_names(client):
    frames = [f.rgb for f in open_frames(SAMPLE, max_frames=3)]
    k = np.load(sample_dir() / "sample_gt.npz")["intrinsics"].tolist()
    names = [f"cam/frame{i}.png" for i in range(3)]  # the client's own paths: the key ends in the file name
    calibration = json.dumps({name: {"intrinsics": k} for name in names}).encode()
    files = [_png(f, f"frame{i}.png") for i, f in enumerate(frames)]
    r = client.post("/jobs", files=[*files, ("intrinsics", ("K.json", calibration, "application/json"))])
    assert r.status_code == 202, r.text
    job = _wait(client, r.json()["id"])
    assert job["status"] == "done", job
    report = client.get(f"/jobs/{job['id']}/files/report.json").json()
    assert report["intrinsics"]["kind"] == "per frame" and report["intrinsics"]["frames"] == 3
    bad = json.dumps({"other.png": {"intrinsics": k}}).encode()
    r = client.post("/jobs", files=[*files, ("intrinsics", ("K.json", bad, "application/json"))])
    assert r.status_code == 400 and "'other.png', which is not among the uploaded images" in r.json()["detail"]


@pytest.mark.parametrize(
    ("files", "data", "message"),
    [
        ([("intrinsics", ("K.json", b"{fx: 1}", "application/json"))], {}, "not a JSON file"),
        ([("intrinsics", ("K.json", b'{"fx": 100, "fy": 100, "cx": 5}', "application/json"))], {}, "missing cy"),
        ([], {"scale_from": "gps"}, "needs its track"),
        ([("track", ("t.csv", b"time,lat,lon\n0,47,8\n", "text/csv"))], {}, "without scale_from"),
        ([("track", ("t.kml", b"<kml/>", "text/xml"))], {"scale_from": "gps"}, "must be .gpx or .csv"),
        ([("track", ("t.csv", b"a,b\n1,2\n", "text/csv"))], {"scale_from": "gps"}, "missing time, lat, lon"),
        ([], {"scale_from": "gps:/etc/track.gpx"}, "send the track as a file"),
        ([], {"scale_from": "baseline:-2"}, "> 0 metres"),
        ([], {"scale_from": "exif"}, "for a video give its track"),
    ],
)
def test_bad_calibrations_and_tracks_are_refused_at_submission(client, files, data, message):
    r = client.post("/jobs", files=[_video(), *files], data=data)
    assert r.status_code == 400, r.text
    assert message in r.json()["detail"]
    assert client.get("/jobs").json() == []  # nothing was queued


def test_image_job(client):
    frames = [f.rgb for f in open_frames(SAMPLE, max_frames=3)]
    r = client.post("/jobs", files=[_png(f, f"img{i}.png") for i, f in enumerate(frames)])
    assert r.status_code == 202, r.text
    job = _wait(client, r.json()["id"])
    assert job["status"] == "done" and job["kind"] == "images" and job["frames_seen"] == 3


def test_oversized_upload_is_413_and_leaves_nothing(client, tmp_path):
    big = ("files", ("big.mp4", SAMPLE.read_bytes()[:64] + b"\0" * (3 * 2**20), "video/mp4"))
    r = client.post("/jobs", files=[big])
    assert r.status_code == 413
    assert "limit of 2 MiB" in r.json()["detail"]
    assert not any(p.is_dir() for p in (tmp_path / "jobs").iterdir())  # no job folder, no partial upload


def test_oversized_upload_without_content_length_is_413(tmp_path):
    """Counted while it streams in: a chunked body has no Content-Length to check up front."""
    with TestClient(create_app(ServiceConfig(jobs_dir=tmp_path / "jobs", max_upload_mb=1.0))) as c:
        boundary = "XyZ"
        payload = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.mp4"\r\n'
                "Content-Type: video/mp4\r\n\r\n"
            ).encode()
            + b"\0" * (3 * 2**20)
            + f"\r\n--{boundary}--\r\n".encode()
        )

        def chunks():
            for i in range(0, len(payload), 65536):
                yield payload[i : i + 65536]

        r = c.post("/jobs", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 413, r.text
        assert "limit" in r.json()["detail"]


@pytest.mark.parametrize(
    "name,content,fragment",
    [
        ("notes.txt", b"hello", "unsupported file type '.txt'"),
        ("clip.mp4", b"#!/bin/sh\necho not a video\n", "not a known video container"),
        ("photo.jpg", b"GIF89a....", "not a known image format"),
    ],
)
def test_wrong_type_is_415(client, name, content, fragment):
    r = client.post("/jobs", files=[("files", (name, content, "application/octet-stream"))])
    assert r.status_code == 415
    assert fragment in r.json()["detail"]


def test_video_with_images_and_bad_options_are_400(client):
    frame = next(iter(open_frames(SAMPLE, max_frames=1))).rgb
    r = client.post("/jobs", files=[_video(), _png(frame)])
    assert r.status_code == 400 and "either one video or images" in r.json()["detail"]
    r = client.post("/jobs", files=[_png(frame)], data={"every_s": "0.5"})
    assert r.status_code == 400 and "videos only" in r.json()["detail"]
    r = client.post("/jobs", files=[_video()], data={"model": "no_such_model"})
    assert r.status_code == 400 and DEFAULT_MODEL in r.json()["detail"]
    assert client.post("/jobs", files=[_video()], data={"conf_percentile": "140"}).status_code == 422


def test_full_queue_is_429(client):
    """queue_size=1, one worker: at most two jobs are taken (one running, one waiting), then 429."""
    statuses = [client.post("/jobs", files=[_video()]).status_code for _ in range(4)]
    assert statuses[0] == 202 and 429 in statuses
    assert statuses.count(202) <= 2
    r = client.post("/jobs", files=[_video()])
    if r.status_code == 429:
        assert "queue is full" in r.json()["detail"] and "retry" in r.json()["detail"]
    for job in client.get("/jobs").json():
        client.delete(f"/jobs/{job['id']}")


def test_traversal_attempts_are_404(client, tmp_path):
    job = _wait(client, client.post("/jobs", files=[_video()], data={"max_frames": "4"}).json()["id"])
    assert job["status"] == "done"
    secret = tmp_path / "jobs" / job["id"] / "job.json"  # inside the job folder, outside its outputs
    secret.write_text('{"secret": true}')
    for path in (
        "../job.json",
        "..%2Fjob.json",
        "%2e%2e/job.json",
        "depth/../../job.json",
        "/etc/passwd",
        "..%2F..%2F..%2Fetc%2Fpasswd",
    ):
        r = client.get(f"/jobs/{job['id']}/files/{path}")
        assert r.status_code == 404, (path, r.status_code)
    # a link planted in the outputs that points outside is not followed
    out = tmp_path / "jobs" / job["id"] / "output"
    (out / "escape.json").symlink_to(secret)
    assert client.get(f"/jobs/{job['id']}/files/escape.json").status_code == 404
    assert client.get("/jobs/../../etc/passwd").status_code == 404
    assert client.get("/jobs/nope/files/scene.glb").status_code == 404


def test_resolve_inside(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_text("x")
    assert resolve_inside(tmp_path / "a", "f.txt") == (tmp_path / "a" / "f.txt").resolve()
    for bad in ("../f.txt", "../a/../f.txt", "/etc/passwd", "", "a\x00b", "x/../../f.txt"):
        with pytest.raises(FileNotFoundError):
            resolve_inside(tmp_path / "a", bad)


def test_outputs_wait_for_the_job_and_cancel(client):
    r = client.post("/jobs", files=[_video()])
    job_id = r.json()["id"]
    early = client.get(f"/jobs/{job_id}/files/scene.glb")
    if client.get(f"/jobs/{job_id}").json()["status"] != "done":
        assert early.status_code == 409 and "served once it is done" in early.json()["detail"]
    cancelled = client.delete(f"/jobs/{job_id}").json()
    assert cancelled["id"] == job_id
    final = _wait(client, job_id)
    assert final["status"] in ("cancelled", "done")
    assert client.delete("/jobs/unknown").status_code == 404


def test_stream_websocket_returns_the_running_map(client):
    frames = [f.rgb for f in open_frames(SAMPLE, max_frames=9)]
    updates, replies = [], []
    with client.websocket_connect("/stream?window=4") as ws:
        ws.send_bytes(b"not an image")
        assert ws.receive_json()["type"] == "error"
        for rgb in frames:
            ok, buf = cv2.imencode(".jpg", rgb[..., ::-1])
            ws.send_bytes(buf.tobytes())
            reply = ws.receive_json()
            assert reply["type"] in ("ack", "update")
            replies.append(reply)
            if reply["type"] == "update":
                updates.append(reply)
        ws.send_text("finish")
        final = ws.receive_json()
    # each reply carries the run's progress: a live stream has no length, so counts and no fraction
    progress = [r["progress"] for r in replies]
    assert [p["frames_seen"] for p in progress] == list(range(1, 10))
    assert all(p["stage"] == "reconstructing" and p["fraction"] is None and p["eta_s"] is None for p in progress)
    assert progress[0]["model"] == BUNDLED_LABEL and progress[0]["input_hw"] == [126, 168]
    assert all(p["windows"] == u["windows"] for p, u in zip(progress, replies, strict=True) if u["type"] == "update")
    assert final["progress"]["stage"] == "done" and final["progress"]["fraction"] == 1.0
    assert final["progress"]["message"].startswith("done: 9 frames")
    assert len(updates) >= 2  # windows of 4 with overlap 2: the map grows every 2 frames
    assert [u["points"] for u in updates] == sorted(u["points"] for u in updates) and updates[0]["points"] > 0
    first = updates[0]
    assert np.allclose(np.array(first["extrinsics"][0]), np.eye(4)[:3], atol=1e-9)  # map frame = first camera
    assert len(first["preview"]["points"]) == len(first["preview"]["colors"]) > 0
    assert all(len(u["preview"]["points"]) <= 20_000 for u in updates)  # the preview's cap holds
    assert final["type"] == "final" and final["keyframes"] >= updates[-1]["keyframes"] and final["points"] > 0


def test_stream_with_known_intrinsics_uses_them(client):
    from urllib.parse import quote

    frames = [f.rgb for f in open_frames(SAMPLE, max_frames=6)]
    k = {"fx": 300.0, "fy": 300.0, "cx": 128.0, "cy": 96.0}  # the sample is 256 x 192; the model sees 168 x 126
    with client.websocket_connect("/stream?window=4&intrinsics=" + quote(json.dumps(k))) as ws:
        for rgb in frames:
            ok, buf = cv2.imencode(".png", rgb[..., ::-1])
            ws.send_bytes(buf.tobytes())
            ws.receive_json()
        ws.send_text("finish")
        final = ws.receive_json()
    assert final["type"] == "final"
    scale = 168 / 256
    assert np.allclose(
        final["intrinsics"][0], [[300 * scale, 0, 128 * scale], [0, 300 * scale, 96 * scale], [0, 0, 1]], atol=1e-3
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("{fx", "intrinsics must be JSON"),
        ('{"fx": 1}', "missing fy, cx, cy"),
        ('{"a.png": {"intrinsics": [[1,0,0],[0,1,0],[0,0,1]]}}', "one camera"),
    ],
)
def test_stream_refuses_bad_intrinsics(client, query, message):
    from urllib.parse import quote

    with client.websocket_connect("/stream?intrinsics=" + quote(query)) as ws:
        reply = ws.receive_json()
    assert reply["type"] == "error" and message in reply["detail"]


def test_stream_keeps_the_session_through_bad_messages(client):
    frames = [f.rgb for f in open_frames(SAMPLE, max_frames=4)]
    with client.websocket_connect("/stream?window=4") as ws:
        ws.send_bytes(b"")
        assert ws.receive_json() == {"type": "error", "detail": "empty message: send each frame as JPEG or PNG bytes"}
        ws.send_bytes(bomb_png(15_000, 15_000))
        bomb = ws.receive_json()
        assert bomb["type"] == "error" and "frame 1:" in bomb["detail"] and "above the limit" in bomb["detail"]
        ws.send_bytes(b"\x00" * (20 * 2**20 + 1))  # over the documented 20 MiB
        assert "over the 20 MiB limit" in ws.receive_json()["detail"]
        ws.send_text("hello")
        assert "only 'finish'" in ws.receive_json()["detail"]
        ok, sliver = cv2.imencode(".png", np.zeros((2, 1500, 3), np.uint8))  # too elongated for any model input
        ws.send_bytes(sliver.tobytes())
        refused = ws.receive_json()
        assert refused["type"] == "error" and "too elongated" in refused["detail"]
        for rgb in frames:  # the session is still there
            ok, buf = cv2.imencode(".jpg", rgb[..., ::-1])
            ws.send_bytes(buf.tobytes())
            assert ws.receive_json()["type"] in ("ack", "update")
        ws.send_text("finish")
        assert ws.receive_json()["type"] == "final"


def test_a_jobs_window_defaults_to_what_the_model_serves_and_is_checked(client):
    from edgescene.apps.models_catalog import default_window

    assert [default_window(f) for f in (None, {"min": 1, "max": 4}, {"min": 1, "max": 32})] == [8, 4, 8]
    r = client.post("/jobs", files=[_video()], data={"window": "9"})
    assert r.status_code == 422 and "window 9 is outside what model" in r.text and "send window=8" in r.text
    job = client.post("/jobs", files=[_video()], data={"max_frames": "4"}).json()
    assert job["config"]["window"] == 8 and job["config"]["overlap"] == 2
    assert _wait(client, job["id"])["status"] == "done"


@pytest.mark.parametrize("window", ["1", "9", "100000"])
def test_stream_window_is_checked_against_the_model(client, window):
    with client.websocket_connect(f"/stream?window={window}") as ws:
        message = ws.receive_json()
    assert message["type"] == "error" and f"window {window} is outside what model" in message["detail"]
    assert "--" not in message["detail"]


def test_stream_model_cache_is_bounded(client):
    frames = [f.rgb for f in open_frames(SAMPLE, max_frames=2)]
    ok, buf = cv2.imencode(".jpg", frames[0][..., ::-1])
    for window in (2, 3, 4, 5):
        with client.websocket_connect(f"/stream?window={window}") as ws:
            ws.send_bytes(buf.tobytes())
            assert ws.receive_json()["type"] in ("ack", "update")
    cache = client.app.state.stream_models
    assert cache.keys() == [(DEFAULT_MODEL, 4), (DEFAULT_MODEL, 5)]  # the two most recently used (idle ones closed)


def test_stream_unknown_model(client):
    with client.websocket_connect("/stream?model=nope") as ws:
        message = ws.receive_json()
    assert message["type"] == "error" and "unknown model" in message["detail"]


def test_service_config_validation(tmp_path):
    with pytest.raises(ValueError, match="queue_size"):
        ServiceConfig(jobs_dir=tmp_path, queue_size=0)
    with pytest.raises(ValueError, match="not a folder"):
        ServiceConfig(jobs_dir=tmp_path, models_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="max_upload_mb"):
        ServiceConfig(jobs_dir=tmp_path, max_upload_mb=0)


def test_models_dir_lists_user_artifacts(tmp_path):
    import shutil

    from edgescene.assets import default_model_dir

    models = tmp_path / "models"
    shutil.copytree(default_model_dir(), models / "my_model", ignore=shutil.ignore_patterns("*.safetensors"))
    (models / "broken").mkdir()
    (models / "broken" / "artifact.json").write_text("{not json")
    with TestClient(create_app(ServiceConfig(jobs_dir=tmp_path / "jobs", models_dir=models))) as c:
        listed = {m["name"]: m for m in c.get("/models").json()}
        assert listed["my_model"]["usable"] and not listed["my_model"]["bundled"]
        assert not listed["broken"]["usable"] and "not valid JSON" in listed["broken"]["error"]
        r = c.post("/jobs", files=[_video()], data={"model": "broken"})
        detail = r.json()["detail"]
        assert r.status_code == 400 and "my_model" in detail
        assert "model 'broken' is listed but not usable (" in detail and "not valid JSON" in detail
        assert str(tmp_path) not in detail
        job = _wait(c, c.post("/jobs", files=[_video()], data={"model": "my_model", "max_frames": "4"}).json()["id"])
        assert job["status"] == "done" and job["model"] == "my_model"  # a name: server paths are not shown


def test_pytorch_models_by_checkpoint_and_hub_id(tmp_path, monkeypatch):
    from edgescene.assets import default_model_dir

    checkpoint = default_model_dir() / "model.safetensors"  # the bundled weights, as a user's file
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    config = ServiceConfig(
        jobs_dir=tmp_path / "jobs", pytorch_models={"mine": str(checkpoint), "VGGT-1B": "facebook/VGGT-1B"}
    )
    with TestClient(create_app(config)) as c:
        listed = {m["name"]: m for m in c.get("/models").json()}
        assert listed["mine"]["usable"] and listed["mine"]["backend"] == "torch"
        assert listed["mine"]["source"] == "model.safetensors"  # the file's name, never the server's path
        assert listed["VGGT-1B"]["source"] == "hub:facebook/VGGT-1B"
        job = _wait(
            c, c.post("/jobs", files=[_video()], data={"model": "mine", "max_frames": "4", "window": "4"}).json()["id"]
        )
        assert job["status"] == "done", job
        report = c.get(f"/jobs/{job['id']}/files/report.json").json()
        assert report["backend"]["name"] == "torch" and report["preprocessing"]["model_input_hw"] == [126, 168]
        job = _wait(c, c.post("/jobs", files=[_video()], data={"model": "VGGT-1B", "max_frames": "4"}).json()["id"])
        assert job["status"] == "failed" and "edgescene download --repo-id facebook/VGGT-1B" in job["error"]
    with pytest.raises(ValueError, match="neither a Hub id"):
        ServiceConfig(jobs_dir=tmp_path / "jobs", pytorch_models={"x": str(tmp_path / "missing.pt")})


def test_stream_clients_share_the_model_but_not_their_state(client):
    """Two clients, one after the other, send the same frames: each starts its own map (same result),
    while the model session opened for the first is reused by the second."""
    frames = [f.rgb for f in open_frames(SAMPLE, max_frames=4)]
    finals = []
    for _ in range(2):
        with client.websocket_connect("/stream?window=4") as ws:
            for rgb in frames:
                ok, buf = cv2.imencode(".png", rgb[..., ::-1])
                ws.send_bytes(buf.tobytes())
                ws.receive_json()
            ws.send_text("finish")
            finals.append(ws.receive_json())
    assert finals[0]["points"] == finals[1]["points"] > 0 and finals[0]["keyframes"] == finals[1]["keyframes"] == 4
    assert np.allclose(finals[1]["extrinsics"][0], np.eye(4)[:3])
    assert len(client.app.state.stream_models) == 1


def test_a_pixel_bomb_is_refused_at_submission(client, tmp_path):
    bomb = bomb_png(15_000, 15_000)
    assert len(bomb) < 300_000
    r = client.post("/jobs", files=[("files", ("huge.png", bomb, "image/png"))])
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    assert "image huge.png" in detail and "225.0 megapixels" in detail and "above the limit of 100.0" in detail
    assert str(tmp_path) not in detail  # the client's file name, never the server's path
    assert list((tmp_path / "jobs").glob("*/inputs")) == []  # nothing kept
    r = client.post("/jobs", files=[("files", ("broken.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, "video/mp4"))])
    assert r.status_code == 422 and "broken.mp4" in r.json()["detail"] and str(tmp_path) not in r.json()["detail"]


TOKEN = "0123456789abcdef-secret"


def test_the_api_token_is_enforced_everywhere_but_health(tmp_path):
    from starlette.websockets import WebSocketDisconnect

    app = create_app(ServiceConfig(jobs_dir=tmp_path / "jobs", api_token=TOKEN))
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        for method, path in (("get", "/models"), ("get", "/jobs"), ("get", "/jobs/x"), ("delete", "/jobs/x")):
            r = getattr(c, method)(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path)
        assert c.post("/jobs", files=[_video()]).status_code == 401
        assert c.get("/models", headers={"Authorization": "Bearer wrong-token-of-some-length"}).status_code == 401
        assert c.get("/models", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        with pytest.raises(WebSocketDisconnect) as closed, c.websocket_connect("/stream") as ws:
            ws.receive_json()
        assert closed.value.code == 1008
        with c.websocket_connect(f"/stream?token={TOKEN}") as ws:
            ws.send_json({"type": "finish"})
            assert ws.receive_json()["type"] in ("final", "error")
    with pytest.raises(ValueError, match="at least 16 characters"):
        ServiceConfig(jobs_dir=tmp_path / "jobs", api_token="short")
    assert TOKEN not in repr(ServiceConfig(jobs_dir=tmp_path / "jobs", api_token=TOKEN))


def test_listening_beyond_loopback_needs_a_token_or_insecure(tmp_path, capsys, monkeypatch):
    from edgescene.cli import main

    monkeypatch.delenv("EDGESCENE_API_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--jobs-dir", str(tmp_path / "jobs")]) == 2
    assert "without an API token" in capsys.readouterr().err and not (tmp_path / "jobs").exists()


def test_no_server_path_reaches_a_client(tmp_path):
    import shutil

    from edgescene.assets import default_model_dir

    models = tmp_path / "models"
    shutil.copytree(default_model_dir(), models / "mine", ignore=shutil.ignore_patterns("*.safetensors"))
    (models / "broken").mkdir()
    (models / "broken" / "artifact.json").write_text("{not json")
    secret = str(tmp_path)
    with TestClient(create_app(ServiceConfig(jobs_dir=tmp_path / "jobs", models_dir=models))) as c:
        seen = [c.get("/models").text]
        refused = c.post("/jobs", files=[_video()], data={"model": "mine", "window": "9"})
        assert refused.status_code == 422 and "window 9 is outside what model 'mine' takes" in refused.text
        assert "--" not in refused.json()["detail"]  # API terms, not command-line flags
        assert c.post("/jobs", files=[_video()], data={"every_s": "inf"}).status_code == 422
        done = _wait(c, c.post("/jobs", files=[_video()], data={"model": "mine", "max_frames": "6"}).json()["id"])
        seen += [refused.text, c.get("/jobs").text, c.get(f"/jobs/{done['id']}").text]
        for name in done["outputs"]:
            if name.endswith((".json", ".tum", ".ply")):
                seen.append(c.get(f"/jobs/{done['id']}/files/{name}").content.decode("latin-1"))
    assert done["status"] == "done"
    leaks = [text[max(0, text.find(secret) - 80) : text.find(secret) + 80] for text in seen if secret in text]
    assert leaks == []


def test_hosts_origins_and_security_headers(tmp_path):
    from starlette.websockets import WebSocketDisconnect

    with TestClient(create_app(ServiceConfig(jobs_dir=tmp_path / "jobs"))) as c:
        ok = c.get("/jobs")
        assert ok.status_code == 200 and ok.headers["x-content-type-options"] == "nosniff"
        assert (
            ok.headers["cache-control"] == "no-store" and "default-src 'self'" in ok.headers["content-security-policy"]
        )
        rebound = c.get("/jobs", headers={"Host": "evil.example"})  # DNS rebinding: a foreign name for us
        assert rebound.status_code == 400 and "evil.example" in rebound.json()["detail"]
        foreign = c.post("/jobs", files=[_video()], headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403 and list((tmp_path / "jobs").glob("*/input")) == []
        assert c.get("/models", headers={"Origin": "https://evil.example"}).status_code == 200  # reads are fine
        assert "access-control-allow-origin" not in c.get("/models", headers={"Origin": "https://x.org"}).headers
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            c.websocket_connect("/stream", headers={"Origin": "https://evil.example"}) as ws,
        ):
            ws.receive_json()
        assert closed.value.code == 1008
        with c.websocket_connect("/stream", headers={"Origin": "http://testserver"}) as ws:  # the service's own page
            ws.send_text("finish")
            assert ws.receive_json()["type"] == "error"
    config = ServiceConfig(jobs_dir=tmp_path / "jobs", cors_origins=("https://app.example",))
    with TestClient(create_app(config)) as c:
        pre = c.options("/jobs", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
        assert pre.headers["access-control-allow-origin"] == "https://app.example"
        r = c.post("/jobs", files=[_video()], data={"max_frames": "2"}, headers={"Origin": "https://app.example"})
        assert r.status_code == 202


def test_video_frame_and_duration_budgets_are_checked_at_submission(tmp_path):
    config = ServiceConfig(jobs_dir=tmp_path / "jobs", max_job_frames=10, max_video_s=60)
    with TestClient(create_app(config)) as c:
        r = c.post("/jobs", files=[_video()])  # 32 frames
        assert r.status_code == 413 and "would give 32 frames, over the limit of 10" in r.json()["detail"]
        assert "every_s" in r.json()["detail"] and list((tmp_path / "jobs").glob("*/input")) == []
        assert c.post("/jobs", files=[_video()], data={"max_frames": "8"}).status_code == 202
    short = ServiceConfig(jobs_dir=tmp_path / "jobs2", max_video_s=0.5)
    with TestClient(create_app(short)) as c:
        r = c.post("/jobs", files=[_video()])
        detail = r.json()["detail"]
        assert r.status_code == 413 and detail.startswith("video sample.mp4 lasts") and "send a shorter clip" in detail


def _jpegs(frames) -> list[bytes]:
    return [cv2.imencode(".jpg", rgb[..., ::-1])[1].tobytes() for rgb in frames]


def _live_threads() -> list[str]:
    from edgescene.apps.live_stream import THREAD_PREFIX

    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def _no_live_threads(timeout_s: float = 30.0) -> bool:
    end = time.monotonic() + timeout_s
    while _live_threads() and time.monotonic() < end:
        time.sleep(0.05)
    return not _live_threads()


def test_stream_client_leaving_mid_way_leaves_no_thread(client, monkeypatch):
    from edgescene.runtime.stream import StreamingReconstruction

    finished = []
    original = StreamingReconstruction.finish
    monkeypatch.setattr(
        StreamingReconstruction, "finish", lambda self, stages=None: finished.append(self) or original(self, stages)
    )
    jpegs = _jpegs(f.rgb for f in open_frames(SAMPLE, max_frames=6))
    with client.websocket_connect("/stream?window=4") as ws:
        for data in jpegs[:3]:
            ws.send_bytes(data)
            assert ws.receive_json()["type"] in ("ack", "update")
        assert len(_live_threads()) == 1  # the session's run, waiting for the next frame
    assert _no_live_threads(), _live_threads()  # gone without 'finish': the run was cancelled
    with client.websocket_connect("/stream?window=4") as ws:
        ws.send_bytes(jpegs[0])  # leaves while its frame is answered
    assert _no_live_threads(), _live_threads()
    assert finished == []  # the model ran no last window for the clients that left
    with client.websocket_connect("/stream?window=4") as ws:  # the next session works
        for data in jpegs:
            ws.send_bytes(data)
            assert ws.receive_json()["type"] in ("ack", "update")
        ws.send_text("finish")
        final = ws.receive_json()
    assert final["type"] == "final" and final["points"] > 0 and len(finished) == 1
    assert _no_live_threads(), _live_threads()


def test_two_concurrent_stream_sessions_each_get_their_own_map(client):
    frames = [f.rgb for f in open_frames(SAMPLE, max_frames=12)]
    inputs = {"a": _jpegs(frames[:8]), "b": _jpegs(frames[::-1][:6])}  # different frames, different lengths

    def serial(jpegs: list[bytes]) -> dict:
        with client.websocket_connect("/stream?window=4") as ws:
            for data in jpegs:
                ws.send_bytes(data)
                ws.receive_json()
            ws.send_text("finish")
            return ws.receive_json()

    alone = {name: serial(jpegs) for name, jpegs in inputs.items()}
    assert alone["a"]["camera_centers"] != alone["b"]["camera_centers"]
    together: dict[str, dict] = {}
    with (
        client.websocket_connect("/stream?window=4") as wa,
        client.websocket_connect("/stream?window=4") as wb,
    ):
        sockets = {"a": wa, "b": wb}
        for i in range(max(len(j) for j in inputs.values())):  # interleaved, frame by frame
            for name, ws in sockets.items():
                if i < len(inputs[name]):
                    ws.send_bytes(inputs[name][i])
                    assert ws.receive_json()["frame"] == i + 1
            if i == 1:
                assert len(_live_threads()) == 2  # one run per session
        for name, ws in sockets.items():
            ws.send_text("finish")
            together[name] = ws.receive_json()
    for name in inputs:
        assert together[name]["type"] == "final"
        assert together[name]["points"] == alone[name]["points"] > 0
        assert together[name]["keyframes"] == alone[name]["keyframes"]
        assert np.allclose(together[name]["extrinsics"], alone[name]["extrinsics"], atol=1e-5)
    assert _no_live_threads(), _live_threads()


def test_stream_model_failure_ends_the_session(client, monkeypatch):
    from starlette.websockets import WebSocketDisconnect

    from edgescene.runtime.stream import StreamingReconstruction

    def unloaded(self, image, rgb, info=None, stages=None):
        raise RuntimeError("the model session was closed")

    monkeypatch.setattr(StreamingReconstruction, "push", unloaded)
    jpegs = _jpegs(f.rgb for f in open_frames(SAMPLE, max_frames=1))
    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/stream?window=4") as ws:
        ws.send_bytes(jpegs[0])
        assert ws.receive_json() == {"type": "error", "detail": "the model session was closed; reconnect"}
        ws.receive_json()
    assert closed.value.code == 1011
    assert _no_live_threads(), _live_threads()


def test_every_error_says_what_never_where(tmp_path):
    """Bad inputs of every kind, through the service: each answer names the problem and the fix, and
    none shows a server path, an object's repr or a traceback."""
    from edgescene.runtime.outputs import redact_paths

    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 200  # a JPEG signature, then nothing decodable
    answers: list[tuple[int, str]] = []
    with TestClient(create_app(ServiceConfig(jobs_dir=tmp_path / "jobs"))) as c:
        for files, data in [
            ([("files", ("corrupt.jpg", jpeg, "image/jpeg"))], {}),
            ([("files", ("truncated.jpg", b"\xff\xd8\xff\xe0garbage", "image/jpeg"))], {}),
            ([("files", ("a" * 5000 + ".jpg", jpeg, "image/jpeg"))], {}),
            ([("files", ("model.pth", b"\x00" * 100, "application/octet-stream"))], {}),
            ([("files", ("strip.png", bomb_png(20000, 1), "image/png"))], {}),
            ([("files", ("huge.png", bomb_png(15000, 15000), "image/png"))], {}),
            ([("files", ("random.mp4", bytes(range(256)) * 64, "video/mp4"))], {}),
            ([_video()], {"window": "1"}),
            ([_video()], {"model": "../../etc/passwd"}),
            ([_video()], {"every_s": "nan"}),
        ]:
            r = c.post("/jobs", files=files, data=data)
            answers.append((r.status_code, r.json()["detail"]))
        for path in ("/jobs/nope", "/jobs/nope/files/../../jobs.sqlite3"):
            r = c.get(path)
            answers.append((r.status_code, r.json()["detail"]))
        for query in ("window=abc", "window=1", "model=nope"):
            with c.websocket_connect(f"/stream?{query}") as ws:
                answers.append((1008, ws.receive_json()["detail"]))
        with c.websocket_connect("/stream?window=4") as ws:
            for message in (bomb_png(15000, 15000), jpeg, b"\x00" * 10):
                ws.send_bytes(message)
                answers.append((200, ws.receive_json()["detail"]))
    assert len(answers) == 18
    statuses = [status for status, _ in answers]
    assert statuses[:10] == [422, 422, 400, 415, 422, 413, 415, 422, 400, 422], answers
    answers = [(status, d if isinstance(d, str) else json.dumps(d)) for status, d in answers]  # FastAPI's 422 lists
    for status, detail in answers:
        assert 400 <= status < 500 or status in (200, 1008), (status, detail)
        assert str(tmp_path) not in detail and "/tmp/" not in detail and redact_paths(detail) == detail, detail
        assert "object at 0x" not in detail and "Traceback" not in detail, detail
        assert len(detail) > 30 and (";" in detail or ":" in detail), detail  # a problem and what to do
    assert "too elongated" in answers[4][1] and "strip.png" in answers[4][1]
    assert "over the parser's limit" in answers[2][1]
    assert "window must be a whole number" in answers[12][1] and "unknown model 'nope'" in answers[14][1]


def test_api_docs_come_from_installed_assets_and_are_public_with_a_token(tmp_path):
    token = "docs-token-0123456789abcdef"
    with TestClient(create_app(ServiceConfig(jobs_dir=tmp_path / "jobs", api_token=token))) as c:
        docs = c.get("/docs")
        assert docs.status_code == 200 and 'src="/docs-assets/swagger-ui-bundle.js"' in docs.text
        assert "cdn" not in docs.text.lower()  # FastAPI's own page loads swagger-ui from a CDN
        assert "worker-src 'self' blob:" in docs.headers["content-security-policy"]
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
            r = c.get(f"/docs-assets/{asset}")
            assert r.status_code == 200 and len(r.content) > 10_000, asset
        assert c.get("/redoc").status_code == 200 and "/docs-assets/redoc.standalone.js" in c.get("/redoc").text
        schema = c.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["token"] == {
            "type": "http",
            "scheme": "bearer",
            "description": "the server's API token (EDGESCENE_API_TOKEN)",
        }
        assert schema["security"] == [{"token": []}] and schema["paths"]["/health"]["get"]["security"] == []
        assert "press **Authorize**" in schema["info"]["description"]
        assert c.get("/jobs").status_code == 401 and c.get("/docs-assets/../jobs").status_code in (401, 404)
        assert c.get("/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with TestClient(create_app(ServiceConfig(jobs_dir=tmp_path / "jobs2"))) as c:
        schema = c.get("/openapi.json").json()
        assert "security" not in schema and "Authorize" not in schema["info"]["description"]
