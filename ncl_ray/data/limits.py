"""Bounds on what one video may cost to decode: pixels per frame, frames held, seconds. No Ray, no torch.

A crafted or broken file must fail with a DecodeError naming it, not take a decode task's memory or time:
- MAX_FRAME_PIXELS: a 1.9 MB 16000 x 16000 MP4 took 1.16 GB to decode one frame; frames larger than 8K UHD
  are refused before any full-size frame exists: `open_media` passes FFmpeg's `max_pixels` to the decoders
  that probing opens (FFmpeg decodes a frame inside `av.open` to learn a stream's parameters: a 16000 x 16000
  PNG-in-MOV cost 780 MB and 3.3 s there before), and to the decoder that decodes the frames;
- a stream without a recorded duration used to be decoded into a list of every frame (892 MB and growing for
  a 20 KB MKV): `StridedFrames` keeps at most 2 x `cap` small converted frames, halving them (every other one)
  and doubling its stride whenever it fills, so the memory is bounded whatever the length;
- MAX_SECOND_FRAMES: CLIP4Clip's sampler keeps one frame per second of video, converted: at most an hour;
- MAX_DECODE_S: a deadline per video.
"""

import os
import stat
import time
from typing import List, Optional

import av
import numpy as np

MAX_FRAME_PIXELS = 7680 * 4320  # 8K UHD
MAX_SECOND_FRAMES = 3600  # CLIP4Clip's sampler: one frame per second, for at most an hour of video
MAX_DECODE_S = 300.0


class DecodeError(RuntimeError):
    """A video could not be decoded; `path` names it and `reason` says why."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class Deadline:
    """`check()` raises DecodeError once MAX_DECODE_S (or `seconds`) have passed since construction."""

    def __init__(self, path: str, seconds: Optional[float] = None):
        self.path, self.seconds = path, MAX_DECODE_S if seconds is None else seconds
        self.end = time.monotonic() + self.seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise DecodeError(self.path, f"decoding took longer than {self.seconds:g} s")


def open_media(path: str):
    """`av.open` for reading with FFmpeg's decoders capped at MAX_FRAME_PIXELS while it probes the streams;
    DecodeError naming the file when FFmpeg cannot read it."""
    try:
        return av.open(path, metadata_errors="ignore", options={"max_pixels": str(MAX_FRAME_PIXELS)})
    except (av.error.FFmpegError, OSError) as e:
        raise DecodeError(path, f"not a readable media file ({type(e).__name__}: {e})") from None


def check_frame_size(stream, path: str) -> None:
    """Refuse a stream whose frames exceed MAX_FRAME_PIXELS (from its header, nothing decoded), or whose size
    probing could not learn (its first frame was over the cap, so FFmpeg refused to decode it); then cap the
    decoder that will decode it the same way (a stream that changes size midway)."""
    w, h = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if w * h > MAX_FRAME_PIXELS:
        raise DecodeError(path, f"frames of {w}x{h} pixels exceed the limit of {MAX_FRAME_PIXELS} (8K UHD)")
    if w * h == 0:
        raise DecodeError(path, f"no frame size in the stream's header, and its first frame could not be decoded "
                                f"within the limit of {MAX_FRAME_PIXELS} pixels (8K UHD)")
    stream.codec_context.options = {**stream.codec_context.options, "max_pixels": str(MAX_FRAME_PIXELS)}


class StridedFrames:
    """Every `stride`-th item of a stream of unknown length, at most 2 x cap held: when full, every other one
    is dropped and the stride doubles, so what is held stays evenly spaced over what was seen."""

    def __init__(self, cap: int):
        self.cap, self.stride, self.seen = max(1, cap), 1, 0
        self.items: List = []

    def offer(self, index: int) -> bool:
        """Whether item `index` (0, 1, 2, ... in order) should be kept; call `add` with it if so."""
        self.seen = index + 1
        return index % self.stride == 0

    def add(self, item) -> None:
        self.items.append(item)
        if len(self.items) >= 2 * self.cap:
            self.items = self.items[::2]
            self.stride *= 2

    def pick(self, n: int) -> List:
        """n items evenly spaced over what is held (the centres of n equal slices)."""
        k = len(self.items)
        idx = np.minimum((np.arange(n) + 0.5) * k / n, k - 1).astype(int)
        return [self.items[i] for i in idx]


def check_file(path: str) -> None:
    """A missing, empty or non-regular file (a folder, a FIFO that would block, a device), named, before FFmpeg
    sees it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DecodeError(path, "file not found") from None
    except OSError as e:
        raise DecodeError(path, f"cannot be read ({e.strerror})") from None
    if stat.S_ISDIR(mode):
        raise DecodeError(path, "a folder, not a video file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise DecodeError(path, f"{kind}, not a regular file")
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "empty file (0 bytes)")
