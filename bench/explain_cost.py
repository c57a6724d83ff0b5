"""What explaining one query's hits costs on a large gallery: the explainer of the search service
(`serve/explain.py`: the hits, a fixed sample and each row's coverage computed once per version) beside a
whole-gallery scan (every row's plain score and each video's best, what the explainer did first), and beside
the index search itself. A bank of training captions (`--bank`) makes the coverage part of the cost.

    python -m bench.explain_cost [--rows 100000] [--dim 512] [--bank 4096] [--kinds exact,hnsw]
"""

import argparse
import time

import numpy as np

from bench.report import write
from ncl_ray.serve.explain import Explainer
from ncl_ray.serve.index import GalleryIndex


def whole_scan(ex: Explainer, q: np.ndarray, rows, method: str) -> None:
    """The whole-gallery way: every row's score, the spread over all of them, each video's best plain score."""
    index = ex.index
    plain = index.plain @ q  # (C,)
    scores = plain + index.temperature * index.biases[method]
    float(scores.mean()), float(scores.std())
    best = np.full(len(index.rows_of), -np.inf, np.float32)
    np.maximum.at(best, ex.video_of, plain)
    [int((best > plain[r]).sum()) + 1 for r in rows]


def timed(fn, queries, repeats=3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for q in queries:
            fn(q)
        best = min(best, (time.perf_counter() - started) / len(queries))
    return best * 1000.0


def measure(kind: str, emb: np.ndarray, bias: np.ndarray, queries: np.ndarray, bank: np.ndarray) -> dict:
    started = time.perf_counter()
    n = len(emb)
    index = GalleryIndex([f"v{i}" for i in range(n)], [""] * n, emb, bias, 0.05, {}, {}, kind)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    ex = Explainer(index, bank if len(bank) else None)
    load_s = time.perf_counter() - started
    hits = {q.tobytes(): index.search(q[None], 10, "ncl")[1][0].tolist() for q in queries}
    search = timed(lambda q: index.search(q[None], 10, "ncl"), queries)
    explainer = timed(lambda q: ex.hits(q, hits[q.tobytes()], "ncl"), queries)
    scan = timed(lambda q: whole_scan(ex, q, hits[q.tobytes()], "ncl"), queries)
    return {"index": kind, "rows": n, "dim": emb.shape[1], "build_s": build_s, "explainer_load_s": load_s,
            "search_ms": search, "explain_ms": explainer, "explain / search": explainer / search,
            "whole_scan_ms": scan}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--kinds", default="exact,hnsw")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--bank", type=int, default=4096, help="training captions (0: none)")
    args = ap.parse_args()
    g = np.random.default_rng(0)
    emb = g.normal(size=(args.rows, args.dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    queries = g.normal(size=(args.queries, args.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    bias = (0.1 * g.normal(size=args.rows)).astype(np.float32)
    bank = g.normal(size=(args.bank, args.dim)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True) if args.bank else 1.0
    rows_out = [measure(kind, emb, bias, queries, bank) for kind in args.kinds.split(",")]
    write("explain_cost", rows_out, {"setup": f"{args.queries} queries, 10 hits each, best of 3 passes; times per "
                                              f"query", "bank": args.bank})


if __name__ == "__main__":
    main()
