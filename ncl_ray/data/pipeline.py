"""Ray Data pipeline: manifest -> parallel PyAV decode -> decoded-clip cache (Parquet) -> per-split datasets.

    entries = load_entries(cfg.data)                      # VideoEntry list (all splits)
    cache = build_clip_cache(entries, T, S, cache_dir)    # decodes once, in parallel; reused by later runs
    train = split_dataset(cache, entries, "train", ...)   # rows: frames uint8 (T,S,S,3), tokens (K,L), ...

Decoding runs as Ray tasks (one CPU each, as many as the cluster has CPUs unless `decode_concurrency` says
otherwise). The cache folder is keyed by the videos (path, size, mtime), T, S and the decoder version, so any
change of those decodes again. Videos that fail to decode are listed in the cache's summary.json, counted in
the run summary and left out of every split: never replaced by black frames.
This is the only data module that imports Ray.
"""

import hashlib
import json
import logging
import os
import shutil
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow.parquet as pq
import ray
from ray.data.expressions import col

from ncl_ray.data.decode import DECODER_VERSION, DecodeError, decode_batch, decode_video
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


def video_stats(entries: List[VideoEntry]) -> Dict[str, Tuple[int, int]]:
    """path -> (size, mtime_ns) of every video; (-1, -1) when missing."""
    out = {}
    for e in entries:
        try:
            st = os.stat(e.path)
            out[e.path] = (st.st_size, st.st_mtime_ns)
        except OSError:
            out[e.path] = (-1, -1)
    return out


def cache_key(entries: List[VideoEntry], num_frames: int, size: int,
              stats: Optional[Dict[str, Tuple[int, int]]] = None, encoding: str = "raw", quality: int = 90,
              sampler: str = "uniform", resize: str = "area") -> str:
    stats = stats if stats is not None else video_stats(entries)
    how = "" if (sampler, resize) == ("uniform", "area") else f"|{sampler}|{resize}"  # old keys stay valid
    h = hashlib.sha1(f"{DECODER_VERSION}|{num_frames}|{size}|{encoding}|{quality}{how}".encode())
    for e in sorted(entries, key=lambda e: e.video_id):
        size_, mtime = stats[e.path]
        h.update(f"{e.video_id}|{e.path}|{size_}|{mtime}\n".encode())
    return h.hexdigest()[:16]


def remove_stale_temp(cache_dir: Path) -> List[str]:
    """Delete `clips-*.tmp-<host>-<pid>` folders of this host whose process is gone (a killed build)."""
    host, removed = socket.gethostname(), []
    for tmp in cache_dir.glob("clips-*.tmp-*"):
        owner = tmp.name.rsplit(".tmp-", 1)[1]
        h, _, pid = owner.rpartition("-")
        if h != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp.name)
        except PermissionError:  # alive, another user's
            pass
    if removed:
        log.info("removed %d unfinished cache folder(s) of killed builds: %s", len(removed), ", ".join(removed))
    return removed


@dataclass
class ClipCache:
    """A folder of decoded clips (Parquet: video_id, path, frames bytes, error) and what failed."""
    path: str
    num_frames: int
    size: int
    total: int
    skipped: List[Dict[str, str]] = field(default_factory=list)  # {video_id, path, error}
    encoding: str = "raw"  # raw | jpeg (data/framecodec.py)
    bytes_per_clip: float = 0.0  # Parquet bytes on disk / decoded clips
    seconds: float = 0.0  # time the build took
    sampler: str = "uniform"  # data.sampler; clip4clip rows carry n_frames (real frames, zero frames after)
    resize: str = "area"  # data.resize

    @property
    def decoded(self) -> int:
        return self.total - len(self.skipped)


