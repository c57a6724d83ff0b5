"""`make rehearsal` for real, shortened: the CLIP4Clip recipe's stages in a subprocess with its own Ray."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.ray
@pytest.mark.slow
def test_short_rehearsal_writes_a_stage_report(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.rehearsal", "--videos", "8", "--out", str(tmp_path),
                        "data.num_frames=2", "train.batch_size=2", "ncl.queue_size=64", "train.num_workers=1",
                        "train.keep_best=false", "train.eval_every_epochs=5"],  # one ViT-B/32, no extra saves
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report) == {"generate", "decode+cache write", "cache read (train split)", "training",
                           "evaluation (test split)"}
    cache = report["decode+cache write"]
    assert cache["encoding"] == "jpeg" and cache["raw_bytes_per_clip"] == 2 * 224 * 224 * 3
    assert cache["bytes_per_clip"] * 5 <= cache["raw_bytes_per_clip"]
    train = report["training"]
    assert train["forward_s"] > 0 and train["backward_s"] > 0 and train["peak_rss_mb"]["RayTrainWorker"] > 300
    assert report["evaluation (test split)"]["videos"] >= 1 and "rehearsal report" in r.stdout
