"""Test-time NCL cost as the gallery grows: time and peak memory of the gallery biases (Sinkhorn over a bank
of training queries x gallery, computed in row blocks) plus ranking 1000 test queries, for 1k / 10k / 100k
gallery items, each size in a fresh process so its peak RSS is its own; the dense path (whole bank matrix in
memory) is run beside it for comparison.

    python -m bench.eval_scale
"""

import argparse
import json
import resource
import subprocess
import sys
import time

from bench.report import write

BANK, QUERIES, DIM, ITERS = 1000, 1000, 256, 5


def one(gallery: int, dense: bool) -> dict:
    import torch
    import torch.nn.functional as F

    from ncl_ray.ncl.normalize import Sims, make_scorer
    from ncl_ray.ncl.sinkhorn import sinkhorn_biases

    torch.manual_seed(0)
    g = F.normalize(torch.randn(gallery, DIM), dim=1)
    bank = F.normalize(torch.randn(BANK, DIM), dim=1)
    q = F.normalize(torch.randn(QUERIES, DIM), dim=1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if dense:
        b = sinkhorn_biases(bank @ g.T / 0.01, ITERS)[1]
        (q @ g.T / 0.01 + b).topk(10, dim=1)
    else:
        test = Sims.embeddings(q, g, 256)
        scorer = make_scorer("ncl", test, 0.01, Sims.embeddings(bank, g, 256), ITERS)
        for rows, s in test.blocks():
            scorer(rows, s).topk(10, dim=1)
    elapsed = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"gallery": gallery, "path": "dense" if dense else "blocked", "seconds": elapsed,
            "peak_extra_mb": (peak - base) / 1024}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=2)
    ap.add_argument("--sizes", default="1000,10000,100000")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1] == "dense")))
        return
    rows = []
    for size in [int(x) for x in args.sizes.split(",")]:
        for path in ("blocked", "dense"):
            out = subprocess.run([sys.executable, "-m", "bench.eval_scale", "--one", str(size), path],
                                 capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    sizes = sorted({r["gallery"] for r in rows})
    blocked = {r["gallery"]: r for r in rows if r["path"] == "blocked"}
    write("eval_scale", rows, {
        "setup": f"bank {BANK} training queries, {QUERIES} test queries, D={DIM}, {ITERS} Sinkhorn iterations, CPU",
        "time_growth_last_vs_first": blocked[sizes[-1]]["seconds"] / blocked[sizes[0]]["seconds"],
        "size_growth": sizes[-1] / sizes[0],
    })


if __name__ == "__main__":
    main()
