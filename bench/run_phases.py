"""Where the time of a tiny `ncl-ray train` goes: the command's own console lines, time-stamped as they appear,
split into phases (Python and the config; Ray's start; the clip cache and the splits in the object store; Ray
Train's start up to the first step; the epochs and the test evaluation; the summary and Ray's shutdown). The tiny run
is the one the Ray tests train (40 built-in videos of 4 x 16 px frames, batch 4), so the phases are the fixed
costs each of those tests pays. Run it twice: the first run also generates and decodes the built-in videos.

    python -m bench.run_phases [--epochs 2]   (bench/out/run_phases.json)
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import write

TINY = ["data.synthetic_videos=40", "data.num_frames=4", "data.frame_size=16", "data.max_words=16",
        "train.batch_size=4", "ncl.queue_size=24"]
# (phase, the console line that ends it): the first line that starts with the marker (either one of a pair: the
# first run decodes, the second finds the cache)
MARKS = [("python+config", "Ray: starting"), ("ray start", ("clip cache:", "decoding ")), ("data", "training:"),
         ("train start", "train      0/"), ("epochs+test", "Ray's own logs")]


def timed_lines(cmd, env) -> tuple:
    """[(seconds since start, line)] of what the command printed (either stream, \\r-separated lines too)."""
    t0, lines, buf = time.time(), [], b""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    while True:
        c = p.stdout.read(1)
        if not c:
            break
        if c in b"\r\n":
            if buf.strip():
                lines.append((time.time() - t0, buf.decode(errors="replace").strip()))
            buf = b""
        else:
            buf += c
    return p.wait(), lines, time.time() - t0


def phases(lines, total: float) -> dict:
    out, start = {}, 0.0
    for name, mark in MARKS:
        t = next((t for t, line in lines if line.startswith(mark)), None)
        if t is None:
            raise SystemExit(f"no console line starting with {mark!r}: {[line for _, line in lines][:20]}")
        out[name], start = round(t - start, 2), t
    out["summary+exit"] = round(total - start, 2)
    out["total"] = round(total, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ncl-phases-"))
    env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_TMPDIR=tempfile.mkdtemp(prefix="nrb", dir="/tmp"))
    env.pop("RAY_ADDRESS", None)
    results = []
    for run in ("first (decodes)", "second (cache reused)"):
        rc, lines, total = timed_lines([sys.executable, "-m", "ncl_ray", "train", "conf/default.yaml", *TINY,
                                        f"data.root={work}/syn", f"data.cache_dir={work}/cache",
                                        f"run.storage_path={work}/runs", f"run.name=r{len(results)}",
                                        f"train.epochs={a.epochs}", "train.eval_every_epochs=1"], env)
        if rc != 0:
            raise SystemExit(f"the tiny run failed (exit {rc}): {[line for _, line in lines][-10:]}")
        results.append({"run": run, **phases(lines, total)})
    write("run_phases", results, {"epochs": a.epochs, "seconds": "each phase ends at the console line that starts "
                                  "the next: " + ", ".join(f"{n} -> {m!r}" for n, m in MARKS)})


if __name__ == "__main__":
    main()
