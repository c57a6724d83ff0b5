"""Out-of-domain videos in a served index: do the served methods lift videos unlike anything the model was trained
on into the answers of queries they do not answer?

A model trains on the built-in corpus (`ncl-ray train conf/default.yaml`). Its served index is the test split
(the held-out rows) plus `--ood` videos of other profiles, added with `ncl-ray index add` as a user adds a
folder: coloured noise, moving stripes, drifting colour gradients and crowds of small shapes (no captions; none
answers any query). The queries are the test split's captions, each with its own video known. For every method
with a per-item bias, its biases over this gallery as Sinkhorn or the bank gives them ("raw": what `index add`
served before) and as served now (`ncl/added_cap.py`: an added row keeps at most the held-out rows' median
bias); for ncl also two rules that were measured and not chosen (shrinking each added row's bias with its
similarity to the nearest training caption, or to the nearest training video, between the 1st and 10th
percentile of the held-out rows'). Per rule: the share of queries with an out-of-domain video in the top 10,
their mean count there, the share with one ranked above the query's own video, and R@1.

    python -m bench.out_of_domain [--videos 400] [--ood 16] [--epochs 0] [--run RUN]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.report import write

PROFILES = ("noise", "stripes", "gradient", "crowd")


def ood_frames(profile: str, rng: np.random.Generator, t: int = 16, side: int = 64) -> np.ndarray:
    """uint8 frames (t, side, side, 3) of one out-of-domain profile."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    frames = np.empty((t, side, side, 3), np.uint8)
    base = rng.uniform(0, 255, 3)
    period, angle = rng.uniform(6, 16), rng.uniform(0, np.pi)  # stripes
    spots, colours = rng.uniform(4, side - 4, (14, 2)), rng.uniform(0, 255, (14, 3))  # crowd
    for i in range(t):
        if profile == "noise":
            frames[i] = np.clip(base + rng.normal(0, 60, (side, side, 3)), 0, 255)
        elif profile == "stripes":
            phase = (xx * np.cos(angle) + yy * np.sin(angle) + 2.0 * i) / period
            on = (np.floor(phase) % 2)[..., None]
            frames[i] = np.clip(on * base + (1 - on) * (255 - base), 0, 255)
        elif profile == "gradient":
            hue = (xx / side + yy / side + i / t)[..., None] * np.array([1.0, 0.6, 0.3]) * np.pi
            frames[i] = np.clip(127 + 127 * np.sin(hue + base / 40), 0, 255)
        else:  # crowd: many small shapes of many colours, jittering
            frames[i] = 60
            spots = spots + rng.normal(0, 1.5, spots.shape)
            for (cx, cy), c in zip(spots, colours):
                frames[i][(xx - cx) ** 2 + (yy - cy) ** 2 <= 9] = c
    return frames


