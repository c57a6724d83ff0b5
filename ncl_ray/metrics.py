"""Retrieval metrics: R@1/5/10 (percent), median and mean rank, for one or several correct items per query.

Conventions (tests/unit/ncl/test_metrics.py checks each against hand-computed cases):
- Ties count against the model (pessimistic rank): a collapsed model that scores everything equally gets the
  worst rank, never a perfect one. CLIP4Clip's `compute_metrics` instead finds the correct score in the sorted
  row with `np.where`, so a tie gives the best rank (and an extra entry); the two agree whenever scores differ.
- MdR is numpy's median (the mean of the two middle ranks for an even count), as CLIP4Clip's `compute_metrics`
  (used for t2v with one caption per video and for v2t); CLIP4Clip's multi-caption t2v path uses
  `torch.median`, the lower middle rank, which can differ by half a rank.
- v2t with several captions per video, two protocols:
  - `v2t` (strict): every (video, own caption) pair is ranked against the captions of other videos only.
  - `v2t_lenient`: CLIP4Clip's protocol (`tensor_video_to_text_sim`): each other video is scored by its best
    caption (max over its captions), so it counts once; the query video's own best caption is then ranked among
    those V per-video scores.
"""

from typing import Dict, Tuple

import numpy as np
import torch


def correct_ranks(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1-based rank of each query's one correct item.

    Args:
        scores: (Q, G) ranking scores, higher is better.
        target: (Q,) index of the correct gallery item per query.
    Returns: (Q,) long ranks.
    """
    correct = scores.gather(1, target[:, None].long())  # (Q, 1)
    return (scores >= correct).sum(dim=1)  # the correct item counts itself, ties count against


def multi_correct_ranks(scores: torch.Tensor, item_of_gallery: torch.Tensor,
                        first_query: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Ranks when a query has several correct gallery items (v2t with many captions per video).

    Args:
        scores: (V, C) scores of V queries (videos) against C gallery items (captions).
        item_of_gallery: (C,) the query index each gallery item belongs to.
        first_query: index of the first row of `scores` (for row blocks).
    Returns:
        strict (P,) ranks of every correct pair, each ranked only against the incorrect items;
        lenient (V,) CLIP4Clip's rank: gallery items pooled per owner by max, the query's own owner ranked.
    """
    V, C = scores.shape
    queries = torch.arange(first_query, first_query + V, device=scores.device)  # (V,)
    positive = item_of_gallery[None, :].long() == queries[:, None]  # (V, C)
    negatives = torch.where(positive, torch.full_like(scores, float("-inf")), scores)  # (V, C)
    sorted_neg = negatives.sort(dim=1).values  # (V, C) ascending, positives first as -inf
    n_ge = C - torch.searchsorted(sorted_neg.contiguous(), scores.contiguous(), side="left")  # negatives >= s
    ranks = n_ge + 1  # (V, C)
    strict = ranks[positive]  # (P,)
    n_owners = max(int(item_of_gallery.max()) + 1, first_query + V)
    pooled = torch.full((V, n_owners), float("-inf"), dtype=scores.dtype, device=scores.device)
    pooled = pooled.scatter_reduce(1, item_of_gallery[None, :].long().expand(V, C), scores, "amax")  # (V, n_owners)
    lenient = correct_ranks(pooled, queries)  # (V,)
    return strict, lenient


def metrics_from_ranks(ranks: torch.Tensor) -> Dict[str, float]:
    r = ranks.double()
    return {
        "R@1": 100.0 * float((r <= 1).double().mean()),
        "R@5": 100.0 * float((r <= 5).double().mean()),
        "R@10": 100.0 * float((r <= 10).double().mean()),
        "MdR": float(np.median(r.cpu().numpy())),  # numpy median: mean of the middle two
        "MnR": float(r.mean()),
    }


def retrieval_metrics(scores: torch.Tensor, target: torch.Tensor) -> Dict[str, float]:
    """Metrics of (Q, G) scores with one correct item per query, target (Q,)."""
    return metrics_from_ranks(correct_ranks(scores, target))