def build_clip_cache(entries: List[VideoEntry], num_frames: int, size: int, cache_dir: str,
                     threads: int = 1, concurrency: int = 0, encoding: str = "jpeg", quality: int = 90,
                     sampler: str = "uniform", resize: str = "area") -> ClipCache:
    """Decode every video once, in parallel Ray tasks, into `cache_dir`; reuse a matching cache."""
    import time

    started = time.time()
    before = video_stats(entries)
    key = cache_key(entries, num_frames, size, before, encoding, quality, sampler, resize)
    out = Path(cache_dir).absolute() / f"clips-T{num_frames}-S{size}-{encoding}-{key}"
    summary = out / "summary.json"
    if summary.exists():
        cache = ClipCache(**json.loads(summary.read_text()))
        log.info("clip cache: %d clips (%d skipped) already decoded in %s", cache.decoded, len(cache.skipped), out)
        return cache
    if out.parent.is_dir():
        remove_stale_temp(out.parent)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    workers = concurrency or max(1, cpus)
    log.info("decoding %d videos (%d frames at %d px) with %d parallel tasks into the clip cache %s", len(entries),
             num_frames, size, workers, out)
    ds = ray.data.from_items([{"video_id": e.video_id, "path": e.path} for e in entries],
                             override_num_blocks=max(1, min(len(entries), 4 * workers)))
    # The same task-pool size on the decode and the write lets Ray Data fuse them into one operator
    # (MapBatches->Write): unfused, the write operator holds back part of the CPU budget and fewer decodes run.
    from ncl_ray.ui.console import Progress
    from ncl_ray.ui.progress import new_board, watch

    board = new_board()
    bar = Progress("decode", len(entries), "videos")
    ds = ds.map_batches(decode_batch, fn_kwargs=dict(num_frames=num_frames, size=size, threads=threads,
                                                     progress=board, encoding=encoding, quality=quality,
                                                     sampler=sampler, resize=resize),
                        batch_size=4, compute=ray.data.TaskPoolStrategy(size=workers), num_cpus=1)
    tmp = out.with_name(out.name + f".tmp-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with watch(board, lambda st: bar.update(st.get("done", 0), f"{st.get('skipped', 0)} skipped")):
            ds.write_parquet(str(tmp), concurrency=workers)
        bar.close()
        changed = [p for p, st in video_stats(entries).items() if st != before[p]]
        if changed:
            raise RuntimeError(f"{len(changed)} video(s) changed while the clip cache was built, e.g. {changed[0]}; "
                               f"nothing was cached: run again once the videos are final")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # The small status columns are read here directly (milliseconds; a Ray Data read costs seconds).
    status = pq.read_table(str(tmp), columns=["video_id", "path", "error"]).to_pandas()
    bad = status[status["error"] != ""]
    n_bytes = sum(f.stat().st_size for f in tmp.rglob("*.parquet"))
    cache = ClipCache(str(out), num_frames, size, len(status),
                      [{"video_id": r.video_id, "path": r.path, "error": r.error} for r in bad.itertuples()],
                      encoding, n_bytes / max(1, len(status) - len(bad)), round(time.time() - started, 2),
                      sampler, resize)
    for s in cache.skipped[:5]:
        log.warning("skipped video %s: %s: %s", s["video_id"], s["path"], s["error"])
    if len(cache.skipped) > 5:
        log.warning("... and %d more skipped videos (all listed in %s)", len(cache.skipped) - 5, summary)
    if cache.decoded == 0:
        raise RuntimeError(f"no video could be decoded ({len(entries)} tried); first error: "
                           f"{cache.skipped[0]['path']}: {cache.skipped[0]['error']}")
    (tmp / "summary.json").write_text(json.dumps(asdict(cache), indent=1))
    try:
        tmp.rename(out)
    except OSError:  # another run finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


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


def split_dataset(cache: ClipCache, entries: List[VideoEntry], split: str, max_captions: int,
                  max_words: int, keep_encoded: bool = False, decode: bool = True) -> "ray.data.Dataset":
    """Rows of one split: frames uint8 (T,S,S,3), tokens int32 (K,L), n_captions, index. With `keep_encoded`
    the split's cache rows (compact bytes) are read once into the object store and only decoded per iteration.
    Without `decode` (a JPEG cache only), rows carry the JPEG blob (`jpeg`) instead of `frames`."""
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
    columns = ["video_id", "frames"] + (["n_frames"] if cache.sampler != "uniform" else [])
    ds = ray.data.read_parquet(cache.path).select_columns(columns)
    ds = ds.filter(expr=col("video_id").is_in(list(table)))
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


def stream_dataset(entries: List[VideoEntry], split: str, num_frames: int, size: int, max_captions: int,
                   max_words: int, threads: int = 1, jitter: bool = False, sampler: str = "uniform",
                   resize: str = "area") -> "ray.data.Dataset":
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
    return ds.map_batches(_decode_attach, fn_kwargs=dict(table=table, num_frames=num_frames, size=size,
                                                         threads=threads, jitter=jitter, sampler=sampler,
                                                         resize=resize),
                          batch_size=4, num_cpus=1)
