"""Videos the tests encode with PyAV: frames that carry their own number as a barcode, and a live-style stream
without any duration."""

import av
import numpy as np

BITS = 9


def barcoded(n, size=72):
    """Frame i shows i in binary as BITS vertical bars (white = 1): survives lossy coding and resizing."""
    frames = np.zeros((n, size, size, 3), np.uint8)
    bar = size // BITS
    for i in range(n):
        for b in range(BITS):
            if (i >> b) & 1:
                frames[i, :, b * bar:(b + 1) * bar] = 255
    return frames


def read_code(frame):
    size = frame.shape[1]
    centres = [int((b + 0.5) * size / BITS) for b in range(BITS)]
    return sum(1 << b for b, c in enumerate(centres) if frame[size // 2, c].mean() > 128)


def live_mkv(path, n, side=320):
    """A Matroska stream written as a live one: no duration anywhere (container or stream)."""
    codes = barcoded(512, size=side)
    with av.open(str(path), "w", format="matroska", options={"live": "1"}) as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = side
        s.pix_fmt, s.options = "yuv420p", {"preset": "ultrafast"}
        for i in range(n):
            f = av.VideoFrame.from_ndarray(codes[i % 512], format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(path)) as c:
        assert not c.duration and not c.streams.video[0].duration
    return str(path)


def forged_duration_mkv(path, n=8, side=32, declared_ms=1e10):
    """A small Matroska file whose Segment Duration (EBML id 0x4489, a float of ticks of 1 ms) declares
    `declared_ms` while its packets span n frames at 25 fps: a header that lies."""
    import struct

    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = side
        s.pix_fmt, s.options = "yuv420p", {"preset": "ultrafast"}
        for f in barcoded(n, size=side):
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    data = bytearray(open(path, "rb").read())
    at = data.find(b"\x44\x89")
    assert at > 0, "no Duration element"
    size = data[at + 2] & 0x7F  # a one-byte EBML size: 4 or 8
    data[at + 3: at + 3 + size] = struct.pack(">f" if size == 4 else ">d", declared_ms)
    open(path, "wb").write(bytes(data))
    with av.open(str(path)) as c:
        assert c.duration / 1e6 > 1e6, c.duration  # FFmpeg believes the header
    return str(path)


def png_bomb_mov(path, side=16000):
    """One side x side grayscale PNG frame muxed into a MOV without re-encoding: about a megabyte on disk,
    side * side bytes (256 MB at 16000) once decoded, and FFmpeg decodes one frame to probe it."""
    import fractions
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, format="PNG")
    with av.open(str(path), "w", format="mov") as c:
        s = c.add_stream("png", rate=1)
        s.width = s.height = side
        s.pix_fmt = "gray"
        packet = av.Packet(buf.getvalue())
        packet.stream, packet.pts, packet.dts = s, 0, 0
        packet.time_base = s.time_base or fractions.Fraction(1, 1)
        packet.is_keyframe = True
        c.mux(packet)
    return str(path)
