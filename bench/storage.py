"""`python -m bench.storage`: what a run on object storage costs, against a local folder, side by side in one run.

A checkpoint folder of the size given (a real `state.pt` of random tensors: the model, two query queues and the
optimizer's moments) is written to and read back from (a) a local folder and (b) an S3 server on loopback (moto's
standalone server in its own process, in memory) through runtime/storage.py, the path every run on a URI takes.
Loopback moto shows the client-side cost plus moto's own (a Python server), not a cloud's bandwidth or latency.
Per epoch a run on a URI uploads Ray Train's checkpoint, and `best/` when the epoch is better, plus TensorBoard
events and a line of restores (a few kB).

    python -m bench.storage [--mb 150 --repeat 3]
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=150, help="checkpoint size (ViT-B/32 weights are about 600 MB in fp32)")
    ap.add_argument("--repeat", type=int, default=3)
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
    Path("bench/out").mkdir(parents=True, exist_ok=True)
    Path("bench/out/storage.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
