"""Where frames come from: one image, a folder or list of images, or one video, as lazy ``Frame``s.

``open_frames(source, every_s=None, max_frames=None, motion_threshold=None)``
validates the input at once (paths exist, types are supported, a video opens and yields a first
frame) and returns a :class:`FrameSource`. Iterating it reads images / decodes video frames one at
a time, so a long video is never held in memory; each iteration starts again from the beginning.

Every frame is ``(H0, W0, 3) uint8 RGB`` at the original resolution:

- Images are decoded by the one decoder, :func:`edgescene.core.images.decode_image` (its module
  docstring states the policy), as upstream VGGT's ``load_and_preprocess_images`` decodes them:
  Pillow, RGBA composited on white, ``convert("RGB")``; 16-bit and float images scaled to 8 bit
  instead of clipped; the pixel limit checked from the header first.
- ``orientation="none"`` (the default, as upstream) keeps pixels as stored; ``"exif"`` applies the
  EXIF Orientation tag of every image format and the display rotation of videos (phone videos).
  Each frame records what was applied (``Frame.rotation_deg``, ``Frame.orientation``).
- Video frames keep their decoded frame number as ``index`` and their presentation time in seconds
  from the start of the stream as ``timestamp_s``.

Decompression bombs: every video frame is held to the pixel limit
(:func:`edgescene.core.images.max_pixels`), not only the header's size. FFmpeg's decoder is told the
limit (its ``max_pixels`` option), so it refuses to allocate a larger picture, and each decoded
frame is checked again before it is converted. A frame over the limit anywhere in the file raises
:class:`InputError` naming the frame and the limit: it never reaches the model. ``probe_frames``
decodes that many frames when the video is opened, so an early bomb is refused at once.

Sampling, applied in this order: ``every_s`` (video only) keeps the first frame at or after each
multiple of ``every_s`` seconds; ``motion_threshold`` skips a frame whose 64-px-wide grey thumbnail
differs from the last *yielded* frame's by a mean absolute difference (0..255) ``<= threshold`` (so
0 drops exact duplicates only); ``max_frames`` stops after that many frames.

User-facing problems raise :class:`InputError` (a ``ValueError``) naming the file and the fix. In a
folder or list, an unreadable image is skipped with a logged warning; if none can be read at all it
is an ``InputError``. Imports numpy, OpenCV, PyAV and the standard library only.
"""

from __future__ import annotations

import logging
import math
import numbers
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgescene.core.color import yuv420_to_rgb
from edgescene.core.images import check_pixels, decode_image, max_pixels

__all__ = [
    "Frame",
    "InputError",
    "FrameSource",
    "open_frames",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "natural_key",
    "read_image",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
_THUMB_WIDTH = 64
_TIME_TOLERANCE_S = 1e-3  # container time bases round timestamps (e.g. to the millisecond)


class InputError(ValueError):
    """A problem with the user's input (missing file, unsupported type, unreadable data)."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One input frame. ``rgb``: (H0, W0, 3) uint8 RGB at the original resolution.

    ``index``: decoded frame number (video) or position in the image list. ``timestamp_s``: seconds
    from the start of the video (None for images). ``source``: the image path, or
    ``"<video path>#f000123"``.
    """

    index: int
    timestamp_s: float | None
    rgb: np.ndarray = field(repr=False)
    source: str
    orientation: str = "none"  # the option the frame was read with: "none" or "exif"
    rotation_deg: int = 0  # video display rotation applied (counter-clockwise), with orientation="exif"

    def __repr__(self) -> str:
        t = "None" if self.timestamp_s is None else f"{self.timestamp_s:.3f}"
        return f"Frame(index={self.index}, timestamp_s={t}, shape={tuple(self.rgb.shape)}, source={self.source!r})"


# ----------------------------------------------------------------------------- helpers


def natural_key(name: str) -> tuple:
    """Sort key putting ``img2`` before ``img10`` (case-insensitive)."""
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p.lower()) for p in re.split(r"(\d+)", name) if p != "")


def _supported(kind: str) -> str:
    exts = IMAGE_EXTENSIONS if kind == "image" else VIDEO_EXTENSIONS
    return " ".join(exts)


