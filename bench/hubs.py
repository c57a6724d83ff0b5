"""Hubness benchmark for `ncl-ray rerank`: a synthetic gallery where a few items lie close to every query
(hubs). Every method runs on the same similarity files, through the real CLI, side by side.

    python -m bench.hubs [--items 1000] [--hubs 20]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.report import write


def hub_problem(n, d, hubs, bank_per_item, seed=0):
    rng = np.random.default_rng(seed)
    common = rng.normal(size=d)
    items = rng.normal(size=(n, d))
    items[:hubs] += 2.0 * common  # hubs lean towards a direction every query shares

    def queries(k):
        q = np.repeat(items, k, axis=0) + 1.4 * rng.normal(size=(n * k, d)) + common
        return q / np.linalg.norm(q, axis=1, keepdims=True)

    g = items / np.linalg.norm(items, axis=1, keepdims=True)
    return (queries(1) @ g.T).astype(np.float32), (queries(bank_per_item) @ g.T).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--hubs", type=int, default=20)
    ap.add_argument("--dim", type=int, default=64)
    args = ap.parse_args()
    sims, bank = hub_problem(args.items, args.dim, args.hubs, bank_per_item=2)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        np.save(Path(d) / "s.npy", sims)
        np.save(Path(d) / "b.npy", bank)
        for method, extra in [("none", []), ("ncl", []), ("ncl", ["--bank", "test"]), ("dsl", []), ("qbnorm", []),
                              ("nnn", []), ("nnn", ["--nnn-k", "128", "--nnn-alpha", "0.75"]), ("is", []),
                              ("csls", [])]:
            out = Path(d) / "r.json"
            subprocess.run([sys.executable, "-m", "ncl_ray", "rerank", "--sims", f"{d}/s.npy", "--bank-sims",
                            f"{d}/b.npy", "--method", method, "--json", str(out), *extra],
                           check=True, capture_output=True)
            r = json.loads(out.read_text())
            label = "test queries" if "test" in extra or method == "dsl" else \
                ("training bank" if method != "none" else "-")
            if method == "nnn":
                label += " (k 128, alpha 0.75)" if extra else " (k 256, alpha 0.5)"
            label += {"is": " (beta 20)", "csls": " (k 10)"}.get(method, "")
            rows.append({"method": method, "statistics_from": label, "R@1": r["t2v"]["R@1"],
                         "R@5": r["t2v"]["R@5"], "MnR": r["t2v"]["MnR"],
                         "norm_error": r["normalization_error"]["after"]})
    none, ncl = rows[0], rows[1]
    write("hubs", rows, {
        "setup": f"{args.items} items ({args.hubs} hubs), {args.items} test queries, bank {2 * args.items} "
                 f"training queries, D={args.dim}, tau=0.01, 10 Sinkhorn iterations",
        "ncl_R@1_gain": ncl["R@1"] - none["R@1"],
        "ncl_norm_error_ratio": ncl["norm_error"] / none["norm_error"],
    })


if __name__ == "__main__":
    main()
