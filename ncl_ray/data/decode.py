"""Sparse, seek-based PyAV decoding of T uniformly spaced frames from a video. No Ray.

    frames = decode_frames("clip.mp4", num_frames=12, size=224)   # uint8 (12, 224, 224, 3)

Sample times are the centres of T equal slices of the stream's duration, t_k = start + (k + 0.5) * dur / T,
and frame k is the last frame shown at t_k (presentation timestamps, so variable frame rate is handled).
Between samples the decoder runs forward; it jumps only when the keyframe before the next sample lies ahead of
the decoder (keyframe times are read from the packets first, without decoding), so a 12-frame clip of a long
video decodes a few GOPs, not the file, and never goes back to a keyframe it has already decoded past. That
packet scan keeps the packets of a stream up to KEEP_PACKET_BYTES, and the decoder then reads them from memory
(a jump is a position in the list); a larger stream is read again, with seeks to each keyframe's decode time.
The scan also tells which frame each sample shows (see packets.py): decoding stops on it (not one frame past
it), FFmpeg skips the non-reference frames (B-frames, usually) that no sample shows, which nothing else depends
on, and where a jump follows anyway the decoder is drained of the frames it holds back for reordering instead
of being fed more packets to push them out.
Scaling (shorter side to `size`), the RGB conversion, rotation and the centre crop are rgb.py's, on batches of
held frames. `jitter` (a NumPy generator) draws each sample time uniformly inside its slice instead of at the
centre (augmentation for streaming). A video with fewer frames than T repeats frames. Any failure raises
`DecodeError` naming the file; nothing is ever replaced by black frames.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import av
import numpy as np

from ncl_ray.config.rules import ConfigError
from ncl_ray.data.cursor import Cursor, decoded_frames
from ncl_ray.data.limits import DecodeError, Deadline, StridedFrames, check_file, check_frame_size, open_media
from ncl_ray.data.packets import drain_after, packet_index, seek_needed, target_pts
from ncl_ray.data.rgb import ClipRows, to_rgb
from ncl_ray.runtime import storage

DECODER_VERSION = "3"  # part of the clip-cache key: bump when the output of decode_frames changes
KEEP_PACKET_BYTES = 64 << 20  # a video stream up to this size is read once and decoded from memory
HOLD_FRAME_BYTES = 32 << 20  # decoded frames held for conversion in one batch
SEEK_GAP_S = 1.0  # without keyframe times: seek when the next sample is this far ahead of the decoder


def sample_times(start: float, duration: float, num_frames: int,
                 jitter: Optional[np.random.Generator] = None) -> List[float]:
    """Centres of `num_frames` equal slices of [start, start + duration), or with `jitter` a uniform time
    inside each slice (still increasing)."""
    offsets = jitter.uniform(0.0, 1.0, num_frames) if jitter is not None else np.full(num_frames, 0.5)
    return [start + (k + float(offsets[k])) * duration / num_frames for k in range(num_frames)]


def decode_frames(path: str, num_frames: int, size: int, threads: int = 1,
                  stats: Optional[dict] = None, jitter: Optional[np.random.Generator] = None,
                  resize: str = "area", at: Optional[List[float]] = None) -> np.ndarray:
    """Decode `num_frames` uniformly spaced frames of `path` as uint8 (T, size, size, 3).

    Args:
        path: a video file any FFmpeg demuxer reads (mp4, webm, avi, mkv, ...).
        num_frames: T, frames sampled over the whole duration.
        size: output side; shorter-side resize then centre crop.
        threads: FFmpeg decoding threads for this call; 0 lets FFmpeg choose (1 suits many parallel tasks).
        stats: if given, receives `decoded` (frames decoded), `seeks` and `corrupt_packets`.
        jitter: draw each sample time uniformly inside its slice (augmentation); None = slice centres.
        resize: area (FFmpeg's area filter) or clip4clip (CLIP's PIL bicubic resize and crop).
        at: explicit sample times, seconds from the stream's start, ascending (windows.py); then T = len(at).
    Raises:
        DecodeError: missing, empty, truncated or non-video files, or no decodable frame.
    """
    path = str(path)
    check_file(path)
    container = open_media(path)
    try:
        stream, start, duration = _video_stream(container, path, threads)
        deadline = Deadline(path)
        counts = [0, 0]  # corrupt packets skipped, packets fed to the decoder
        if at is not None:
            num_frames = len(at)
            if not duration or duration <= 0:
                raise DecodeError(path, "no duration in the container: it cannot be cut into time windows")
        if not duration or duration <= 0:
            return _decode_all(container, stream, num_frames, size, counts, path, resize, deadline)
        clip = np.empty((num_frames, size, size, 3), dtype=np.uint8)  # (T, size, size, 3)
        filled = 0
        index = packet_index(container, stream, KEEP_PACKET_BYTES)  # from the packets, nothing decoded
        keys, pts, tb = index.keys, index.pts, stream.time_base
        times = sample_times(start, duration, num_frames, jitter) if at is None else [start + t for t in at]
        shown = target_pts(pts, times, tb)  # the frame each sample shows, when the packets say so
        # decoding stops on the known frame, except on the last one: a sample past it must reach the stream's
        # end, where a truncated file is told apart from a short last frame
        targets = [p if pts and p != pts[-1] else None for p in shown]
        cursor = Cursor(container, stream, index, counts, set(shown) if pts else None, deadline, start)
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        end_slack = max(0.5, 3.0 / rate) if rate else 0.5  # samples this far past the last frame: truncated
        rows = ClipRows(clip, HOLD_FRAME_BYTES, resize)
        for k, (t, target) in enumerate(zip(times, targets)):
            if seek_needed(keys, t, cursor.cur_time, SEEK_GAP_S, cursor.cur is not None):
                cursor.seek(t)
            if cursor.drain is not None:
                cursor.drain["at"] = target if drain_after(k, keys, times, shown, targets, tb, SEEK_GAP_S) else None
            frame = cursor.advance(t, target)
            if cursor.ended and cursor.cur is not None and t - cursor.cur_time > end_slack:
                raise DecodeError(path, f"truncated: frames stop at {cursor.cur_time:.2f}s of {duration:.2f}s")
            if frame is None:
                break
            rows.add(frame, filled)
            filled += 1
        rows.flush()
        if stats is not None:
            stats.update(decoded=cursor.decoded, seeks=cursor.seeks, packets=counts[1], corrupt_packets=counts[0],
                         packets_in_memory=index.packets is not None)
        if filled < num_frames:
            raise DecodeError(path, f"no decodable frame ({counts[0]} corrupt packets)" if not filled
                              else f"stream ended early: {filled} of {num_frames} samples")
        return clip
    except DecodeError:
        raise
    except (av.error.FFmpegError, OSError) as e:
        raise DecodeError(path, f"decoding failed ({type(e).__name__}: {e})") from None
    finally:
        container.close()


def _video_stream(container, path: str, threads: int):
    """(the first video stream, its start and duration in seconds (None when unknown)), checked to be a video
    within the frame-size limit, with `threads` FFmpeg threads (1: no helper threads, so N parallel decode
    tasks on N cores do not oversubscribe)."""
    if not container.streams.video:
        raise DecodeError(path, "no video stream (audio-only or other data)")
    if container.format.name == "image2" or container.format.name.endswith("_pipe"):
        raise DecodeError(path, f"an image ({container.format.name}), not a video")
    stream = container.streams.video[0]
    check_frame_size(stream, path)
    if threads > 0:
        stream.codec_context.thread_count = threads
    if threads != 1:
        stream.thread_type = "AUTO"  # frame and slice threading
    tb = stream.time_base
    start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
    if stream.duration:
        return stream, start, float(stream.duration * tb)
    return stream, start, (container.duration / 1e6 if container.duration else None)


def decode_video(path: str, num_frames: int, size: int, threads: int = 1, sampler: str = "uniform",
                 resize: str = "area", jitter: Optional[np.random.Generator] = None) -> Tuple[np.ndarray, int]:
    """(frames uint8 (T, S, S, 3), real frames n) with `data.sampler` and `data.resize`: uniform = decode_frames
    (n = T); clip4clip = CLIP4Clip's frames (clip4clip_frames.py: n <= T, zero frames after them). A video on
    object storage (s3://...) is copied to a local temporary file for FFmpeg first, and errors name its URI."""
    if storage.is_uri(str(path)):
        try:
            with storage.temp_copy(str(path)) as local:
                try:
                    return decode_video(local, num_frames, size, threads, sampler, resize, jitter)
                except DecodeError as e:
                    raise DecodeError(str(path), e.reason) from None
        except (OSError, ConfigError) as e:  # pyarrow: no such object, access denied, unreachable
            raise DecodeError(str(path), f"cannot be read from storage ({str(e).splitlines()[0][:200]})") from None
    if sampler == "clip4clip":
        from ncl_ray.data.clip4clip_frames import decode_clip4clip

        check_file(str(path))
        return decode_clip4clip(str(path), num_frames, size, resize, threads)
    if sampler != "uniform":
        raise ValueError(f"data.sampler={sampler!r}: expected uniform or clip4clip")
    return decode_frames(path, num_frames, size, threads=threads, jitter=jitter, resize=resize), num_frames


@dataclass(frozen=True)
class ClipSpec:
    """How a video becomes a clip: T frames of S x S px by a sampler and a resize, decoded with `threads` FFmpeg
    threads, stored in `encoding` (raw or jpeg at `quality`, see framecodec). `clip_spec(cfg.data)` builds it."""
    num_frames: int
    size: int
    threads: int = 1
    sampler: str = "uniform"
    resize: str = "area"
    encoding: str = "jpeg"
    quality: int = 90


def clip_spec(d) -> ClipSpec:
    """The config's `data` section as a ClipSpec (the builder: below it, plain values)."""
    return ClipSpec(d.num_frames, d.frame_size, d.decode_threads, d.sampler, d.resize, d.cache_encoding,
                    d.jpeg_quality)


def decode_batch(batch: Dict[str, np.ndarray], spec: ClipSpec, progress=None) -> Dict[str, np.ndarray]:
    """A Ray Data batch of {video_id, path} -> {video_id, path, frames (bytes of uint8 (T,S,S,3)), n_frames,
    error}.

    A video that fails to decode gets empty frames and its reason in `error` (the batch goes on). This lives
    here, free of torch, so that decode workers start with PyAV and NumPy only. `progress`, when given, is a
    `ProgressBoard` actor handle: the batch posts how many videos it decoded and skipped. Frames are stored in
    the spec's encoding.
    """
    from ncl_ray.data.framecodec import encode_clip

    frames, counts, errors = [], [], []
    for path in batch["path"]:
        try:
            clip, n = decode_video(str(path), spec.num_frames, spec.size, spec.threads, spec.sampler, spec.resize)
            frames.append(encode_clip(clip, spec.encoding, spec.quality))
            counts.append(n)
            errors.append("")
        except DecodeError as e:
            frames.append(b"")
            counts.append(0)
            errors.append(e.reason)
    if progress is not None:
        progress.add.remote("done", len(errors))
        progress.add.remote("skipped", sum(1 for e in errors if e))
    return {"video_id": batch["video_id"], "path": batch["path"],
            "frames": np.array(frames, dtype=object), "n_frames": np.array(counts, np.int64),
            "error": np.array(errors, dtype=object)}


def _decode_all(container, stream, num_frames: int, size: int, counts: List[int], path: str,
                resize: str = "area", deadline: Optional[Deadline] = None) -> np.ndarray:
    """Fallback when the duration is unknown: decode every frame once, keep T evenly spaced ones. Frames are
    converted as they come and at most 2 x max(4T, 64) are held (limits.StridedFrames): bounded memory."""
    held = StridedFrames(max(4 * num_frames, 64))
    for i, f in enumerate(decoded_frames(container.demux(stream), stream, counts)):
        if deadline is not None:
            deadline.check()
        if held.offer(i):
            held.add(to_rgb(f, size, resize=resize))
    if not held.items:
        raise DecodeError(path, f"no decodable frame ({counts[0]} corrupt packets)")
    return np.stack(held.pick(num_frames))
