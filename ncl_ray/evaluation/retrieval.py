"""Score and rank queries block by block with a test-time normalisation; shared by `rerank` and `evaluate`."""

from typing import Dict, Optional

import torch

from ncl_ray.metrics import correct_ranks, metrics_from_ranks, multi_correct_ranks
from ncl_ray.ncl.normalize import Scorer, Sims, column_mass, normalization_error_of_mass


@torch.no_grad()
def direction_metrics(test: Sims, scorer: Scorer, target: Optional[torch.Tensor] = None,
                      owner: Optional[torch.Tensor] = None) -> Dict[str, Dict[str, float]]:
    """Metrics of one retrieval direction.

    Args:
        test: (R, C) similarities of test queries x gallery.
        scorer: from `normalize.make_scorer`.
        target: (R,) the one correct gallery item of each query; or
        owner: (C,) the query each gallery item belongs to (several correct items per query).
    Returns: {"strict": metrics} and, with `owner`, {"lenient": metrics} (best correct item per query).
    """
    ranks, lenient = [], []
    for rows, s in test.blocks():
        scores = scorer(rows, s)  # (r, C)
        if owner is None:
            ranks.append(correct_ranks(scores, target[rows]))
        else:
            strict_r, lenient_r = multi_correct_ranks(scores, owner, first_query=rows.start)
            ranks.append(strict_r)
            lenient.append(lenient_r)
    out = {"strict": metrics_from_ranks(torch.cat(ranks))}
    if owner is not None:
        out["lenient"] = metrics_from_ranks(torch.cat(lenient))
    return out


@torch.no_grad()
def score_mass(test: Sims, scorer: Scorer) -> torch.Tensor:
    """Sum retrieval probability of every gallery item under the scorer's softmax: (C,)."""
    mass = torch.zeros(test.n_cols)
    for rows, s in test.blocks():
        mass += torch.softmax(scorer(rows, s), dim=1).sum(dim=0)
    return mass


def normalization_errors(test: Sims, scorer: Scorer, temperature: float,
                         store: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, float]:
    """Normalisation error of the plain logits (before) and of the method's scores (after); the two (C,)
    sum-retrieval-probability vectors go to `store["before"]`, `store["after"]` when given."""
    before = column_mass(test, temperature, torch.zeros(test.n_cols))
    after = score_mass(test, scorer)
    if store is not None:
        store.update(before=before, after=after)
    return {"before": normalization_error_of_mass(before, test.n_rows),
            "after": normalization_error_of_mass(after, test.n_rows)}
