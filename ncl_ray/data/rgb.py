"""Decoded frames to the rows of a uint8 RGB clip (T, S, S, 3): scale, convert, rotate, centre-crop. No Ray."""

from typing import Optional

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image


def to_rgb(frame: av.VideoFrame, size: int, reformatter=None, out: Optional[np.ndarray] = None,
           resize: str = "area") -> np.ndarray:
    """Shorter side to `size` in FFmpeg, rotate for display, centre-crop: uint8 (size, size, 3). One
    `reformatter` reused across a clip keeps one swscale context instead of building one per frame. swscale
    writes planar RGB (gbrp): its packed-RGB output path costs about 30 % more CPU and, at 720p -> 224, lands
    more than twice as far from an exact float area resize (mean |error| 8.9 vs 3.9 of 255). `resize="clip4clip"`
    uses CLIP's PIL bicubic resize and crop instead (`clip_frame`)."""
    if resize == "clip4clip":
        rgb = clip_frame(frame, size)
        if out is None:
            return rgb
        out[...] = rgb
        return out
    k = (int(round((frame.rotation or 0) / 90.0))) % 4
    w, h = frame.width, frame.height
    scale = size / min(w, h)
    sw, sh = max(size, round(w * scale)), max(size, round(h * scale))
    planar = (reformatter or VideoReformatter()).reformat(frame, width=sw, height=sh, format="gbrp",
                                                          interpolation="AREA")
    g, b, r = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in planar.planes)
    H, W = (sh, sw) if k % 2 == 0 else (sw, sh)  # after rotation
    top, left = (H - size) // 2, (W - size) // 2
    out = np.empty((size, size, 3), np.uint8) if out is None else out  # (size, size, 3) RGB
    for i, c in enumerate((r, g, b)):  # (sh, sw) views of the frame's own buffers: rotate, crop, one copy
        if k:
            c = np.rot90(c, k=k)  # counter-clockwise, as the display matrix says
        out[:, :, i] = c[top: top + size, left: left + size]
    return out


class ClipRows:
    """Writes frames into the clip's rows in batches: the swscale context stays in cache through a batch, where
    converting each frame as it comes, between decodes that evict it, costs about twice the CPU. At most
    `hold_bytes` of decoded frames are held; a frame repeated by consecutive samples is converted once."""

    def __init__(self, clip: np.ndarray, hold_bytes: int, resize: str = "area"):
        self.clip, self.hold_bytes, self.resize = clip, hold_bytes, resize
        self.held: list = []  # (frame, row)
        self.bytes = 0
        self.last = None  # the frame behind the last row written
        self.reformatter = VideoReformatter()

    def add(self, frame: av.VideoFrame, row: int) -> None:
        if not (self.held and self.held[-1][0] is frame):
            self.bytes += sum(p.buffer_size for p in frame.planes)
        self.held.append((frame, row))
        if self.bytes > self.hold_bytes:
            self.flush()

    def flush(self) -> None:
        size = self.clip.shape[1]
        for frame, row in self.held:
            if frame is self.last:
                self.clip[row] = self.clip[row - 1]
            else:
                to_rgb(frame, size, self.reformatter, out=self.clip[row], resize=self.resize)
                self.last = frame
        self.held, self.bytes = [], 0


def clip_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """CLIP's Resize(size, bicubic) + CenterCrop(size) on one uint8 (H, W, 3) frame -> (size, size, 3)."""
    h, w = rgb.shape[:2]
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    img = Image.fromarray(rgb).resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return np.asarray(img.crop((left, top, left + size, top + size)))


def clip_frame(frame: av.VideoFrame, size: int) -> np.ndarray:
    """One decoded frame, rotated for display, through CLIP's resize: uint8 (size, size, 3)."""
    rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3)
    k = (int(round((frame.rotation or 0) / 90.0))) % 4
    if k:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=k))
    return clip_resize(rgb, size)
