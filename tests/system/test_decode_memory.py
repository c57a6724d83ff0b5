"""Peak memory of one decode in a fresh process: a stream without a duration stays near the cost of opening it."""

import subprocess
import sys

import pytest

from videos import live_mkv


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


@pytest.mark.slow
def test_an_oversized_frame_is_refused_before_ffmpeg_decodes_it(tmp_path):
    """A 16000 x 16000 PNG in a MOV: FFmpeg's probing decoded it inside av.open (780 MB, 3.3 s) before the header
    check could refuse it; with its decoders capped at 8K pixels the refusal costs what opening a file costs."""
    from videos import png_bomb_mov

    path = png_bomb_mov(tmp_path / "bomb.mov")
    base = peak_rss_mb("import av; av.open(sys.argv[1], options={'max_pixels': '1'}).close()", path)
    code = ("import resource, sys\nfrom ncl_ray.data.decode import DecodeError, decode_frames\ntry:\n"
            "    decode_frames(sys.argv[1], 8, 32)\nexcept DecodeError as e:\n    print(e)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    r = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    message, peak = r.stdout.strip().splitlines()[-2], float(r.stdout.strip().splitlines()[-1])
    assert "bomb.mov" in message and "8K UHD" in message, message
    assert peak - base < 60, (base, peak)