def cli(*args) -> str:
    done = subprocess.run([sys.executable, "-m", "ncl_ray", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"ncl-ray {' '.join(args[:2])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def test_queries(manifest: Path):
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return [(r["caption"], r["video_id"]) for r in rows if r.get("split") == "test"]


def measure(sims: np.ndarray, bias: np.ndarray, tau: float, truth: np.ndarray, ood: np.ndarray, k: int = 10):
    """sims (R, C) plain query-video similarities, bias (C,) on the logit scale, truth (R,) each query's row."""
    scores = sims / tau + bias[None]  # (R, C)
    top = np.argsort(-scores, axis=1)[:, :k]  # (R, k)
    lifted = ood[top].sum(axis=1)  # (R,)
    own = scores[np.arange(len(truth)), truth]  # (R,)
    return {"ood_in_top10": 100.0 * float(np.mean(lifted > 0)), "ood_count": float(lifted.mean()),
            "ood_above_answer": 100.0 * float(np.mean((scores[:, ood] > own[:, None]).any(axis=1))),
            "r1": 100.0 * float(np.mean(top[:, 0] == truth))}


def shrunk(bias: np.ndarray, cover: np.ndarray, held: np.ndarray) -> np.ndarray:
    """A rule not chosen: an added row keeps the share (cover - p1) / (p10 - p1) of its bias's distance from the
    held-out median, p1 and p10 the held-out rows' percentiles of the same similarity."""
    lo, hi = np.percentile(cover[held], [1, 10])
    w = np.where(held, 1.0, np.clip((cover - lo) / max(hi - lo, 1e-6), 0, 1))
    neutral = np.median(bias[held])
    return neutral + w * (bias - neutral)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=400)
    ap.add_argument("--ood", type=int, default=16)
    ap.add_argument("--run", default="", help="an earlier run of this benchmark (its videos and index kept)")
    ap.add_argument("--epochs", type=int, default=0, help="0 = conf/default.yaml's")
    args = ap.parse_args()
    import torch

    from ncl_ray.data.captions import tokenize
    from ncl_ray.data.synthetic import builtin_root, write_video
    from ncl_ray.runtime.checkpoint import load_model, resolve_checkpoint
    from ncl_ray.serve.index import GalleryIndex
    from ncl_ray.ncl.methods import ITEM_BIAS_METHODS, SERVED_METHODS
    from ncl_ray.serve.manage import bank_biases, held_out_rows, training_bank
    from ncl_ray.serve.versions import home_of

    if args.run:
        run, data = Path(args.run), Path(args.run).parents[1] / "data"
    else:
        work = Path(tempfile.mkdtemp(prefix="ncl-ray-ood-"))
        run, data = work / "runs" / "ood", work / "data"
        epochs = [f"train.epochs={args.epochs}"] if args.epochs else []
        cli("train", "conf/default.yaml", f"data.synthetic_videos={args.videos}", f"data.root={data}",
            f"run.storage_path={work / 'runs'}", "run.name=ood", *epochs)
        folder = work / "ood"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.ood):
            profile = PROFILES[i % len(PROFILES)]
            write_video(str(folder / f"ood-{profile}-{i:03d}.mp4"), ood_frames(profile, rng))
        cli("index", "add", str(run), str(folder), "--window", "0")
    checkpoint = resolve_checkpoint(str(run))
    model, cfg, state = load_model(checkpoint)
    queries = test_queries(builtin_root(str(data), args.videos) / "manifest.jsonl")
    with torch.no_grad():
        text = model.encode_text(torch.from_numpy(tokenize([q for q, _ in queries], cfg.data.max_words))).numpy()
    index = GalleryIndex.load(str(home_of(checkpoint)))
    ood = np.array([v.startswith("ood-") for v in index.video_ids])
    held = held_out_rows(index.hashes)
    assert not (held & ood).any() and held.sum() == len(ood) - ood.sum(), "held-out rows are the test split"
    truth = np.array([index.row_of[v] for _, v in queries])
    sims, tau, bank = text @ index.plain.T, index.temperature, training_bank(state)
    per_item = [m for m in ITEM_BIAS_METHODS if m in SERVED_METHODS]
    raw, served = bank_biases(bank, index.plain, tau, per_item), bank_biases(bank, index.plain, tau, per_item, held)
    rows = [{"method": "none", "rule": "-", **measure(sims, np.zeros(len(ood)), tau, truth, ood)}]
    for m in per_item:
        rows.append({"method": m, "rule": "raw", **measure(sims, raw[m], tau, truth, ood)})
        rows.append({"method": m, "rule": "served (cap)", **measure(sims, served[m], tau, truth, ood)})
    for name, vectors in (("caption", bank.queries.numpy()), ("video", bank.videos.numpy())):
        cover = (index.plain @ vectors.T).max(axis=1)  # (C,) nearest training caption / video
        rows.append({"method": "ncl", "rule": f"{name} shrink", **measure(sims, shrunk(raw["ncl"], cover, held),
                                                                          tau, truth, ood)})
    rows = [{k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    write("out_of_domain", rows, {"test videos": int(held.sum()), "ood": int(ood.sum()), "queries": len(queries),
                                  "run": str(run)})

if __name__ == "__main__":
    main()
