"""CLIP4Clip's frames (`data.sampler=clip4clip`) and CLIP's resize (`data.resize=clip4clip`). No Ray, no torch.

    frames, n = decode_clip4clip("v.mp4", num_frames=12, size=224, resize="clip4clip")  # (12, 224, 224, 3), n <= 12

Rules pinned from CLIP4Clip's reader (`--feature_framerate 1 --slice_framepos 2`, its README commands):
- the frame rate is truncated to an integer, fps = int(rate); the frames kept are the first frame of every whole
  second, i.e. frame numbers 0, fps, 2 fps, ... (in presentation order) while the video has them;
- when that gives more than `num_frames` frames, np.linspace(0, n - 1, num_frames) (truncated to int) picks
  `num_frames` of them; when fewer, all are kept and the clip is padded with zero frames, which the model masks
  (the `n_frames` column; CLIP4Clip's video_mask);
- CLIP's preprocessing (rgb.clip_resize): PIL bicubic resize of the shorter side to `size` (the longer side
  int(size * long / short), truncated, as torchvision computes it), then a centre crop whose offsets are
  int(round((side - size) / 2)) (Python's round: halves go to even).
CLIP4Clip reads frames with OpenCV, this with PyAV: the same frame numbers; the YUV to RGB conversion is
FFmpeg's in both, so a pixel may differ by a rounding step where the two libraries configure it differently.
Frames are rotated for display as the stream's display matrix says (as the uniform sampler does).
"""

from typing import Optional, Tuple

import av
import numpy as np

from ncl_ray.data.limits import MAX_SECOND_FRAMES, DecodeError, Deadline, check_frame_size, open_media
from ncl_ray.data.rgb import to_rgb


def clip4clip_indices(n_seconds_frames: int, num_frames: int) -> np.ndarray:
    """Which of the per-second frames CLIP4Clip keeps: all of them, or np.linspace down to num_frames."""
    if n_seconds_frames > num_frames:
        return np.linspace(0, n_seconds_frames - 1, num=num_frames, dtype=int)
    return np.arange(n_seconds_frames)


def decode_clip4clip(path: str, num_frames: int, size: int, resize: str = "clip4clip",
                     threads: int = 1, fps: Optional[int] = None) -> Tuple[np.ndarray, int]:
    """Frames of `path` as CLIP4Clip picks them: uint8 (num_frames, size, size, 3) zero-padded, and n <= num_frames
    real frames. `fps` overrides the stream's integer rate (tests).

    Raises:
        DecodeError: unreadable, no video stream, or no decodable frame.
    """
    container = open_media(str(path))
    try:
        if not container.streams.video:
            raise DecodeError(str(path), "no video stream (audio-only or other data)")
        stream = container.streams.video[0]
        check_frame_size(stream, str(path))
        deadline = Deadline(str(path))
        if threads > 0:
            stream.codec_context.thread_count = threads
        rate = stream.guessed_rate or stream.average_rate
        step = fps or (int(float(rate)) if rate else 0)
        if step <= 0:
            raise DecodeError(str(path), "no frame rate: CLIP4Clip's 1-frame-per-second sampler needs one")
        # the first frame of every whole second, in presentation order, converted at once (small, not the frame)
        kept = []
        for i, frame in enumerate(container.decode(stream)):
            deadline.check()
            if i % step == 0:
                if len(kept) == MAX_SECOND_FRAMES:
                    raise DecodeError(str(path), f"longer than {MAX_SECOND_FRAMES} s, the limit of the "
                                                 f"1-frame-per-second sampler")
                kept.append(to_rgb(frame, size, resize=resize))
        if not kept:
            raise DecodeError(str(path), "no decodable frame")
        chosen = clip4clip_indices(len(kept), num_frames)
        clip = np.zeros((num_frames, size, size, 3), np.uint8)  # (T, S, S, 3), zero rows past n
        for row, i in enumerate(chosen):
            clip[row] = kept[i]
        return clip, len(chosen)
    except DecodeError:
        raise
    except (av.error.FFmpegError, OSError) as e:
        raise DecodeError(str(path), f"decoding failed ({type(e).__name__}: {e})") from None
    finally:
        container.close()
