"""Moments vs whole videos, side by side in one run: `python -m bench.moments [--minutes 2] [--rows 20000]`.

1. Index-add cost per video: a video of `--minutes` minutes (three scenes, 64 px, 8 fps, H.264) embedded whole
   (T = 12 frames) and as 10 s windows every 5 s (T frames per window), with the index's own embedder (the
   ViT-B/32 architecture at 224 px, random weights: speed does not depend on them) in one process; seconds per
   video, decode and embed apart.
2. Search latency: GalleryIndex.moments (exact inner product, NCL folded, grouping windows per video) for one
   query over a gallery of `--rows` videos vs the same videos as 10 windows each (10x the rows); median of 50.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.report import write
from ncl_ray.config.schema import load_config, to_dict
from ncl_ray.data.synthetic import render, write_video
from ncl_ray.model.clip import ModelSpec, build_model
from ncl_ray.ncl.loss import NCLLoss
from ncl_ray.runtime.checkpoint import save_checkpoint
from ncl_ray.serve.add import VideoEmbedder
from ncl_ray.serve.index import GalleryIndex


def add_cost(minutes: float, work: Path) -> list:
    fps, n = 8, int(minutes * 60 * 8)
    scenes = [render(c, "circle", "large", "right", "navy", num_frames=n // 3, side=64,
                     rng=np.random.default_rng(i)) for i, c in enumerate(("red", "green", "yellow"))]
    video = write_video(str(work / "long.mp4"), np.concatenate(scenes), fps=fps, gop=32)
    cfg = load_config(None, ["model.arch=ViT-B-32", "data.frame_size=224", "data.num_frames=12"])
    torch.manual_seed(0)
    model = build_model(ModelSpec("ViT-B-32", "", "meanP", 224, 32))
    ckpt = save_checkpoint(str(work / "ckpt"), model, NCLLoss(512, 4, 1), 0, 1, to_dict(cfg))
    rows = []
    for label, window in (("whole video", 0.0), ("10 s windows, stride 5 s", 10.0)):
        embedder = VideoEmbedder(ckpt, window_s=window, stride_s=window / 2)
        t = time.perf_counter()
        clips, _, spans = embedder._clips(video)
        decode = time.perf_counter() - t
        t = time.perf_counter()
        out = embedder({"video_id": np.array(["long"], dtype=object), "path": np.array([video], dtype=object)})
        total = time.perf_counter() - t  # decode again + embed
        rows.append({"part": "index add", "mode": label, "rows_per_video": len(out["video_id"]),
                     "decode_s": round(decode, 2), "decode_and_embed_s": round(total, 2)})
    return rows


def search_latency(n_videos: int, dim: int = 512, windows: int = 10) -> list:
    g = np.random.default_rng(0)
    rows = []
    for label, per in (("whole videos", 1), (f"{windows} windows per video", windows)):
        emb = g.normal(size=(n_videos * per, dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        ids = [f"v{i // per}" for i in range(n_videos * per)]
        spans = np.array([[5.0 * (i % per), 5.0 * (i % per) + 10] if per > 1 else [0, 0]
                          for i in range(n_videos * per)], np.float32)
        index = GalleryIndex(ids, [""] * len(ids), emb, g.normal(size=len(ids)).astype(np.float32), 0.01, {}, {},
                             spans=spans)
        q = emb[:1] + 0.1 * g.normal(size=(1, dim)).astype(np.float32)
        q /= np.linalg.norm(q)
        times = []
        for _ in range(50):
            t = time.perf_counter()
            index.moments(q, 10, "ncl", per_video=3)
            times.append(time.perf_counter() - t)
        rows.append({"part": "search", "mode": label, "rows_per_video": per, "gallery_rows": len(ids),
                     "median_ms": round(1e3 * statistics.median(times), 2)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--rows", type=int, default=20000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        adds = add_cost(args.minutes, Path(d))
    write("moments_add", adds, {"video": f"{args.minutes} min, 3 scenes, 64 px, 8 fps; model ViT-B/32 at 224 px, "
                                         f"12 frames, CPU", "threads": torch.get_num_threads()})
    write("moments_search", search_latency(args.rows), {"dim": 512, "k": 10, "moments per video": 3})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