def read_image(path: str | Path, orientation: str = "none") -> np.ndarray | None:
    """Decode one image file to (H, W, 3) uint8 RGB with the one decoder
    (:func:`edgescene.core.images.decode_image`); ``None`` (and a logged reason) when it cannot be
    decoded."""
    try:
        return _decode(path, orientation)
    except InputError as exc:
        log.warning("%s", exc)
        return None


def _decode(path: str | Path, orientation: str) -> np.ndarray:
    """:func:`edgescene.core.images.decode_image`; its ValueError (naming the file and the fix) as an
    :class:`InputError`."""
    try:
        return decode_image(path, orientation, what=f"image {path}")  # type: ignore[arg-type]
    except (ValueError, OSError) as exc:
        raise InputError(str(exc)) from exc


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    th = max(1, round(_THUMB_WIDTH * h / w))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    interp = cv2.INTER_AREA if w >= _THUMB_WIDTH else cv2.INTER_LINEAR
    return cv2.resize(grey, (_THUMB_WIDTH, th), interpolation=interp).astype(np.float32)


class _MotionGate:
    """Keeps a frame when it differs from the last kept one by more than ``threshold``."""

    def __init__(self, threshold: float | None):
        self.threshold = threshold
        self.last: np.ndarray | None = None

    def keep(self, rgb: np.ndarray) -> bool:
        if self.threshold is None:
            return True
        thumb = _thumbnail(rgb)
        same_size = self.last is not None and self.last.shape == thumb.shape
        if same_size and float(np.abs(thumb - self.last).mean()) <= self.threshold:
            return False
        self.last = thumb
        return True


# ----------------------------------------------------------------------------- sources


class FrameSource:
    """Iterable of :class:`Frame`, read lazily. Made by :func:`open_frames`.

    ``kind``: ``"image(s)"`` or ``"video"``. For videos ``fps``, ``duration_s`` and ``frame_count``
    come from the stream metadata (estimates where the container does not store them; None when
    unknown). For images ``frame_count`` is the number of files and the others are None.
    """

    kind: str
    fps: float | None = None
    duration_s: float | None = None
    frame_count: int | None = None

    def __init__(
        self,
        every_s: float | None,
        max_frames: int | None,
        motion_threshold: float | None,
        orientation: str = "none",
    ):
        self.orientation = orientation
        self.every_s = None if every_s is None else float(every_s)
        self.max_frames = None if max_frames is None else int(max_frames)
        self.motion_threshold = None if motion_threshold is None else float(motion_threshold)

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - overridden
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def expected_count(self) -> int | None:  # pragma: no cover - overridden
        """Frames this source is expected to yield (None when unknown)."""
        raise NotImplementedError

    def _sampling(self) -> str:
        parts = []
        if self.every_s is not None:
            parts.append(f"one frame every {self.every_s:g} s")
        if self.motion_threshold is not None:
            parts.append(f"skipping frames with motion <= {self.motion_threshold:g}")
        if self.max_frames is not None:
            parts.append(f"at most {self.max_frames} frames")
        return "; " + ", ".join(parts) if parts else ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class ImageSource(FrameSource):
    kind = "image(s)"

    def __init__(self, paths: list[Path], origin: str, strict: bool, **kw):
        super().__init__(**kw)
        self.paths = paths
        self.origin = origin  # "image a.jpg", "folder photos/", "list"
        self.strict = strict  # single image: unreadable -> InputError (not skipped)
        self.frame_count = len(paths)

    def expected_count(self) -> int | None:
        """Frames this source is expected to yield (None when a motion threshold makes it unknown)."""
        if self.motion_threshold is not None:
            return None
        n = len(self.paths)
        return n if self.max_frames is None else min(n, self.max_frames)

    def describe(self) -> str:
        if self.strict:
            return f"image {self.paths[0]}{self._sampling()}"
        return f"{len(self.paths)} images from {self.origin}{self._sampling()}"

    def __iter__(self) -> Iterator[Frame]:
        gate = _MotionGate(self.motion_threshold)
        read = kept = 0
        for i, path in enumerate(self.paths):
            try:
                rgb = _decode(path, self.orientation)
            except InputError as exc:
                if self.strict:
                    raise
                log.warning("skipping unreadable image %s: %s", path, exc)
                continue
            read += 1
            if not gate.keep(rgb):
                continue
            kept += 1
            yield Frame(index=i, timestamp_s=None, rgb=rgb, source=str(path), orientation=self.orientation)
            if self.max_frames is not None and kept >= self.max_frames:
                return
        if read == 0:
            raise InputError(
                f"no image could be read from {self.origin}: every file is corrupt or not an "
                f"image; supported types: {_supported('image')}"
            )


