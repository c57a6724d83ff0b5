"""Moments inside long videos: fixed-length time windows, each decoded like a training clip. No Ray.

    spans = plan_windows(duration_s=120.0, length_s=10.0, stride_s=5.0)   # [(0.0, 10.0), (5.0, 15.0), ...]
    clips = decode_windows("long.mp4", spans, num_frames=12, size=224)    # uint8 (W, 12, 224, 224, 3)

Each window gets the training sampler's frames inside its own span (the centres of T equal slices of it), so a
window is embedded exactly as a training clip of that length would be. All windows of a video are decoded in one
forward pass of the seek-based decoder (decode.py): their sample times are merged and sorted, and overlapping
windows share the frames they sample at the same times. A video shorter than one window is one window, the
whole video; the last window ends at the video's end (it may overlap the one before more than the stride).
"""

from typing import List, Tuple

import av
import numpy as np

from ncl_ray.data.decode import decode_frames, sample_times
from ncl_ray.data.limits import DecodeError, Deadline, check_file, check_frame_size, open_media

Span = Tuple[float, float]  # (start_s, end_s), seconds from the stream's start


def video_duration(path: str) -> float:
    """Seconds of video the stream really holds: from its first packet to the end of its last, read from the
    packets (demuxed, nothing decoded), never more than the header declares. A header alone is not trusted: a
    30 kB MKV declaring 1e10 ms would plan millions of windows. DecodeError if no packet has a timestamp."""
    check_file(path)
    container = open_media(path)
    try:
        if not container.streams.video:
            raise DecodeError(path, "no video stream (audio-only or other data)")
        stream = container.streams.video[0]
        check_frame_size(stream, path)
        tb, deadline = stream.time_base, Deadline(path)
        first, last = None, None
        for n, packet in enumerate(container.demux(stream)):
            if n % 256 == 0:
                deadline.check()
            if packet.pts is None or packet.size == 0:
                continue
            a = float(packet.pts * tb)
            b = a + float((packet.duration or 0) * tb)
            first = a if first is None else min(first, a)
            last = b if last is None else max(last, b)
        declared = float(stream.duration * tb) if stream.duration else (
            container.duration / 1e6 if container.duration else None)
    except av.error.FFmpegError as e:
        raise DecodeError(path, f"not a readable media file ({type(e).__name__}: {e})") from None
    finally:
        container.close()
    if first is None:
        raise DecodeError(path, "no timestamped video packet: it cannot be cut into time windows")
    found = max(last - first, 0.0)
    return min(found, declared) if declared and declared > 0 else found


def plan_windows(duration_s: float, length_s: float, stride_s: float) -> List[Span]:
    """Windows of `length_s` every `stride_s` covering [0, duration_s]; one window when the video is shorter."""
    if length_s <= 0 or stride_s <= 0:
        raise ValueError(f"window length and stride must be positive, got {length_s} and {stride_s}")
    if duration_s <= length_s:
        return [(0.0, float(duration_s))]
    starts = list(np.arange(0.0, duration_s - length_s + 1e-9, stride_s))
    if duration_s - (starts[-1] + length_s) > 1e-6:  # the tail: a last window ending at the video's end
        starts.append(duration_s - length_s)
    return [(round(float(a), 3), round(float(a) + length_s, 3)) for a in starts]


def decode_windows(path: str, spans: List[Span], num_frames: int, size: int, threads: int = 1,
                   resize: str = "area") -> np.ndarray:
    """uint8 (W, T, size, size, 3): each window's T frames at the centres of T equal slices of its span."""
    times = [t for a, b in spans for t in sample_times(a, b - a, num_frames)]  # (W * T,) window by window
    order = np.argsort(times, kind="stable")
    frames = decode_frames(path, num_frames, size, threads, resize=resize,
                           at=[times[i] for i in order])  # (W * T, S, S, 3) in time order
    out = np.empty_like(frames)
    out[order] = frames  # back to window order
    return out.reshape(len(spans), num_frames, size, size, 3)
