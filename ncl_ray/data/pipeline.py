"""Ray Data pipeline: manifest -> parallel PyAV decode -> decoded-clip cache (Parquet) -> per-split datasets.

    entries = load_entries(cfg.data)                      # VideoEntry list (all splits)
    cache = build_clip_cache(entries, ClipSpec(T, S), cache_dir)   # decodes once, in parallel; reused later
    train = split_dataset(cache, entries, "train", ...)   # rows: frames uint8 (T,S,S,3), tokens (K,L), ...

Decoding runs as Ray tasks (one CPU each, as many as the cluster has CPUs unless `decode_concurrency` says
otherwise), into the clip cache (data/cache.py: a local folder or an object-storage URI). Videos that fail to
decode are left out of every split: never replaced by black frames.
"""

import logging
from typing import Dict, List, Optional, Tuple

import numpy as np
import ray
from ray.data.expressions import col

from ncl_ray.data.cache import ClipCache, build_clip_cache, cache_key, remove_stale_temp, video_stats  # noqa: F401
from ncl_ray.data.decode import ClipSpec, DecodeError, decode_video
from ncl_ray.data.framecodec import decode_clip
from ncl_ray.data.manifest import READERS, VideoEntry, read_manifest
from ncl_ray.data.captions import caption_tokens

log = logging.getLogger(__name__)


def load_entries(dataset: str, root: str, manifest: str = "", synthetic_videos: int = 160,
                 synthetic_profile: str = "uniform", holdout: bool = True) -> List[VideoEntry]:
    """All videos of a dataset; the built-in synthetic dataset is generated on first use. `holdout=False`
    (train.protocol=published) keeps the named datasets' validation videos in training."""
    if dataset == "synthetic":
        from ncl_ray.data.synthetic import builtin_root, make_dataset

        folder = builtin_root(root, synthetic_videos, profile=synthetic_profile)
        path = folder / "manifest.jsonl"
        if not path.exists():  # generated once per size, atomically (never rewritten in place)
            log.info("generating the built-in dataset: %d videos in %s", synthetic_videos, folder)
            make_dataset(str(folder), synthetic_videos, profile=synthetic_profile)
        entries = read_manifest(str(path))
        if len(entries) != synthetic_videos:
            raise ValueError(f"{path}: holds {len(entries)} videos, expected {synthetic_videos}; remove {folder}")
        return entries
    if dataset == "manifest":
        return read_manifest(manifest)
    return READERS[dataset](root, holdout=holdout)


def _attach(batch: Dict[str, np.ndarray], table: Dict[str, Tuple[int, np.ndarray, int]],
            shape: Tuple[int, ...], encoding: str = "raw", decode: bool = True) -> Dict[str, np.ndarray]:
    """Frames as uint8 tensors (decoded from the cache's encoding, in this CPU task) plus the caption tokens of
    rows already filtered to the split (see split_dataset). Without `decode`, the JPEG blobs travel as they are
    (column `jpeg`), for the training worker to decode (on its GPU: data/gpujpeg.py)."""
    rows = [table[vid] for vid in batch["video_id"]]
    frames = ({"frames": np.stack([decode_clip(f, encoding, shape) for f in batch["frames"]])}  # (b, T, S, S, 3)
              if decode else {"jpeg": np.asarray(batch["frames"], dtype=object)})  # (b,) bytes
    out = {
        **frames,
        "tokens": np.stack([r[1] for r in rows]),  # (b, K, L)
        "n_captions": np.array([r[2] for r in rows], np.int64),  # (b,)
        "index": np.array([r[0] for r in rows], np.int64),  # (b,) position in the split's video list
    }
    if "n_frames" in batch:  # clip4clip sampler: real frames per clip (the model masks the rest)
        out["n_frames"] = np.asarray(batch["n_frames"], np.int64)  # (b,)
    return out


def split_videos(cache: ClipCache, entries: List[VideoEntry], split: str) -> List[VideoEntry]:
    """The split's decodable videos, in manifest order (their position is the `index` column)."""
    bad = {s["video_id"] for s in cache.skipped}
    return [e for e in entries if e.split == split and e.video_id not in bad]


def cache_rows(cache: ClipCache) -> "ray.data.Dataset":
    """The clip cache's rows as Ray Data reads them (video_id, frames as stored, n_frames for the clip4clip
    sampler). Materialized once, they feed every split without reading the Parquet files again."""
    columns = ["video_id", "frames"] + (["n_frames"] if cache.sampler != "uniform" else [])
    return ray.data.read_parquet(cache.path).select_columns(columns)


