"""dn: Distribution Normalization (Zhou et al., NeurIPS 2023, `fengyuli-dev/distribution-normalization`). No Ray.

The rule its retrieval code applies (`compute_retrieval.py`): features are unit-norm; from each modality's features
it subtracts LAMBDA = 0.25 times their mean over a held-out sample (100 random validation items, repeated 5 times),
without normalising again, and scores (t - lambda mu_t) . (v - lambda mu_v).

Here the mean comes from the bank (eval.bank: all of its queries, so the result is deterministic), and the score
keeps DN's ranking within a query: s_ij - lambda mu_Q . g_j, where mu_Q . g_j is the mean of item j's column of
bank similarities. That is a per-item bias depending on the item's own column (it folds into an index). The
per-query terms of DN's product, -lambda q_i . mu_G + lambda^2 mu_Q . mu_G, move a whole row by one amount: they
change no ranking and are left out (they would need the gallery's mean too).
"""

import torch

from ncl_ray.ncl.sims import Scorer, Sims, column_mean


def dn_gallery_bias(bank: Sims, lam: float = 0.25) -> torch.Tensor:
    """DN's bias on the similarity scale (C,): -lambda times the bank's mean similarity with each item."""
    return -lam * column_mean(bank)


def dn_scorer(bank: Sims, temperature: float, lam: float) -> Scorer:
    b = dn_gallery_bias(bank, lam) / temperature  # (C,) logit scale

    def dn(rows: slice, s: torch.Tensor) -> torch.Tensor:
        return s / temperature + b[None, :]

    dn.fold_bias = b
    return dn
