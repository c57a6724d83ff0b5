"""Epochs over (video, caption) pairs (`data.samples=pairs`), CLIP4Clip's MSR-VTT training set. No Ray.

    order = pair_order(n_captions, seed, epoch)            # (P, 2): (video, caption), one global permutation
    rows = rank_rows(order, step, rank, batch, world)      # (B, 2): this rank's part of global batch `step`
    steps = pair_steps(n_captions, batch * world)          # P // N, the last partial batch dropped

CLIP4Clip (`--expand_msrvtt_sentences`) makes every caption of every training video a sample: MSR-VTT's 9k
split gives 180,000 pairs, 1,406 steps of 128 per epoch, with a new permutation of all pairs every epoch
(DistributedSampler.set_epoch). Here every rank computes the same permutation from (seed, epoch) and takes rows
`[step * N + rank * B, step * N + (rank + 1) * B)` of it, so the W ranks together see global batch `step` of
one global permutation. A video can appear twice in a batch with two of its captions, as in CLIP4Clip.
Frames are stored once per video; a pair only names the video (see pipeline.PairStore).
"""

import numpy as np


def all_pairs(n_captions: np.ndarray) -> np.ndarray:
    """(P, 2) int64 (video index, caption index) for every caption of every video, in video order."""
    n = np.asarray(n_captions, np.int64)  # (V,)
    videos = np.repeat(np.arange(len(n)), n)  # (P,)
    starts = np.repeat(np.cumsum(n) - n, n)  # (P,) first pair of each pair's video
    return np.stack([videos, np.arange(len(videos)) - starts], axis=1)  # (P, 2)


def pair_order(n_captions: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """Every pair once, in a permutation drawn from (seed, epoch): the same on every rank."""
    pairs = all_pairs(n_captions)  # (P, 2)
    rng = np.random.default_rng([int(seed), int(epoch), 0x9A125])
    return pairs[rng.permutation(len(pairs))]  # (P, 2)


def pair_steps(n_captions: np.ndarray, global_batch: int) -> int:
    """Steps per epoch: the number of pairs // global batch (the last partial batch is dropped)."""
    return int(np.asarray(n_captions, np.int64).sum()) // int(global_batch)


def rank_rows(order: np.ndarray, step: int, rank: int, batch: int, world: int) -> np.ndarray:
    """(B, 2) rows of global batch `step` that belong to `rank`."""
    start = step * batch * world + rank * batch
    return order[start: start + batch]  # (B, 2)
