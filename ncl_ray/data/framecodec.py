"""How decoded clips are stored in the clip cache: raw uint8 frames, or JPEG per frame (the default).

    blob = encode_clip(frames, "jpeg", quality=90)    # frames uint8 (T, S, S, 3) -> bytes
    frames = decode_clip(blob, "jpeg", (T, S, S, 3))  # bytes -> uint8 (T, S, S, 3)

JPEG at quality 90 keeps 12 x 224 px clips at about a tenth of raw (bench/cache.py measures it); decoding runs in
Ray Data's CPU tasks, not on the training worker. A JPEG blob is `NCLJ`, T as uint32, T uint32 lengths, then the
T JPEG files. No torch, no Ray (decode tasks import this).
"""

import io
import struct
from typing import Tuple

import numpy as np

ENCODINGS = ("raw", "jpeg")
MAGIC = b"NCLJ"


def encode_clip(frames: np.ndarray, encoding: str = "jpeg", quality: int = 90) -> bytes:
    """uint8 (T, S, S, 3) -> bytes in the given encoding."""
    if encoding == "raw":
        return np.ascontiguousarray(frames, dtype=np.uint8).tobytes()
    if encoding != "jpeg":
        raise ValueError(f"unknown clip encoding {encoding!r} (choose from {', '.join(ENCODINGS)})")
    from PIL import Image

    parts = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(f)).save(buf, format="JPEG", quality=quality, subsampling=0)
        parts.append(buf.getvalue())
    header = MAGIC + struct.pack(f"<I{len(parts)}I", len(parts), *[len(p) for p in parts])
    return header + b"".join(parts)


def decode_clip(blob: bytes, encoding: str, shape: Tuple[int, int, int, int]) -> np.ndarray:
    """bytes -> uint8 `shape` (T, S, S, 3); a blob of the wrong size or format raises ValueError."""
    if encoding == "raw":
        arr = np.frombuffer(blob, np.uint8)
        if arr.size != int(np.prod(shape)):
            raise ValueError(f"raw clip of {arr.size} bytes, expected {int(np.prod(shape))}")
        return arr.reshape(shape)
    if encoding != "jpeg":
        raise ValueError(f"unknown clip encoding {encoding!r}")
    from PIL import Image

    if blob[:4] != MAGIC:
        raise ValueError("not a JPEG clip blob")
    (n,) = struct.unpack_from("<I", blob, 4)
    lengths = struct.unpack_from(f"<{n}I", blob, 8)
    if n != shape[0]:
        raise ValueError(f"JPEG clip holds {n} frames, expected {shape[0]}")
    out = np.empty(shape, np.uint8)
    pos = 8 + 4 * n
    for i, length in enumerate(lengths):
        img = Image.open(io.BytesIO(blob[pos: pos + length]))
        img.draft("RGB", (shape[2], shape[1]))
        out[i] = np.asarray(img.convert("RGB"))
        pos += length
    return out