class VideoSource(FrameSource):
    kind = "video"

    def __init__(self, path: Path, probe_frames: int = 1, **kw):
        super().__init__(**kw)
        self.path = path
        self.width = self.height = 0
        self.codec = ""
        self._probe(probe_frames)

    # -- metadata
    def _open(self):
        import av

        try:
            container = av.open(str(self.path))
        except Exception as exc:  # av.error.FFmpegError and friends
            raise InputError(
                f"cannot decode video {self.path}: {_reason(exc)}; check the file plays, "
                "or re-encode it (e.g. ffmpeg -i in.mov -c:v libx264 out.mp4)"
            ) from exc
        if not container.streams.video:
            container.close()
            raise InputError(
                f"no frames in {self.path}: the file has no video stream; pass a video "
                "with a picture track, or extract images from it"
            )
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        # FFmpeg refuses (EINVAL) to allocate a picture over the limit: a bomb frame is never decoded
        stream.codec_context.options = {"max_pixels": str(max_pixels())}
        return container, stream

    def _probe(self, probe_frames: int = 1) -> None:
        """Metadata from the header, then the first ``probe_frames`` frames decoded (each held to the
        pixel limit; the first one's size is the video's)."""
        container, stream = self._open()
        try:
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.fps = float(rate) if rate else None
            self.codec = stream.codec_context.name if stream.codec_context else ""
            width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
            if width and height:  # from the header, before any frame is decoded
                try:
                    check_pixels(width, height, f"video {self.path.name} frames")
                except ValueError as exc:
                    raise InputError(str(exc)) from exc
            if stream.duration is not None and stream.time_base is not None:
                self.duration_s = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                self.duration_s = container.duration / 1_000_000  # AV_TIME_BASE
            count = int(stream.frames or 0)
            if count <= 0 and self.duration_s and self.fps:
                count = round(self.duration_s * self.fps)
            self.frame_count = count or None
            frames = self._decode(container, stream)
            try:
                first = next(frames, None)
                if first is not None:
                    self._check_frame(first, 0)
                rgb = None if first is None else _frame_rgb(first, self.orientation == "exif")[0]
                for index, frame in zip(range(1, probe_frames), frames, strict=False):  # range first: no extra decode
                    self._check_frame(frame, index)
            finally:
                frames.close()
            if rgb is None:
                raise InputError(
                    f"no frames could be decoded from {self.path}: the video stream is empty "
                    "or corrupt; check the file plays, or re-encode it"
                )
            self.height, self.width = rgb.shape[:2]
        finally:
            container.close()

    def describe(self) -> str:
        bits = [f"{self.width}x{self.height}"]
        if self.codec:
            bits.append(self.codec)
        if self.fps:
            bits.append(f"{self.fps:.2f} fps")
        if self.duration_s is not None:
            bits.append(f"{self.duration_s:.1f} s")
        if self.frame_count:
            bits.append(f"~{self.frame_count} frames")
        return f"video {self.path} ({', '.join(bits)}){self._sampling()}"

    def expected_count(self) -> int | None:
        """Frames this source is expected to yield (None when a motion threshold makes it unknown)."""
        if self.motion_threshold is not None:
            return None
        n = self.frame_count
        if self.every_s is not None and self.duration_s:
            n = math.ceil(self.duration_s / self.every_s - _TIME_TOLERANCE_S / self.every_s)
        if self.max_frames is not None:
            n = self.max_frames if n is None else min(n, self.max_frames)
        return n

    # -- decoding
    def _check_frame(self, frame, index: int) -> None:
        """InputError when decoded frame ``index`` is over the pixel limit (before it is converted)."""
        try:
            check_pixels(int(frame.width), int(frame.height), f"frame {index} of video {self.path.name}")
        except ValueError as exc:
            raise InputError(str(exc)) from None

    def _decode(self, container, stream):
        """Decoded ``av.VideoFrame``s; a decoding error after the first frame ends the stream with a
        warning (a truncated file), except a picture FFmpeg refused to allocate, an InputError."""
        import av

        n = 0
        try:
            for frame in container.decode(stream):
                n += 1
                yield frame
        except av.error.ArgumentError:  # EINVAL: a picture size over max_pixels or invalid
            raise InputError(
                f"cannot decode frame {n} of video {self.path.name}: its picture size is invalid or above "
                f"the limit of {max_pixels() / 1e6:.1f} megapixels; downscale the video, "
                "or raise EDGESCENE_MAX_PIXELS if this machine has the memory"
            ) from None
        except Exception as exc:  # av.error.FFmpegError: truncated or corrupt data
            if n == 0:
                raise InputError(
                    f"cannot decode video {self.path}: {_reason(exc)}; check the file plays, or re-encode it"
                ) from exc
            log.warning("video %s: decoding stopped after %d frames: %s", self.path, n, _reason(exc))

    def __iter__(self) -> Iterator[Frame]:
        container, stream = self._open()
        gate = _MotionGate(self.motion_threshold)
        start = stream.start_time if stream.start_time is not None else None
        tb = stream.time_base
        next_t = 0.0
        kept = 0
        frames = self._decode(container, stream)
        try:
            for index, frame in enumerate(frames):
                t = None
                if frame.pts is not None and tb is not None:
                    t = float((frame.pts - (start or 0)) * tb)
                elif self.fps:
                    t = index / self.fps
                if self.every_s is not None:
                    if t is None:
                        raise InputError(
                            f"cannot sample {self.path} every {self.every_s:g} s: the video has "
                            "no timestamps or frame rate; use max_frames instead, or re-encode it"
                        )
                    if t + _TIME_TOLERANCE_S < next_t:
                        continue
                    while next_t <= t + _TIME_TOLERANCE_S:  # next multiple of every_s after t
                        next_t += self.every_s
                self._check_frame(frame, index)
                rgb, rotated = _frame_rgb(frame, self.orientation == "exif")
                if not gate.keep(rgb):
                    continue
                kept += 1
                yield Frame(
                    index=index,
                    timestamp_s=t,
                    rgb=rgb,
                    source=f"{self.path}#f{index:06d}",
                    orientation=self.orientation,
                    rotation_deg=rotated,
                )
                if self.max_frames is not None and kept >= self.max_frames:
                    return
        finally:
            frames.close()
            container.close()


