"""Per-item biases made safe for the videos a user adds to a served index. No Ray.

A per-item bias computed from a query bank (NCL's Sinkhorn bias above all) lifts an item that no bank query
retrieves: Sinkhorn gives it the mass it is missing. For an item unlike anything the model was trained on (a
user's own video of another kind), "no query retrieves it" means "the bank says nothing about it", not "it is
under-retrieved", and the lift puts it into the top results of queries it does not answer.

The held-out rows of the index (the evaluation's test split: videos of the training distribution the model never
saw) show what lift an in-domain video gets. An added row may keep a bias up to the CAP-th percentile of theirs,
computed in the same gallery; a lower bias (a penalty: many bank queries retrieve it) is kept whole. Chosen
from `python -m bench.out_of_domain` (bench/RESULTS.md), beside shrinking each bias with the item's similarity
to the nearest training caption or training video: neither similarity separates out-of-domain videos from
held-out ones well enough to help.
"""

import torch

CAP = 50.0  # percentile of the held-out rows' biases up to which an added row keeps its bias
MIN_HELD_OUT = 8  # fewer held-out rows than this: no reference, so no cap (a gallery of the user's own videos only)


def cap_added(bias: torch.Tensor, held_out: torch.Tensor) -> torch.Tensor:
    """bias (C,), held_out (C,) bool -> the served bias (C,): a row not held out keeps at most the CAP-th
    percentile of the held-out rows' biases; unchanged when fewer than MIN_HELD_OUT rows are held out."""
    if int(held_out.sum()) < MIN_HELD_OUT:
        return bias
    cap = torch.quantile(bias[held_out].float(), CAP / 100.0)
    return torch.where(held_out, bias, torch.minimum(bias, cap.to(bias.dtype)))
