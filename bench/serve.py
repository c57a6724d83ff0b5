"""Serving benchmark: `ncl-ray serve`'s HTTP API over loopback on a synthetic 100k-video gallery.

    python -m bench.serve [--videos 100000] [--queries 2000] [--concurrency 1 8 32] [--bank 4096]

A tiny text model (random weights, built in code) encodes the queries; the gallery is random unit embeddings
with random NCL biases, written as an index version; the checkpoint holds a bank of `--bank` training captions
and videos (random unit rows), so that explanations compute what they compute for a trained run. For the exact
(faiss flat inner product) and the approximate (HNSW) index, with explanations (each hit's plain score, bias,
plain rank, confidence and coverage) and without (`explain=0`), `--queries` GET /search requests (k=10,
method=ncl) are sent at each concurrency: queries per second and p50/p95/p99 latency, plus HNSW's recall@10
against exact on the same gallery.
"""

import argparse
import random
import socket
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.report import write

WORDS = ("a small large red green blue yellow white magenta circle square bar moving left right up down "
         "nowhere on black gray navy background").split()


def _query(rng: random.Random) -> str:
    return "+".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))


def _load(base: str, n: int, concurrency: int, explain: str = "1", seed: int = 0):
    rng = random.Random(seed)
    urls = [f"{base}/search?q={_query(rng)}&k=10&method=ncl&explain={explain}" for _ in range(n)]

    def one(url):
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as r:
            r.read()
        return time.perf_counter() - t

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, urls[: min(50, n)]))  # warm-up
        t = time.perf_counter()
        lat = list(pool.map(one, urls))
        wall = time.perf_counter() - t
    lat_ms = np.array(lat) * 1e3
    return n / wall, np.percentile(lat_ms, 50), np.percentile(lat_ms, 95), np.percentile(lat_ms, 99)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--bank", type=int, default=4096, help="training captions and videos in the checkpoint")
    args = ap.parse_args()
    import torch
    from ray import serve

    from ncl_ray.runtime.checkpoint import save_checkpoint
    from ncl_ray.runtime.cluster import init_ray
    from ncl_ray.config.schema import load_config, to_dict
    from ncl_ray.model.clip import build_model_from_config
    from ncl_ray.ncl.loss import NCLLoss
    from ncl_ray.serve.app import build_app
    from ncl_ray.serve.index import GalleryIndex
    from ncl_ray.evaluation.export import IndexFiles
    from ncl_ray.serve.versions import write_version

    work = Path(tempfile.mkdtemp(prefix="ncl-serve-bench-"))
    cfg = load_config("conf/default.yaml", ["data.frame_size=32", "data.num_frames=4"])
    torch.manual_seed(0)
    model = build_model_from_config(cfg)
    g = np.random.default_rng(0)
    loss = NCLLoss(model.embed_dim, max(args.bank, 1), 1)
    for queue in (loss.text_queue, loss.video_queue) if args.bank else ():
        rows = torch.from_numpy(g.normal(size=(args.bank, model.embed_dim)).astype(np.float32))
        queue.enqueue(torch.nn.functional.normalize(rows, dim=1))
    ckpt = save_checkpoint(str(work / "ckpt"), model, loss, 0, 0, to_dict(cfg))
    emb = g.normal(size=(args.videos, model.embed_dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"v{i:06d}" for i in range(args.videos)]
    home = work / "ckpt" / "index"
    meta = {"bank": "train", "split": "synthetic"}
    write_version(home, IndexFiles.gallery(ids, [str(work / f"{v}.mp4") for v in ids], emb,
                                           g.normal(0, 1, args.videos), 0.01, {}, meta),
                  f"{args.videos} synthetic embeddings")
    t = time.perf_counter()
    recall = GalleryIndex.load(str(home), "hnsw").recall_at_k
    hnsw_build = time.perf_counter() - t
    init_ray("", verbose=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    rows = []
    for kind in ("exact", "hnsw"):
        t = time.perf_counter()
        serve.run(build_app(ckpt, str(home), kind), name="bench", route_prefix="/", blocking=False)
        while True:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=5).read()
                break
            except OSError:
                time.sleep(0.5)
        ready = time.perf_counter() - t
        for c in args.concurrency:
            for explain in ("1", "0"):
                qps, p50, p95, p99 = _load(base, args.queries, c, explain)
                rows.append({"index": kind, "explain": explain == "1", "concurrency": c,
                             "queries_per_s": round(qps, 1), "p50_ms": round(p50, 1), "p95_ms": round(p95, 1),
                             "p99_ms": round(p99, 1), "ready_s": round(ready, 1)})
                print(rows[-1], flush=True)
    serve.shutdown()
    write("serve", rows, {"videos": args.videos, "queries": args.queries, "dim": model.embed_dim, "bank": args.bank,
                          "hnsw_recall_at_10_vs_exact": round(recall, 4), "hnsw_build_s": round(hnsw_build, 1)})


if __name__ == "__main__":
    main()