# 8-bit 4:2:0 layouts (nearly every video) -> full range?
_YUV420 = {"yuv420p": False, "yuvj420p": True}
_JPEG_RANGE = 2  # AVColorRange: 1 limited ("MPEG"), 2 full ("JPEG")


def frame_to_rgb(frame) -> np.ndarray:
    """PyAV video frame -> (H, W, 3) uint8 RGB. 8-bit 4:2:0 frames are converted by
    :func:`edgescene.core.color.yuv420_to_rgb`, the same pixels on every CPU (FFmpeg's converter
    differs by up to 2 levels between x86-64 and arm64); other layouts by FFmpeg's converter."""
    full_range = _YUV420.get(frame.format.name)
    if full_range is None:
        return frame.to_ndarray(format="rgb24")
    h, w = frame.height, frame.width
    ch, cw = (h + 1) // 2, (w + 1) // 2
    y, u, v = (
        np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:rows, :cols]
        for plane, (rows, cols) in zip(frame.planes[:3], ((h, w), (ch, cw), (ch, cw)), strict=True)
    )
    full_range = full_range or int(getattr(frame, "color_range", 0) or 0) == _JPEG_RANGE
    return yuv420_to_rgb(y, u, v, full_range=full_range)


def _frame_rgb(frame, apply_rotation: bool = False) -> tuple[np.ndarray, int]:
    """PyAV frame -> ((H, W, 3) uint8 RGB, degrees rotated), the display rotation (phone videos)
    applied only when asked (``orientation="exif"``)."""
    rgb = frame_to_rgb(frame)
    if not apply_rotation:
        return rgb, 0
    rotation = int(getattr(frame, "rotation", 0) or 0)  # degrees counter-clockwise, from the display matrix
    k = round(rotation / 90) % 4
    if k:
        rgb = np.ascontiguousarray(np.rot90(rgb, k))
    return rgb, 90 * k


def _reason(exc: BaseException) -> str:
    """What went wrong, in words: FFmpeg's errors come as ``[Errno 1094995529] Invalid data found ...:
    'avcodec_send_packet()'``; the number and the C function mean nothing to a user."""
    text = (getattr(exc, "strerror", None) or str(exc)).strip()
    text = re.sub(r"\[Errno -?\d+\]\s*", "", text)
    text = re.sub(r":\s*'\w+\(\)'(?:\s*returned -?\d+)?", "", text)
    return text or type(exc).__name__


