"""Test-time NCL cost as the gallery grows: time and peak memory of the gallery biases (Sinkhorn over a bank
of training queries x gallery, computed in row blocks under a byte budget) plus ranking 1000 test queries, for
1k / 10k / 100k / 1M gallery items, each run in a fresh process so its peak RSS is its own.

Beside the blocked path (default budget eval.memory_mb=2048, Sinkhorn blocks on min(4, cores) threads): the
same at 1M on one thread (what the threads buy), and the dense path (the whole bank matrix in memory) where it
fits. The old fixed block of 4096 rows is listed with the memory it would need (not run).

    python -m bench.eval_scale [--sizes 1000,10000,100000,1000000]
"""

import argparse
import json
import resource
import subprocess
import sys
import time

from bench.report import last_json, write

BANK, QUERIES, DIM, ITERS = 1000, 1000, 256, 5


def one(gallery: int, path: str) -> dict:
    import torch
    import torch.nn.functional as F

    from ncl_ray.ncl.normalize import Sims, default_workers, make_scorer
    from ncl_ray.ncl.sinkhorn import sinkhorn_biases

    torch.manual_seed(0)
    g = F.normalize(torch.randn(gallery, DIM), dim=1)
    bank = F.normalize(torch.randn(BANK, DIM), dim=1)
    q = F.normalize(torch.randn(QUERIES, DIM), dim=1)
    workers = 1 if path == "blocked-1-thread" else default_workers()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    chunk = 0
    if path == "dense":
        b = sinkhorn_biases(bank @ g.T / 0.01, ITERS)[1]
        (q @ g.T / 0.01 + b).topk(10, dim=1)
    else:
        test = Sims.embeddings(q, g, workers=workers)
        chunk = test.chunk
        scorer = make_scorer("ncl", test, 0.01, Sims.embeddings(bank, g, workers=workers), n_iters=ITERS)
        bias_s = time.perf_counter() - t
        for rows, s in test.blocks():
            scorer(rows, s).topk(10, dim=1)
    elapsed = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"gallery": gallery, "path": path, "threads": workers, "block_rows": chunk, "seconds": elapsed,
            "bias_seconds": bias_s if path != "dense" else elapsed, "peak_extra_mb": (peak - base) / 1024}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=2)
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1])))
        return
    rows = []
    sizes = [int(x) for x in args.sizes.split(",")]
    for size in sizes:
        paths = ["blocked"] + (["dense"] if size <= 100_000 else []) + \
            (["blocked-1-thread"] if size == max(sizes) else [])
        for path in paths:
            out = subprocess.run([sys.executable, "-m", "bench.eval_scale", "--one", str(size), path],
                                 capture_output=True, text=True, check=True).stdout
            rows.append(last_json(out))
            print(rows[-1], flush=True)
    blocked = {r["gallery"]: r for r in rows if r["path"] == "blocked"}
    top = max(sizes)
    single = next(r for r in rows if r["path"] == "blocked-1-thread")
    write("eval_scale", rows, {
        "setup": f"bank {BANK} training queries, {QUERIES} test queries, D={DIM}, {ITERS} Sinkhorn iterations, CPU",
        "time_growth_last_vs_first": blocked[top]["seconds"] / blocked[sizes[0]]["seconds"],
        "size_growth": top / sizes[0],
        f"threads_speedup_at_{top}": single["seconds"] / blocked[top]["seconds"],
        f"old_chunk4096_would_need_gb_at_{top}": 5 * 4 * 4096 * top / 2 ** 30,
        f"extrapolated_10k_bank_10_iters_minutes_at_{top}": blocked[top]["bias_seconds"] * 10 * 2 / 60,
    })


if __name__ == "__main__":
    main()
