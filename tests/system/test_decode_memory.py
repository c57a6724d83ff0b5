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
