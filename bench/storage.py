"""`python -m bench.storage`: what a run on object storage costs, against a local folder, side by side in one run.

A checkpoint folder of the size given (a real `state.pt` of random tensors: the model, two query queues and the
optimizer's moments) is written to and read back from (a) a local folder and (b) an S3 server on loopback (moto's
standalone server in its own process, in memory) through runtime/storage.py, the path every run on a URI takes.
Loopback moto shows the client-side cost plus moto's own (a Python server), not a cloud's bandwidth or latency.
Per epoch a run on a URI uploads Ray Train's checkpoint, and `best/` when the epoch is better, plus TensorBoard
events and a line of restores (a few kB).

    python -m bench.storage [--mb 150 --repeat 3]
    python -m bench.storage --epochs 3     # also: the tiny run trained with run.storage_path local vs s3://

With `--epochs N`, the tiny run (tests/tiny.py's settings, 40 built-in videos, clip cache local and built first)
is trained for N epochs twice in one go, with `run.storage_path` a local folder and then the bucket, through the
CLI as a user runs it: the per-epoch overhead is the difference of the two wall times over N, and the bytes
written per epoch are what the bucket holds for the run over N.
"""

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def checkpoint(folder: Path, mb: int) -> int:
    """A checkpoint folder holding about `mb` MB of tensors; returns its bytes."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    n = mb * 2**20 // 4
    torch.save({"model": {"w": torch.randn(n // 3)}, "optimizer": {"m": torch.randn(n // 3), "v": torch.randn(n // 3)},
                "loss": {"text_queue.queue": torch.randn(1024, 512)}}, folder / "state.pt")
    (folder / "complete.json").write_text("{}")
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


TINY = ["data.synthetic_videos=40", "data.num_frames=4", "data.frame_size=16", "data.max_words=16",
        "train.batch_size=4", "ncl.queue_size=24", "train.eval_every_epochs=1"]


def run_epochs(work: Path, epochs: int) -> dict:
    """The tiny run for `epochs` epochs, storage local vs the bucket (the environment points at the server)."""
    import subprocess
    import sys

    from ncl_ray.runtime import storage

    common = [sys.executable, "-m", "ncl_ray", "train", "conf/default.yaml", *TINY, f"data.root={work}/data",
              f"data.cache_dir={work}/cache"]
    env = dict(os.environ, RAY_TMPDIR=str(work / "ray"), NCL_RAY_CACHE=str(work / "fetch"))
    (work / "ray").mkdir(exist_ok=True)
    warm = subprocess.run([*common, "train.epochs=1", f"run.storage_path={work}/warm", "run.name=warm"], env=env,
                          capture_output=True, text=True)  # generates the videos and the clip cache
    assert warm.returncode == 0, warm.stderr[-2000:]
    out = {}
    for name, where in (("local", f"{work}/runs"), ("s3 (moto, loopback)", "s3://bench/runs")):
        t = time.perf_counter()
        r = subprocess.run([*common, f"train.epochs={epochs}", f"run.storage_path={where}", "run.name=e"], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        files = (storage.listing(f"{where}/e") if storage.is_uri(where) else
                 [(str(f), f.stat().st_size, 0) for f in Path(where, "e").rglob("*") if f.is_file()])
        out[name] = {"wall_s": time.perf_counter() - t, "bytes": sum(size for _, size, _ in files)}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=150, help="checkpoint size (ViT-B/32 weights are about 600 MB in fp32)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=0, help="also train the tiny run N epochs, local vs bucket")
    args = ap.parse_args()
    import socket
    import subprocess
    import sys

    from ncl_ray.runtime import storage

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # its own process: in this one, the server's Python threads and the client's would share one GIL
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true"})
    import boto3

    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1").create_bucket(
        Bucket="bench")
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    rows = {"local": {"write_s": [], "read_s": []}, "s3 (moto, loopback)": {"write_s": [], "read_s": []}}
    try:
        size = checkpoint(work / "src", args.mb)
        for i in range(args.repeat):
            dst, back = work / f"local-{i}", work / f"back-{i}"
            rows["local"]["write_s"].append(timed(shutil.copytree, work / "src", dst))
            rows["local"]["read_s"].append(timed(shutil.copytree, dst, back))
            uri = f"s3://bench/runs/r{i}/checkpoint"
            rows["s3 (moto, loopback)"]["write_s"].append(timed(storage.upload, str(work / "src"), uri))
            rows["s3 (moto, loopback)"]["read_s"].append(timed(storage.download, uri, str(work / f"s3back-{i}")))
        reachable = timed(storage.check_reachable, "s3://bench/runs", "run.storage_path")
        runs = run_epochs(work, args.epochs) if args.epochs else {}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        server.terminate()
        server.wait(timeout=30)
    print(f"checkpoint folder: {size / 2**20:.0f} MiB, best of {args.repeat}")
    print(f"{'where':<22}{'write s':>9}{'MiB/s':>9}{'read s':>9}{'MiB/s':>9}")
    out = {"mib": size / 2**20, "check_reachable_s": reachable}
    for name, r in rows.items():
        w, rd = min(r["write_s"]), min(r["read_s"])
        print(f"{name:<22}{w:9.2f}{size / 2**20 / w:9.0f}{rd:9.2f}{size / 2**20 / rd:9.0f}")
        out[name] = {"write_s": w, "read_s": rd}
    print(f"reachability check before a run (write + delete a probe): {reachable * 1000:.0f} ms")
    if runs:
        local, remote = runs["local"], runs["s3 (moto, loopback)"]
        print(f"the tiny run, {args.epochs} epochs: local {local['wall_s']:.1f} s, bucket {remote['wall_s']:.1f} s; "
              f"overhead {(remote['wall_s'] - local['wall_s']) / args.epochs:+.1f} s per epoch; "
              f"{remote['bytes'] / args.epochs / 2**20:.1f} MiB written to the bucket per epoch "
              f"({local['bytes'] / args.epochs / 2**20:.1f} MiB per epoch in the local run folder)")
        out["epochs"] = {"n": args.epochs, **runs}
    Path("bench/out").mkdir(parents=True, exist_ok=True)
    Path("bench/out/storage.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
