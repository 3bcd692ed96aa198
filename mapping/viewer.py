"""A live 3D viewer of a reconstruction in the browser, served by viser (its bundled web client, no network).

    viewer = SceneViewer(port=8080)                 # http://127.0.0.1:8080
    viewer.update(points, colors, weights, extrinsics, intrinsics, image_hw, thumbnails)   # after each window
    view_folder("out/clip")                          # a finished reconstruction folder

The scene: the fused point cloud (``/map``), a camera frustum per keyframe (``/cameras/NNNNN``,
with a thumbnail of the keyframe where one is given) and the trajectory through the camera
centres (``/trajectory``). The side panel shows the point and keyframe counts and a confidence
slider: points whose fused confidence (the map's summed per-pixel confidence) is below that
percentile are hidden; a folder without confidences keeps the slider off. Coordinates are the map
frame (the first keyframe's OpenCV camera: x right, y down, z forward); the view starts looking
down +z from behind the first camera. At most ``max_points`` points are drawn (an even subsample).
Needs the ``mapping`` extra (viser).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from edgescene.core.geometry import inverse_se3, rotmat_to_quat
from edgescene.runtime.outputs import read_ply, thumbnail

INSTALL_HINT = "pip install 'edgescene[mapping]' (viser)"


def _import_viser():
    try:
        import viser
    except ImportError as exc:
        raise ImportError(f"the viewer needs viser: {INSTALL_HINT} ({exc})") from exc
    return viser


class SceneViewer:
    """A viser server showing a reconstruction; :meth:`update` redraws it as it grows (thread-safe)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, max_points: int = 500_000) -> None:
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        viser = _import_viser()
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        self.url = f"http://{host}:{self.server.get_port()}"
        self.max_points = max_points
        self._lock = threading.Lock()
        self._points = np.zeros((0, 3), np.float32)
        self._colors = np.zeros((0, 3), np.uint8)
        self._weights: np.ndarray | None = None
        self._cameras_drawn = 0
        self._frustums: list[Any] = []  # one viser handle per keyframe drawn
        self._poses = np.zeros((0, 3, 4))  # the extrinsics they were drawn at
        self.server.scene.set_up_direction("-y")  # OpenCV: y down
        self._stats = self.server.gui.add_markdown("**0 points**, 0 keyframes")
        self._confidence = self.server.gui.add_slider(
            "hide below confidence percentile", min=0, max=95, step=5, initial_value=0, disabled=True
        )
        self._point_size = self.server.gui.add_slider(
            "point size, % of the scene", min=0.05, max=2.0, step=0.05, initial_value=0.25
        )
        self._extent = 1.0  # robust size of the scene (2nd-98th percentile box diagonal), map units
        self._view: tuple[np.ndarray, np.ndarray] | None = None  # (camera position, look-at) for new clients
        self.server.on_client_connect(self._place_camera)
        self._confidence.on_update(lambda _: self._draw_points())
        self._point_size.on_update(lambda _: self._draw_points())

    @property
    def stats(self) -> str:
        """The side panel's count line (what a browser shows)."""
        return self._stats.content

    def update(
        self,
        points: np.ndarray,
        colors: np.ndarray,
        weights: np.ndarray | None = None,
        extrinsics: np.ndarray | None = None,
        intrinsics: np.ndarray | None = None,
        image_hw: tuple[int, int] | None = None,
        thumbnails: list[np.ndarray | None] | None = None,
    ) -> None:
        """Show the map so far: points (N, 3) map frame, colors (N, 3) uint8, weights (N,) confidence
        sums or None; extrinsics (K, 3, 4) camera-from-world and intrinsics (K, 3, 3) of every
        keyframe so far (frustums are added for the new ones), image_hw their (H, W), thumbnails one
        small image or None per keyframe."""
        points = np.asarray(points, np.float32).reshape(-1, 3)
        colors = np.asarray(colors, np.uint8).reshape(-1, 3)
        if len(colors) != len(points) or (weights is not None and len(weights) != len(points)):
            raise ValueError(f"points {points.shape}, colors {colors.shape} and weights must have one row per point")
        with self._lock:
            self._points, self._colors = points, colors
            if len(points):
                lo, hi = np.percentile(points, [2, 98], axis=0)
                self._extent = max(float(np.linalg.norm(hi - lo)), 1e-6)
                if self._view is None:  # behind and above the first camera, looking at the map's middle
                    target = np.median(points, axis=0)
                    start = extrinsics is not None and len(extrinsics)
                    origin = inverse_se3(np.asarray(extrinsics)[0])[:, 3] if start else target
                    self._view = (origin + self._extent * np.array([0.0, -0.35, -0.6]), target)
                    for client in self.server.get_clients().values():
                        self._place_camera(client)
            self._weights = None if weights is None else np.asarray(weights, np.float64)
            self._confidence.disabled = self._weights is None
            self._draw_points()
            if extrinsics is not None and intrinsics is not None and image_hw is not None:
                self._draw_cameras(np.asarray(extrinsics), np.asarray(intrinsics), image_hw, thumbnails)
            self._stats.content = f"**{len(points)} points**, {self._cameras_drawn} keyframes"

    def _draw_points(self) -> None:
        points, colors, weights = self._points, self._colors, self._weights
        if weights is not None and len(weights) and self._confidence.value > 0:
            keep = weights >= np.percentile(weights, self._confidence.value)
            points, colors = points[keep], colors[keep]
        if len(points) > self.max_points:
            pick = np.linspace(0, len(points) - 1, self.max_points).astype(np.int64)
            points, colors = points[pick], colors[pick]
        self.server.scene.add_point_cloud(
            "/map",
            points=points,
            colors=colors,
            point_size=float(self._point_size.value) / 100 * self._extent,
            point_shading="flat",  # the photo's colours as they are
            precision="float32",
        )

    def _place_camera(self, client: Any) -> None:
        if self._view is not None:
            position, target = self._view
            client.camera.position = tuple(position)
            client.camera.look_at = tuple(target)
            client.camera.up_direction = (0.0, -1.0, 0.0)

    def _draw_cameras(
        self,
        extrinsics: np.ndarray,
        intrinsics: np.ndarray,
        image_hw: tuple[int, int],
        thumbnails: list[np.ndarray | None] | None,
    ) -> None:
        h, w = image_hw
        cam_to_world = inverse_se3(extrinsics)
        centres = cam_to_world[:, :, 3]
        extent = float(np.linalg.norm(centres.max(0) - centres.min(0))) if len(centres) > 1 else 1.0
        scale = max(0.02 * extent, 1e-3)
        drawn = min(self._cameras_drawn, len(extrinsics))
        if drawn:  # cameras already drawn that moved (loop closure): move their frustums, keep their images
            moved = np.flatnonzero(np.abs(extrinsics[:drawn] - self._poses[:drawn]).reshape(drawn, -1).max(1) > 1e-9)
            for m in moved.tolist():
                self._frustums[m].wxyz = rotmat_to_quat(cam_to_world[m][:, :3])[[3, 0, 1, 2]]
                self._frustums[m].position = cam_to_world[m][:, 3]
        for k in range(self._cameras_drawn, len(extrinsics)):
            fov = float(2 * np.arctan2(h / 2, intrinsics[k][1, 1]))
            image = thumbnails[k] if thumbnails is not None and k < len(thumbnails) else None
            handle = self.server.scene.add_camera_frustum(
                f"/cameras/{k:05d}",
                fov=fov,
                aspect=w / h,
                scale=scale,
                image=image,
                wxyz=rotmat_to_quat(cam_to_world[k][:, :3])[[3, 0, 1, 2]],  # xyzw -> wxyz
                position=cam_to_world[k][:, 3],
                color=(40, 90, 200),
                thickness=1.5,
                thickness_units="screen",
            )
            self._frustums.append(handle)
        self._cameras_drawn = len(extrinsics)
        self._poses = np.array(extrinsics, np.float64, copy=True)
        if len(centres) > 1:
            segments = np.stack((centres[:-1], centres[1:]), axis=1).astype(np.float32)
            self.server.scene.add_line_segments(
                "/trajectory", segments, colors=(230, 80, 40), thickness=2.0, thickness_units="screen"
            )

    def stop(self) -> None:
        self.server.stop()


