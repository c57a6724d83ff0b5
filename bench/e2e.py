"""End to end: clips/s of the main job's training (a short run of conf/default.yaml on a local Ray instance)
and where a step's time goes, measured in one run on the same data:
decode (PyAV, per clip, amortised by the clip cache after the first epoch), forward, NCL loss (gather +
Sinkhorn + CE), backward + optimizer, and communication (2-process gloo all_gather of features and
all_reduce of the model's gradients, as DDP does).

    python -m bench.e2e [--epochs 3]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench.report import write

B, T, S = 16, 8, 32


def _comm_worker(rank, port, n_params, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    feats, grads = torch.randn(B, 64), torch.randn(n_params)
    buf = [torch.empty_like(feats) for _ in range(2)]
    for _ in range(3):
        dist.all_gather(buf, feats)
        dist.all_reduce(grads)
    dist.barrier()
    t = time.perf_counter()
    for _ in range(10):
        for _ in range(4):  # text + video features, forward and backward
            dist.all_gather(buf, feats)
        dist.all_reduce(grads)
    if rank == 0:
        with open(out, "w") as f:
            f.write(str((time.perf_counter() - t) / 10))
    dist.barrier()
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    from ncl_ray.config.schema import load_config
    from ncl_ray.data.decode import decode_frames
    from ncl_ray.data.synthetic import make_dataset
    from ncl_ray.data.transforms import normalize_frames, sample_captions
    from ncl_ray.model.clip import build_model_from_config
    from ncl_ray.train.loop import build_loss, build_optimizer

    cfg = load_config("conf/default.yaml")
    work = tempfile.mkdtemp(prefix="ncl-e2e-")
    manifest = make_dataset(os.path.join(work, "syn"), 16)
    videos = sorted({json.loads(x)["path"] for x in open(manifest)})
    t = time.perf_counter()
    for p in videos:
        decode_frames(os.path.join(work, "syn", p), T, S)
    decode_ms = 1e3 * (time.perf_counter() - t) / len(videos)

    torch.manual_seed(0)
    model = build_model_from_config(cfg)
    loss_fn = build_loss(cfg, model.embed_dim)
    opt = build_optimizer(model, 1e-3, 1e-3, 0.2)
    frames = torch.randint(0, 255, (B, T, S, S, 3), dtype=torch.uint8)
    tokens = sample_captions(torch.randint(1, 49000, (B, 3, 32)), torch.full((B,), 3), torch.Generator())
    phases = {"forward": 0.0, "loss": 0.0, "backward+optimizer": 0.0}
    steps = 20
    for i in range(steps + 3):
        t0 = time.perf_counter()
        out = model(normalize_frames(frames), tokens)
        t1 = time.perf_counter()
        loss = loss_fn(**out)["contrastive_loss"]
        t2 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        opt.step()
        t3 = time.perf_counter()
        if i >= 3:
            phases["forward"] += (t1 - t0) / steps
            phases["loss"] += (t2 - t1) / steps
            phases["backward+optimizer"] += (t3 - t2) / steps

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out_file = os.path.join(work, "comm.txt")
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    mp.spawn(_comm_worker, args=(port, n_params, out_file), nprocs=2, join=True)
    comm = float(open(out_file).read())

    runs = os.path.join(work, "runs")
    cmd = [sys.executable, "-m", "ncl_ray", "train", "conf/default.yaml", f"train.epochs={args.epochs}",
           f"run.storage_path={runs}", "run.name=e2e", "train.eval_every_epochs=0"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0"))
    wall = time.perf_counter() - t
    metrics = json.load(open(os.path.join(runs, "e2e", "results.json")))["metrics"]

    step_ms = {k: 1e3 * v for k, v in phases.items()}
    step_ms["comm (2 workers, gloo)"] = 1e3 * comm
    step_ms[f"decode x{B} clips (first epoch only)"] = decode_ms * B
    total = sum(v for k, v in step_ms.items() if "decode" not in k)
    rows = [{"phase": k, "ms_per_step": v, "share_of_step": v / total if "decode" not in k else float("nan")}
            for k, v in step_ms.items()]
    write("e2e", rows, {
        "setup": f"conf/default.yaml: tiny CLIP, B={B} per worker, {T} frames x {S} px, 2 CPU workers",
        "main_job_clips_per_s_last_epoch": metrics["train/clips_per_s"],
        "main_job_wall_s": wall,
        "main_job_epochs": args.epochs,
    })


if __name__ == "__main__":
    main()
