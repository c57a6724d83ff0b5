"""Test-time normalisation of query-by-gallery similarities (NCL.md, "Test time"), computed block by block.

Similarities are never materialised whole: a `Sims` yields row blocks (r, C), either slices of a stored
matrix or products of query and gallery embeddings, so a 100k gallery needs O(chunk x C) memory.

Methods, each a scorer `(rows, block) -> scores` for ranking within a row. Scores are on a logit scale (a
softmax over a row is a retrieval distribution), so the normalisation error is comparable across methods:
- none:   s_ij / tau.
- ncl:    s_ij / tau + b_j; b from Sinkhorn on a bank of queries x gallery (training queries by default, so a
          single query can be served; bank = test is transductive).
- dsl:    dual softmax (CAMoE): s_ij * softmax_i(s_ij / tau) / tau, the prior over *test queries* (transductive).
- qbnorm: dynamic inverted softmax (QB-Norm, Bogolin et al. CVPR 2022, `dynamic_inverted_softmax.py`):
          the activation set is every gallery item in some bank query's top-k; a query whose top-1 item is in
          that set is normalised, beta * s_ij - logsumexp_bank(beta * s_bank,j) (the log of QB-Norm's
          exp(beta s) / sum_bank exp(beta s_bank)); other queries keep s_ij / tau. Ties for the top-1 item go
          to the lowest column index (QB-Norm's argsort leaves them unspecified).
"""

import math
from typing import Callable, Iterator, List, Optional, Tuple

import torch

METHODS = ("none", "ncl", "dsl", "qbnorm")
Scorer = Callable[[slice, torch.Tensor], torch.Tensor]


class Sims:
    """Query-by-gallery similarities (R, C), produced in row blocks of at most `chunk` rows."""

    def __init__(self, n_rows: int, n_cols: int, block: Callable[[slice], torch.Tensor], chunk: int = 4096):
        self.n_rows, self.n_cols, self._block, self.chunk = n_rows, n_cols, block, chunk

    @staticmethod
    def dense(s: torch.Tensor, chunk: int = 4096) -> "Sims":
        return Sims(s.shape[0], s.shape[1], lambda sl: s[sl].float(), chunk)

    @staticmethod
    def embeddings(queries: torch.Tensor, gallery: torch.Tensor, chunk: int = 4096) -> "Sims":
        """queries (R, D) x gallery (C, D) -> blocks of queries[rows] @ gallery.T."""
        return Sims(queries.shape[0], gallery.shape[0], lambda sl: queries[sl].float() @ gallery.float().T, chunk)

    @staticmethod
    def stack(parts: List["Sims"]) -> "Sims":
        """Rows of several Sims over the same gallery, one after another (bank = train+test)."""
        offsets = [0]
        for p in parts:
            offsets.append(offsets[-1] + p.n_rows)

        def block(sl: slice) -> torch.Tensor:
            out = []
            for p, lo, hi in zip(parts, offsets, offsets[1:]):
                a, b = max(sl.start, lo), min(sl.stop, hi)
                if a < b:
                    out.append(p.block(slice(a - lo, b - lo)))
            return torch.cat(out)

        return Sims(offsets[-1], parts[0].n_cols, block, parts[0].chunk)

    def block(self, rows: slice) -> torch.Tensor:
        return self._block(rows)

    def blocks(self) -> Iterator[Tuple[slice, torch.Tensor]]:
        for start in range(0, self.n_rows, self.chunk):
            rows = slice(start, min(start + self.chunk, self.n_rows))
            yield rows, self.block(rows)  # (r, C)


@torch.no_grad()
def column_logsumexp(sims: Sims, scale: float, row_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """logsumexp over all rows of scale * s (+ row bias) for every column: (C,), fp32."""
    acc = torch.full((sims.n_cols,), float("-inf"))
    for rows, s in sims.blocks():
        x = scale * s  # (r, C)
        if row_bias is not None:
            x = x + row_bias[rows, None]
        acc = torch.logaddexp(acc, torch.logsumexp(x, dim=0))
    return acc


@torch.no_grad()
def ncl_gallery_bias(bank: Sims, temperature: float, n_iters: int) -> torch.Tensor:
    """Sinkhorn column biases (C,) of the bank's logits s / tau; the same iteration as
    `sinkhorn.sinkhorn_biases`, with every logsumexp accumulated over row blocks."""
    R, C = bank.n_rows, bank.n_cols
    b = torch.zeros(C)
    if n_iters == 0:
        return b
    scale = 1.0 / temperature
    for _ in range(n_iters):
        acc = torch.full((C,), float("-inf"))
        for _, s in bank.blocks():
            L = scale * s  # (r, C)
            u = -torch.logsumexp(L + b[None, :], dim=1)  # (r,)
            acc = torch.logaddexp(acc, torch.logsumexp(L + u[:, None], dim=0))
        b = math.log(R / C) - acc
    return b - b.mean()


@torch.no_grad()
def column_mass(sims: Sims, temperature: float, col_bias: torch.Tensor) -> torch.Tensor:
    """P(c) = sum_r softmax_c(s_rc / tau + b_c): (C,)."""
    mass = torch.zeros(sims.n_cols)
    for _, s in sims.blocks():
        mass += torch.softmax(s / temperature + col_bias[None, :], dim=1).sum(dim=0)
    return mass


def normalization_error_of_mass(mass: torch.Tensor, n_rows: int) -> float:
    target = n_rows / mass.numel()
    return float(((mass - target).abs() / target).mean())


@torch.no_grad()
def _activated(bank: Sims, k: int) -> torch.Tensor:
    active = torch.zeros(bank.n_cols, dtype=torch.bool)
    for _, s in bank.blocks():
        active[s.topk(k, dim=1).indices.reshape(-1)] = True
    return active


def make_scorer(method: str, test: Sims, temperature: float, bank: Optional[Sims] = None, n_iters: int = 10,
                qbnorm_beta: float = 20.0, qbnorm_k: int = 1) -> Scorer:
    """A function (rows, block of test sims) -> ranking scores, after the method's gallery statistics are
    computed once (ncl biases, dsl column sums, qbnorm bank sums)."""
    if method not in METHODS:
        raise ValueError(f"unknown normalisation method {method!r} (choose from {', '.join(METHODS)})")
    if method in ("ncl", "qbnorm"):
        if bank is None:
            raise ValueError(f"method {method!r} needs a bank of queries x gallery similarities")
        if bank.n_cols != test.n_cols:
            raise ValueError(f"bank has {bank.n_cols} gallery columns, similarities have {test.n_cols}")
    if method == "none":
        return lambda rows, s: s / temperature
    if method == "ncl":
        b = ncl_gallery_bias(bank, temperature, n_iters)

        def ncl(rows: slice, s: torch.Tensor) -> torch.Tensor:
            return s / temperature + b[None, :]

        ncl.bias = b  # (C,) for export: folded into the gallery embeddings
        return ncl
    if method == "dsl":
        lse = column_logsumexp(test, 1.0 / temperature)  # softmax over all test queries, per gallery item
        return lambda rows, s: s * torch.exp(s / temperature - lse[None, :]) / temperature
    k = min(qbnorm_k, test.n_cols)
    lse = column_logsumexp(bank, qbnorm_beta)  # (C,)
    active = _activated(bank, k)

    def qbnorm(rows: slice, s: torch.Tensor) -> torch.Tensor:
        normalise = active[s.argmax(dim=1)]  # (r,) the query's top-1 item is activated by the bank
        return torch.where(normalise[:, None], qbnorm_beta * s - lse[None, :], s / temperature)

    return qbnorm