def apply_stream_message(viewer: SceneViewer, message: dict) -> None:
    """Show an ``update`` or ``final`` message of the service's ``/stream`` (its map preview, every
    keyframe's camera) in ``viewer``; other messages (``ack``) change nothing."""
    if message.get("type") not in ("update", "final"):
        return
    preview = message.get("preview") or {"points": [], "colors": []}
    intrinsics = message.get("intrinsics")
    viewer.update(
        np.asarray(preview["points"], np.float32).reshape(-1, 3),
        np.asarray(preview["colors"], np.uint8).reshape(-1, 3),
        None,
        np.asarray(message["extrinsics"], np.float64).reshape(-1, 3, 4),
        None if intrinsics is None else np.asarray(intrinsics, np.float64).reshape(-1, 3, 3),
        tuple(message["image_hw"]) if message.get("image_hw") else None,
    )


def view_folder(recon_dir: str | Path, host: str = "127.0.0.1", port: int = 8080) -> SceneViewer:
    """A viewer showing a finished reconstruction folder (points.ply, cameras.json; keyframe
    thumbnails from colmap/images when ``edgescene colmap`` wrote them, read by the one decoder,
    :func:`edgescene.core.images.decode_image`)."""
    from edgescene.core.images import decode_image

    recon_dir = Path(recon_dir)
    for name in ("points.ply", "cameras.json"):
        if not (recon_dir / name).is_file():
            raise FileNotFoundError(
                f"{recon_dir / name} is missing: is it a folder written by `edgescene reconstruct`?"
            )
    points, colors = read_ply(recon_dir / "points.ply")
    cameras = json.loads((recon_dir / "cameras.json").read_text())
    frames = cameras["frames"]
    extrinsics = np.array([f["extrinsics"] for f in frames], np.float64).reshape(-1, 3, 4)
    intrinsics = np.array([f["intrinsics"] for f in frames], np.float64).reshape(-1, 3, 3)
    thumbs: list[np.ndarray | None] = []
    for k in range(len(frames)):
        jpg = recon_dir / "colmap" / "images" / f"{k:05d}.jpg"
        thumbs.append(thumbnail(decode_image(jpg, what=f"thumbnail {jpg}")) if jpg.is_file() else None)
    viewer = SceneViewer(host=host, port=port)
    viewer.update(points, colors, None, extrinsics, intrinsics, tuple(cameras["image_size"]), thumbs)
    return viewer


__all__ = ["SceneViewer", "apply_stream_message", "view_folder"]
