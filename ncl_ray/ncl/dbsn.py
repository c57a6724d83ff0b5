"""dbsn: DBSN, Dual Bank Sinkhorn Normalization (Pan et al., ACM MM 2025, `ppanzx/DBSN`). No Ray.

The rule of its code (`Sinkhorn_Normalization` on the stacked similarities, `Image_Retrieval/dbsn.py`): the rows
are the test gallery's items followed by a bank of gallery items, the columns a bank of queries; POT's
`ot.sinkhorn(a, b, 1 - sims, reg, numItermax)` with uniform a (items) and b (bank queries) gives the scalings u
(items) and v (queries) of K = exp(-(1 - s) / reg); an item's hubness is -reg log u_j, and a test query scores
s_ij + reg log u_j. Its settings: reg = 0.01, numItermax = 10 (`Video_Retrieval/methods.py`, which runs the same
normalisation over the test queries themselves, uses 5).

POT's iteration, starting from u = 1/N, v = 1/B: v = b / K^T u, then u = a / K v, numItermax times. Here it runs in
the log domain over row blocks (each block of bank queries against the test gallery and the gallery bank side by
side), which equals it wherever POT's float64 products do not underflow; POT's early stop (its marginal error
below 1e-9, checked every 10th iteration) is not applied. The bias depends on the whole gallery, like ncl's.
"""

import math

import torch

from ncl_ray.ncl.sims import GalleryBank, Scorer, Sims, side_by_side


@torch.no_grad()
def dbsn_log_scaling(bank: Sims, gallery_bank: GalleryBank, reg: float = 0.01, iters: int = 10) -> torch.Tensor:
    """log u (C + G,) of POT's Sinkhorn on K = exp((s - 1) / reg), items = test gallery then gallery bank."""
    both = side_by_side(bank, gallery_bank.cross)  # (B, C + G)
    B, N = both.n_rows, both.n_cols
    log_a, log_b = -math.log(N), -math.log(B)
    log_u = torch.full((N,), log_a, dtype=torch.float64)
    for _ in range(iters):
        acc = torch.full((N,), float("-inf"), dtype=torch.float64)
        for _, s in both.blocks():
            log_k = (s.double() - 1.0) / reg  # (r, N)
            log_v = log_b - torch.logsumexp(log_k + log_u[None, :], dim=1)  # (r,) v = b / K^T u
            acc = torch.logaddexp(acc, torch.logsumexp(log_k + log_v[:, None], dim=0))
        log_u = log_a - acc  # u = a / K v
    return log_u


def dbsn_scorer(bank: Sims, gallery_bank: GalleryBank, temperature: float, reg: float = 0.01,
                iters: int = 10) -> Scorer:
    C = bank.n_cols
    b = (reg * dbsn_log_scaling(bank, gallery_bank, reg, iters)[:C]).float() / temperature  # (C,) logit scale

    def dbsn(rows: slice, s: torch.Tensor) -> torch.Tensor:
        return s / temperature + b[None, :]

    dbsn.fold_bias = b
    return dbsn
