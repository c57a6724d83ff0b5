"""How decoded clips are stored in the clip cache: raw uint8 frames, or JPEG per frame (the default).

    blob = encode_clip(frames, "jpeg", quality=90)    # frames uint8 (T, S, S, 3) -> bytes
    frames = decode_clip(blob, "jpeg", (T, S, S, 3))  # bytes -> uint8 (T, S, S, 3)

JPEG at quality 90 keeps 12 x 224 px clips at about a tenth of raw (bench/cache.py measures it); decoding runs in
Ray Data's CPU tasks, not on the training worker. A JPEG blob is `NCLJ`, T as uint32, T uint32 lengths, then the
T JPEG files. No torch, no Ray (decode tasks import this).
"""

import io
import struct
from typing import List, Tuple

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

    out = np.empty(shape, np.uint8)
    for i, part in enumerate(jpeg_parts(blob, shape[0])):
        img = Image.open(io.BytesIO(part))
        img.draft("RGB", (shape[2], shape[1]))
        out[i] = np.asarray(img.convert("RGB"))
    return out


def jpeg_parts(blob: bytes, n_frames: int) -> List[memoryview]:
    """The T JPEG files of a JPEG clip blob (views, no copies); a blob of the wrong format or frame count
    raises ValueError. Shared by the CPU decoder above and the GPU one (gpujpeg.py)."""
    if blob[:4] != MAGIC:
        raise ValueError("not a JPEG clip blob")
    (n,) = struct.unpack_from("<I", blob, 4)
    if n != n_frames:
        raise ValueError(f"JPEG clip holds {n} frames, expected {n_frames}")
    lengths = struct.unpack_from(f"<{n}I", blob, 8)
    view, pos, parts = memoryview(blob), 8 + 4 * n, []
    for length in lengths:
        if pos + length > len(blob):
            raise ValueError("JPEG clip blob is truncated")
        parts.append(view[pos: pos + length])
        pos += length
    return parts