# ----------------------------------------------------------------------------- entry point


def _check_options(
    every_s: float | None, max_frames: int | None, motion_threshold: float | None, orientation: str = "none"
) -> None:
    if orientation not in ("none", "exif"):
        raise InputError(
            f"orientation must be 'none' (pixels as stored, as upstream VGGT) or 'exif' (apply "
            f"EXIF orientation and video rotation), got {orientation!r}"
        )
    if every_s is not None and (
        isinstance(every_s, bool) or not isinstance(every_s, numbers.Real) or not math.isfinite(every_s) or every_s <= 0
    ):
        raise InputError(f"every_s must be a positive number of seconds, got {every_s!r}")
    if max_frames is not None and (
        isinstance(max_frames, bool) or not isinstance(max_frames, numbers.Integral) or max_frames < 1
    ):
        raise InputError(f"max_frames must be a positive integer, got {max_frames!r}")
    if motion_threshold is not None and (
        isinstance(motion_threshold, bool)
        or not isinstance(motion_threshold, numbers.Real)
        or not 0 <= motion_threshold <= 255
    ):
        raise InputError(
            f"motion_threshold must be a number in [0, 255] (mean grey-level difference), got {motion_threshold!r}"
        )


def _check_file(path: Path) -> str:
    """'image' or 'video' for an existing file with a supported extension."""
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path")
    if not path.is_file():
        raise InputError(f"{path} is not a file; pass an image, a folder of images or a video")
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    raise InputError(
        f"{path}: unsupported file type {ext or '(no extension)'!r}; supported images: "
        f"{_supported('image')}; videos: {_supported('video')}"
    )


def open_frames(
    source: str | Path | Sequence[str | Path],
    every_s: float | None = None,
    max_frames: int | None = None,
    motion_threshold: float | None = None,
    orientation: str = "none",
    probe_frames: int = 1,
) -> FrameSource:
    """Open an image, a folder of images (sorted naturally), a list of images, or a video.

    Validates paths, types and (for a video) that it opens and decodes its first ``probe_frames``
    frames (>= 1, each within the pixel limit); frames are then read lazily when the returned
    :class:`FrameSource` is iterated. See the module docstring for sampling (``every_s``,
    ``motion_threshold``, ``max_frames``), limits and errors (:class:`InputError`).
    """
    _check_options(every_s, max_frames, motion_threshold, orientation)
    if isinstance(probe_frames, bool) or not isinstance(probe_frames, numbers.Integral) or probe_frames < 1:
        raise InputError(f"probe_frames must be a positive integer, got {probe_frames!r}")
    kw = dict(
        every_s=every_s,
        max_frames=max_frames,
        motion_threshold=motion_threshold,
        orientation=orientation,
    )

    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.exists():
            raise InputError(f"{path} does not exist; check the path")
        if path.is_dir():
            files = [p for p in path.iterdir() if not p.name.startswith(".") and p.is_file()]
            images = sorted(
                (p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS), key=lambda p: natural_key(p.name)
            )
            if not images:
                videos = [p.name for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
                hint = f" (it holds video {videos[0]}: pass the video itself)" if videos else ""
                raise InputError(f"no images in folder {path}{hint}; supported types: {_supported('image')}")
            paths, origin, strict = images, f"folder {path}", False
        else:
            kind = _check_file(path)
            if kind == "video":
                return VideoSource(path, probe_frames=int(probe_frames), **kw)
            paths, origin, strict = [path], f"image {path}", True
    else:
        try:
            items = [Path(p).expanduser() for p in source]
        except TypeError as exc:
            raise InputError(f"source must be a path or a list of image paths, got {type(source).__name__}") from exc
        if not items:
            raise InputError("the list of images is empty; pass at least one image path")
        for p in items:
            if _check_file(p) == "video":
                raise InputError(f"{p} is a video inside a list of images; pass a video on its own")
        paths, origin, strict = items, f"a list of {len(items)} paths", False

    if every_s is not None:
        raise InputError(
            f"every_s applies to videos only, but {origin} is images; use max_frames or "
            "motion_threshold to thin images out"
        )
    return ImageSource(paths, origin, strict, **kw)
