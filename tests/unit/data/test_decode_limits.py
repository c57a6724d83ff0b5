"""Decoding bombs on crafted files: a stream without a duration, oversized frames, a deadline, a long video for
the 1-frame-per-second sampler. Each is refused with its reason or decoded in bounded memory (peak memory:
tests/system/test_decode_memory.py)."""


import numpy as np
import pytest

from ncl_ray.data import limits
from ncl_ray.data.clip4clip_frames import decode_clip4clip
from ncl_ray.data.decode import DecodeError, decode_frames
from ncl_ray.data.synthetic import write_video
from videos import barcoded, live_mkv, read_code


def test_stream_without_duration_keeps_a_bounded_evenly_spaced_sample(tmp_path, monkeypatch):
    path = live_mkv(tmp_path / "live.mkv", 500, side=72)
    held = []
    original = limits.StridedFrames.add

    def spy(self, item):
        original(self, item)
        held.append(len(self.items))

    monkeypatch.setattr(limits.StridedFrames, "add", spy)
    clip = decode_frames(path, 8, 36)
    assert max(held) < 2 * 64  # cap = max(4 x 8, 64): never more held, whatever the length
    codes = [read_code(f) for f in clip]
    assert codes == sorted(codes) and codes[0] < 64 and codes[-1] > 500 - 64  # spread over the whole stream
    gaps = np.diff(codes)
    assert gaps.min() > 0.5 * gaps.mean()  # evenly spaced






def test_oversized_frames_are_refused_from_the_header(tmp_path, monkeypatch):
    path = write_video(str(tmp_path / "v.mp4"), barcoded(10, size=96), fps=8)
    monkeypatch.setattr(limits, "MAX_FRAME_PIXELS", 64 * 64)
    with pytest.raises(DecodeError, match=r"v.mp4: frames of 96x96 pixels exceed the limit"):
        decode_frames(path, 4, 32)
    with pytest.raises(DecodeError, match="exceed the limit"):
        decode_clip4clip(path, 4, 32)


def test_deadline_and_the_one_frame_per_second_cap(tmp_path, monkeypatch):
    path = write_video(str(tmp_path / "v.mp4"), barcoded(40, size=72), fps=8)  # 5 s
    monkeypatch.setattr(limits, "MAX_DECODE_S", 0.0)
    with pytest.raises(DecodeError, match="took longer than 0 s"):
        decode_frames(path, 4, 32)
    monkeypatch.setattr(limits, "MAX_DECODE_S", 300.0)
    import ncl_ray.data.clip4clip_frames as c4c

    monkeypatch.setattr(c4c, "MAX_SECOND_FRAMES", 3)
    with pytest.raises(DecodeError, match="longer than 3 s"):
        decode_clip4clip(path, 4, 32)