def split_dataset(cache: ClipCache, entries: List[VideoEntry], split: str, max_captions: int,
                  max_words: int, keep_encoded: bool = False, decode: bool = True,
                  rows: Optional["ray.data.Dataset"] = None) -> "ray.data.Dataset":
    """Rows of one split: frames uint8 (T,S,S,3), tokens int32 (K,L), n_captions, index. With `keep_encoded`
    the split's cache rows (compact bytes) are read once into the object store and only decoded per iteration.
    Without `decode` (a JPEG cache only), rows carry the JPEG blob (`jpeg`) instead of `frames`. `rows`: the
    cache's rows already in the object store (cache_rows, materialized), else the split reads the cache."""
    if not decode and cache.encoding != "jpeg":
        raise ValueError(f"only a JPEG clip cache can be decoded by the worker, this one is {cache.encoding}")
    videos = split_videos(cache, entries, split)
    if not videos:
        raise ValueError(f"split '{split}' has no decodable video")
    table = {e.video_id: (i, caption_tokens(e.captions, max_captions, max_words), min(len(e.captions), max_captions))
             for i, e in enumerate(videos)}
    shape = (cache.num_frames, cache.size, cache.size, 3)
    # Filter on video_id first (pushed into the Parquet read where Ray Data can): blocks without any of this
    # split's videos then never reach _attach, whose empty output would not stay a tensor column.
    ds = (rows if rows is not None else cache_rows(cache)).filter(expr=col("video_id").is_in(list(table)))
    if keep_encoded:
        ds = ds.materialize()
    return ds.map_batches(_attach, fn_kwargs=dict(table=table, shape=shape, encoding=cache.encoding, decode=decode),
                          batch_size=32)


def _decode_attach(batch: Dict[str, np.ndarray], table: Dict[str, Tuple[int, np.ndarray, int]], num_frames: int,
                   size: int, threads: int, jitter: bool, sampler: str = "uniform",
                   resize: str = "area") -> Dict[str, np.ndarray]:
    """Streaming: decode this batch's videos now (a random time inside each slice with `jitter`), attach
    captions; videos that fail are dropped from the batch (and logged by the task)."""
    rng = np.random.default_rng() if jitter else None
    frames, rows, counts = [], [], []
    for vid, path in zip(batch["video_id"], batch["path"]):
        try:
            clip, n = decode_video(str(path), num_frames, size, threads, sampler, resize, jitter=rng)
            frames.append(clip)
            counts.append(n)
            rows.append(table[vid])
        except DecodeError as e:
            log.warning("streaming: skipped video %s: %s", vid, e)
    shape = (num_frames, size, size, 3)
    return {
        "frames": np.stack(frames) if frames else np.empty((0, *shape), np.uint8),  # (b, T, S, S, 3)
        "tokens": np.stack([r[1] for r in rows]) if rows else np.empty((0, 0, 0), np.int32),  # (b, K, L)
        "n_captions": np.array([r[2] for r in rows], np.int64),  # (b,)
        "index": np.array([r[0] for r in rows], np.int64),  # (b,)
        "n_frames": np.array(counts, np.int64),  # (b,)
    }


def stream_dataset(entries: List[VideoEntry], split: str, spec: ClipSpec, max_captions: int, max_words: int,
                   jitter: bool = False) -> "ray.data.Dataset":
    """Rows of one split decoded from the videos every time the dataset is iterated (every epoch), in Ray
    Data tasks: for corpora too large to cache. The same columns as `split_dataset`."""
    videos = [e for e in entries if e.split == split]
    if not videos:
        raise ValueError(f"split '{split}' has no video")
    table = {e.video_id: (i, caption_tokens(e.captions, max_captions, max_words), min(len(e.captions), max_captions))
             for i, e in enumerate(videos)}
    cpus = int(ray.cluster_resources().get("CPU", 1))
    ds = ray.data.from_items([{"video_id": e.video_id, "path": e.path} for e in videos],
                             override_num_blocks=max(1, min(len(videos), 4 * cpus)))
    return ds.map_batches(_decode_attach, fn_kwargs=dict(table=table, num_frames=spec.num_frames, size=spec.size,
                                                         threads=spec.threads, jitter=jitter, sampler=spec.sampler,
                                                         resize=spec.resize),
                          batch_size=4, num_cpus=1)
