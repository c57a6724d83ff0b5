"""Sinkhorn-Knopp biases of NCL (Park et al., EMNLP 2022, arXiv 2212.11790).

For a query-by-gallery logit matrix L (R x C), find one bias per gallery item b_c such that, with
p~(c | r) = softmax_c(L_rc + b_c), every gallery item collects the same total probability
sum_r p~(c | r) = R / C. In the log domain, alternately:

    u_r = -logsumexp_c(L_rc + b_c)             (rows of K = exp(L + u + b) sum to 1)
    b_c = log(R/C) - logsumexp_r(L_rc + u_r)   (columns sum to R/C)

Why log space and fp32: logits are similarities times a scale of up to 100, and exp(100) overflows fp32
(max ~3.4e38 = e^88.7). Why no_grad: the biases are treated as constants by default (ncl.detach_biases);
a caller that wants gradients through them passes `with_grad=True`.
No collectives: the caller gathers the queries first, so every worker computes the same biases.
"""

import math
from typing import Tuple

import torch


def _iterate(logits: torch.Tensor, n_iters: int) -> Tuple[torch.Tensor, torch.Tensor]:
    R, C = logits.shape
    L = logits.float()  # (R, C)
    u = torch.zeros(R, dtype=L.dtype, device=L.device)  # (R,)
    b = torch.zeros(C, dtype=L.dtype, device=L.device)  # (C,)
    if n_iters == 0:
        return u, b
    log_col_mass = math.log(R / C)
    for _ in range(n_iters):
        u = -torch.logsumexp(L + b[None, :], dim=1)  # (R,)
        b = log_col_mass - torch.logsumexp(L + u[:, None], dim=0)  # (C,)
    b = b - b.mean()  # defined up to a constant
    u = -torch.logsumexp(L + b[None, :], dim=1)  # rows are exact distributions again
    return u, b


def sinkhorn_biases(
    logits: torch.Tensor, n_iters: int, with_grad: bool = False
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Row and column biases that balance the gallery's total retrieval probability.

    Args:
        logits: (R, C) query-by-gallery logits l_rc = s_rc / tau; any float dtype (computed in fp32).
        n_iters: Sinkhorn iterations; 0 returns zero biases (plain softmax, i.e. CLIP).
        with_grad: keep the autograd graph through the iterations.

    Returns:
        row_bias (R,) and column bias (C,), fp32. Column biases are centred (mean 0); row biases make every row
        of softmax(L + b) a distribution. After convergence sum_r softmax_c(L_rc + b_c) = R / C for every c.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D (R, C), got shape {tuple(logits.shape)}")
    if n_iters < 0:
        raise ValueError(f"n_iters must be >= 0, got {n_iters}")
    if with_grad:
        return _iterate(logits, n_iters)
    with torch.no_grad():
        return _iterate(logits.detach(), n_iters)


def column_mass(logits: torch.Tensor, col_bias: torch.Tensor) -> torch.Tensor:
    """Sum retrieval probability of each gallery item, P(c) = sum_r softmax_c(L_rc + b_c). Returns (C,)."""
    return torch.softmax(logits.float() + col_bias[None, :].float(), dim=1).sum(dim=0)  # (C,)


def normalization_error(logits: torch.Tensor, col_bias: torch.Tensor) -> float:
    """Mean over gallery items of |P(c) - R/C| / (R/C) (NCL.md, diagnostics)."""
    R, C = logits.shape
    target = R / C
    return float(((column_mass(logits, col_bias) - target).abs() / target).mean())
