"""Checks on uploaded files: a type check by name and by content, a size limit, safe names and paths.

A reconstruction upload is either images (one or more) or exactly one video. A file is accepted
when its extension is one the runtime reads (``edgescene.runtime.frames``) *and* its first bytes
carry that kind's signature, so a renamed executable or a text file never reaches a decoder.
Uploads are written to disk in chunks while counting bytes; past the limit the partial file is
deleted and :class:`UploadTooLarge` raised.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from edgescene.runtime.frames import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from edgescene.runtime.outputs import redact_paths

CHUNK = 1 << 20


class UploadError(ValueError):
    """A rejected upload; ``status`` is the HTTP status the service answers with."""

    status = 400


class UploadTooLarge(UploadError):
    status = 413


class UnsupportedType(UploadError):
    status = 415


def _is_image(head: bytes) -> bool:
    return (
        head.startswith(b"\xff\xd8\xff")  # JPEG
        or head.startswith(b"\x89PNG\r\n\x1a\n")
        or head.startswith(b"BM")
        or head[:4] in (b"II*\x00", b"MM\x00*")  # TIFF
        or (head.startswith(b"RIFF") and head[8:12] == b"WEBP")
        or (len(head) >= 2 and head[0:1] == b"P" and head[1:2] in b"123456")
    )  # PNM


def _is_video(head: bytes) -> bool:
    return (
        head[4:8] == b"ftyp"  # MP4 / MOV (ISO base media)
        or head[4:8] in (b"moov", b"mdat", b"wide", b"free")  # older QuickTime
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
        or head.startswith(b"\x1a\x45\xdf\xa3")
    )  # Matroska / WebM


def kind_of(name: str, head: bytes) -> str:
    """``image`` or ``video`` for an acceptable file, else :class:`UnsupportedType` naming the fix."""
    suffix = PurePosixPath(name).suffix.lower()
    supported = f"images {', '.join(IMAGE_EXTENSIONS)}; videos {', '.join(VIDEO_EXTENSIONS)}"
    if suffix in IMAGE_EXTENSIONS:
        if not _is_image(head):
            raise UnsupportedType(
                f"{name!r} is named like an image but its content is not a known image format; "
                f"upload the original file ({supported})"
            )
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        if not _is_video(head):
            raise UnsupportedType(
                f"{name!r} is named like a video but its content is not a known video container; "
                f"upload the original file ({supported})"
            )
        return "video"
    raise UnsupportedType(f"{name!r}: unsupported file type {suffix or '(no extension)'!r}; upload {supported}")


def safe_name(name: str, index: int) -> str:
    """A plain file name for an upload (no folders, no leading dots), prefixed to keep upload order."""
    base = PurePosixPath(name.replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".") or "upload"
    return f"{index:04d}_{base[-100:]}"


def check_kinds(kinds: list[str]) -> str:
    """The upload's kind: ``images`` (one or more images) or ``video`` (exactly one video)."""
    if not kinds:
        raise UploadError("no files uploaded; send one video or one or more images in the 'files' field")
    if "video" in kinds:
        if len(kinds) > 1:
            raise UploadError("send either one video or images, not several files with a video among them")
        return "video"
    return "images"


def save_stream(source: BinaryIO, target: Path, limit_bytes: int, used_bytes: int = 0) -> int:
    """Copy ``source`` to ``target`` in chunks; returns bytes written. Over ``limit_bytes`` in total
    (``used_bytes`` already taken by earlier files of the upload) the file is removed and
    :class:`UploadTooLarge` raised."""
    written = 0
    try:
        with open(target, "xb") as out:
            while chunk := source.read(CHUNK):
                written += len(chunk)
                if used_bytes + written > limit_bytes:
                    raise UploadTooLarge(
                        f"upload larger than the limit of {limit_bytes / 2**20:.0f} MiB; send fewer or "
                        "smaller files (or start the service with a larger --max-upload-mb)"
                    )
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return written


class UnreadableInput(UploadError):
    status = 422


def client_name(path: Path) -> str:
    """The name the client gave a saved upload (:func:`safe_name`'s index prefix is ours)."""
    return path.name.split("_", 1)[-1]


def check_decodable(
    path: Path,
    kind: str,
    every_s: float | None = None,
    max_frames: int | None = None,
    probe_frames: int = 1,
    check_size: Callable[[int, int], None] | None = None,
):
    """Refuse, at submission, what the job could not decode safely: an image or video whose header
    declares more pixels than the limit (413, before any decoding: a pixel bomb never reaches a
    decoder), a video with a frame over the limit among its first ``probe_frames`` (413: FFmpeg is
    told the limit, so it never allocates such a picture), or a video with no decodable frame (422).
    ``check_size(height, width)``, when given, refuses (422) an image or a video's first frame the
    model cannot take (a 20000 x 1 strip), so it fails here, not in the queue.
    For a video, returns its probed :class:`~edgescene.runtime.frames.FrameSource` with the job's
    sampling (for its budget check)."""
    from PIL import UnidentifiedImageError

    from edgescene.core.preprocess import open_image_checked
    from edgescene.runtime.frames import InputError, open_frames

    name = client_name(path)
    if kind == "image":
        try:
            with open_image_checked(path) as image:
                width, height = image.size
        except ValueError as exc:
            raise UploadTooLarge(str(exc).replace(path.name, name)) from exc
        except (UnidentifiedImageError, OSError) as exc:
            why = redact_paths(str(exc).replace(str(path), name).replace(path.name, name))
            if isinstance(exc, UnidentifiedImageError):
                why = "not an image Pillow recognises"
            raise UnreadableInput(f"image {name} cannot be read ({why}); send a PNG or JPEG") from exc
        _check_size(check_size, height, width, f"image {name}")
        return None
    try:  # probes the header (size checked first), then decodes the first probe_frames frames
        source = open_frames(path, every_s=every_s, max_frames=max_frames, probe_frames=probe_frames)
    except InputError as exc:
        message = str(exc).replace(str(path), name).replace(path.name, name)  # the client's name, not ours
        raise (UploadTooLarge if "megapixels" in message else UnreadableInput)(message) from exc
    _check_size(check_size, source.height, source.width, f"video {name}")
    return source


def _check_size(check_size: Callable[[int, int], None] | None, height: int, width: int, what: str) -> None:
    if check_size is None:
        return
    try:
        check_size(height, width)
    except ValueError as exc:
        raise UnreadableInput(f"{what}: {exc}") from exc


def resolve_inside(folder: Path, relative: str) -> Path:
    """``folder / relative`` if it stays inside ``folder`` (after resolving links and ``..``), else
    ``FileNotFoundError``: a client never reads outside the folder it was given."""
    root = folder.resolve()
    if not relative or "\x00" in relative or PurePosixPath(relative).is_absolute():
        raise FileNotFoundError(relative)
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise FileNotFoundError(relative)
    return target


__all__ = [
    "UploadError",
    "UploadTooLarge",
    "UnsupportedType",
    "check_kinds",
    "kind_of",
    "resolve_inside",
    "safe_name",
    "save_stream",
]
