"""Decoding bombs on crafted files: a stream without a duration, oversized frames, a deadline, a long video for
the 1-frame-per-second sampler. Each is refused with its reason or decoded in bounded memory."""

import subprocess
import sys

import av
import numpy as np
import pytest

from ncl_ray.data import limits
from ncl_ray.data.clip4clip_frames import decode_clip4clip
from ncl_ray.data.decode import DecodeError, decode_frames
from ncl_ray.data.synthetic import write_video
from test_clip4clip_frames import barcoded, read_code


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


def peak_rss_mb(call: str, path: str) -> float:
    code = (f"import resource, sys; from ncl_ray.data.decode import decode_frames; {call}; "
            f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return float(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_stream_without_duration_peaks_at_a_few_megabytes_over_opening_it(tmp_path):
    """3,000 frames of 320 x 320 without a duration: held whole, they took 599 MB; now the import baseline."""
    path = live_mkv(tmp_path / "long.mkv", 3000)
    base = peak_rss_mb("import av; av.open(sys.argv[1]).close()", path)
    peak = peak_rss_mb("decode_frames(sys.argv[1], 8, 32)", path)
    assert peak - base < 60, (base, peak)


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
