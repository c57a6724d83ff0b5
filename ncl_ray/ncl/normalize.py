"""Test-time normalisation of query-by-gallery similarities (NCL.md, "Test time").

Methods, all returning ranking scores of the same shape as the similarities:
- none:   s_ij / tau.
- ncl:    s_ij / tau + b_j, with b from Sinkhorn on a bank of queries x gallery (training queries by default,
          so single queries can be served; bank = test is transductive).
- dsl:    dual softmax (CAMoE): s_ij * softmax_i(s_ij / tau), the prior over *test queries* (transductive).
- qbnorm: dynamic inverted softmax (QB-Norm, Bogolin et al. 2022): beta * s_ij - logsumexp_bank(beta * B_.j)
          for queries whose top-k gallery items are all in the bank's activated set, raw s_ij otherwise.
"""

from typing import Optional

import torch

from ncl_ray.ncl.sinkhorn import sinkhorn_biases

METHODS = ("none", "ncl", "dsl", "qbnorm")


def ncl_gallery_bias(bank_sims: torch.Tensor, temperature: float, n_iters: int) -> torch.Tensor:
    """Column biases b (C,) from bank similarities (R_bank, C), on logits bank_sims / tau."""
    _, b = sinkhorn_biases(bank_sims.float() / temperature, n_iters)
    return b


def dsl_scores(sims: torch.Tensor, temperature: float) -> torch.Tensor:
    """Dual softmax: (Q, C) similarities times the softmax over queries of each gallery column."""
    s = sims.float()
    return s * torch.softmax(s / temperature, dim=0)  # (Q, C)


def qbnorm_scores(sims: torch.Tensor, bank_sims: torch.Tensor, beta: float = 20.0, k: int = 1) -> torch.Tensor:
    """Dynamic inverted softmax. sims (Q, C), bank_sims (R_bank, C) -> scores (Q, C).

    Rows are compared only within themselves, so mixing normalised and raw rows does not change any ranking
    other than that row's own.
    """
    s, bank = sims.float(), bank_sims.float()
    C = s.shape[1]
    k = min(k, C)
    col_lse = torch.logsumexp(beta * bank, dim=0)  # (C,)
    activated = torch.zeros(C, dtype=torch.bool, device=s.device)
    activated[bank.topk(k, dim=1).indices.reshape(-1)] = True  # gallery items in some bank query's top-k
    top = s.topk(k, dim=1).indices  # (Q, k)
    normalise = activated[top].all(dim=1)  # (Q,)
    normed = beta * s - col_lse[None, :]  # (Q, C)
    return torch.where(normalise[:, None], normed, s)


def normalized_scores(sims: torch.Tensor, method: str, temperature: float,
                      bank_sims: Optional[torch.Tensor] = None, n_iters: int = 10,
                      qbnorm_beta: float = 20.0, qbnorm_k: int = 1) -> torch.Tensor:
    """Scores (Q, C) for ranking with `method`; `bank_sims` (R_bank, C) is required by ncl and qbnorm."""
    if method not in METHODS:
        raise ValueError(f"unknown normalisation method {method!r} (choose from {', '.join(METHODS)})")
    if method == "none":
        return sims.float() / temperature
    if method == "dsl":
        return dsl_scores(sims, temperature)
    if bank_sims is None:
        raise ValueError(f"method {method!r} needs bank similarities (queries of the bank x gallery)")
    if bank_sims.shape[1] != sims.shape[1]:
        raise ValueError(f"bank has {bank_sims.shape[1]} gallery columns, similarities have {sims.shape[1]}")
    if method == "ncl":
        return sims.float() / temperature + ncl_gallery_bias(bank_sims, temperature, n_iters)[None, :]
    return qbnorm_scores(sims, bank_sims, qbnorm_beta, qbnorm_k)
