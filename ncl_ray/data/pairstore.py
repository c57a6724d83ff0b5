"""The training clips of `data.samples=pairs` in the object store, one object per video, read by pair.

    store = build_pair_store(cache, entries, "train", max_captions, max_words)   # driver, after the cache
    for batch in store.batches(seed, epoch, rank, B, W): ...                      # Train worker

A global permutation of pairs (data/pairs.py) needs any video at any position of any rank's stream, which a
Ray Data shard (each rank streams its own part of the videos) cannot give. The driver therefore puts each
training video's clip, as the cache stores it (JPEG or raw bytes: the compact form), into the object store
once, with the caption tokens; every rank computes the epoch's permutation itself and fetches the clips of
its rows (objects are pulled to the worker's node on first use and cached by Ray), decoding them in the
epoch feeder's thread. Memory: the encoded training split, once, in the cluster's object store (spilled to
disk by Ray when it does not fit). Frames are never stored once per caption.
"""

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow.dataset as pads
import ray

from ncl_ray.data.cache import parquet_files
from ncl_ray.data.framecodec import decode_clip
from ncl_ray.data.pairs import pair_order, pair_steps, rank_rows
from ncl_ray.data.captions import caption_tokens


@dataclass
class PairStore:
    refs: List["ray.ObjectRef"]  # one encoded clip per training video, in split order
    tokens: "ray.ObjectRef"  # int32 (V, K, L)
    n_captions: np.ndarray  # (V,)
    encoding: str
    shape: Tuple[int, int, int, int]  # (T, S, S, 3)
    n_frames: Optional[np.ndarray] = None  # (V,) real frames per clip (clip4clip sampler); None = all T

    def steps(self, global_batch: int) -> int:
        return pair_steps(self.n_captions, global_batch)

    def batches(self, seed: int, epoch: int, rank: int, batch: int, world: int,
                decode: bool = True) -> Iterator[Dict[str, np.ndarray]]:
        """This rank's batches of one epoch: frames (B, T, S, S, 3) uint8, tokens (B, 1, L), n_captions (B,)
        ones, index (B,) the videos' split positions, and n_frames (B,) with the clip4clip sampler. Without
        `decode` (a JPEG cache, data.decode_on=worker) a batch carries `jpeg`, the B clips' blobs, in place of
        frames: the trainer decodes them on its device (train/transfer.py)."""
        if not decode and self.encoding != "jpeg":
            raise ValueError(f"pairs: blobs to decode in the trainer need a JPEG clip cache, not {self.encoding}")
        order = pair_order(self.n_captions, seed, epoch)  # (P, 2)
        tokens = ray.get(self.tokens)  # (V, K, L)
        for step in range(self.steps(batch * world)):
            rows = rank_rows(order, step, rank, batch, world)  # (B, 2)
            clips = ray.get([self.refs[v] for v in rows[:, 0]])
            pixels = {"frames": np.stack([decode_clip(c, self.encoding, self.shape) for c in clips])} if decode \
                else {"jpeg": list(clips)}
            batch_ = {**pixels, "tokens": tokens[rows[:, 0], rows[:, 1]][:, None, :],  # (B, 1, L)
                      "n_captions": np.ones(len(rows), np.int64),
                      "index": rows[:, 0].copy()}
            if self.n_frames is not None:
                batch_["n_frames"] = self.n_frames[rows[:, 0]]  # (B,)
            yield batch_


def build_pair_store(cache, videos, max_captions: int, max_words: int) -> PairStore:
    """Put the clips of `videos` (a split's decodable VideoEntry list, split order) into the object store."""
    position = {e.video_id: i for i, e in enumerate(videos)}
    refs: List = [None] * len(videos)
    counts = np.zeros(len(videos), np.int64)
    with_counts = cache.sampler != "uniform"
    columns = ["video_id", "frames"] + (["n_frames"] if with_counts else [])
    fs, files, _ = parquet_files(cache.path)  # a local folder or a URI
    table = pads.dataset(files, format="parquet", filesystem=fs)
    for part in table.to_batches(columns=columns, filter=pads.field("video_id").isin(list(position)), batch_size=64):
        ns = part.column("n_frames").to_pylist() if with_counts else [0] * part.num_rows
        for vid, frames, n in zip(part.column("video_id").to_pylist(), part.column("frames").to_pylist(), ns):
            refs[position[vid]] = ray.put(frames)
            counts[position[vid]] = n
    missing = [videos[i].video_id for i, r in enumerate(refs) if r is None]
    if missing:
        raise RuntimeError(f"clip cache {cache.path} lacks {len(missing)} training video(s), e.g. {missing[0]}")
    tokens = np.stack([caption_tokens(e.captions, max_captions, max_words) for e in videos])  # (V, K, L)
    n = np.array([min(len(e.captions), max_captions) for e in videos], np.int64)  # (V,)
    return PairStore(refs, ray.put(tokens), n, cache.encoding, (cache.num_frames, cache.size, cache.size, 3),
                     counts if with_counts else None)
