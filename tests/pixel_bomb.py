"""A decompression bomb for the tests: a tiny PNG whose header declares ``width x height`` pixels
(its pixel data is a few compressed rows, so nothing decodes it completely), and videos with such
frames or without a duration in their header."""

from __future__ import annotations

import io
import struct
import zlib


def bomb_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    data = zlib.compress(b"\x00" * (3 * width + 1) * 8, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def big_jpeg(width: int, height: int) -> bytes:
    """A real grey JPEG of ``width x height`` black pixels at quality 5: 12000 x 10000 is 1.4 MB of
    file and 120 MB decoded (360 MB as RGB). Building it takes about 0.3 s and 120 MB here."""
    import cv2
    import numpy as np

    ok, data = cv2.imencode(".jpg", np.zeros((height, width), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 5])
    if not ok:
        raise RuntimeError("cv2 could not encode the JPEG")
    return data.tobytes()


def mjpeg_mkv(path, jpegs: list[bytes], fps: int = 10, duration_in_header: bool = True):
    """A Matroska file of motion-JPEG frames, one packet per JPEG, written as they are (so a frame
    may have a size other than the stream's); ``duration_in_header=False`` writes it as a live
    stream, whose header says neither its duration nor its frame count. Returns ``path``."""
    from fractions import Fraction

    import av

    first = av.open(io.BytesIO(jpegs[0]), format="mjpeg")
    try:
        width, height = first.streams.video[0].codec_context.width, first.streams.video[0].codec_context.height
    finally:
        first.close()
    options = {} if duration_in_header else {"live": "1"}
    with av.open(str(path), "w", format="matroska", options=options) as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        for i, data in enumerate(jpegs):
            packet = av.Packet(data)
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, fps)
            container.mux(packet)
    return path
