"""Test-time normalisation of query-by-gallery similarities (NCL.md, "Test time"), computed block by block.

Similarities are never materialised whole: a `Sims` yields row blocks (r, C), either slices of a stored
matrix or products of query and gallery embeddings. The block height follows a byte budget (`memory_mb`, by
default 2 GiB: half for the blocks in flight, half for bank logits the Sinkhorn pass keeps between its
iterations instead of recomputing them), so a 1M-video gallery gets blocks of a few dozen rows and a 1k one of
thousands: memory stays O(budget) whatever the gallery size. The Sinkhorn pass over the bank runs its blocks on
`workers` threads (torch releases the GIL inside its kernels; by default as many as the cores torch's own
kernel threads leave idle).

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
- nnn:    Nearest Neighbor Normalization (Chowdhury et al. EMNLP 2024, `nnn_retriever.py`): (s_ij + b_j) / tau with
          b_j = -alpha * the mean of gallery item j's k largest similarities to the bank's queries; its code's
          defaults k = 256, alpha = 0.5 (its README suggests 128 and 0.75). A per-item bias: it folds into an
          inner-product index like ncl's and a new item's bias needs only that item's column.
- is:     inverted softmax (Smith et al. ICLR 2017; the rule QB-Norm's `dynamic_inverted_softmax.py` applies, here
          to every query: its gate is qbnorm): beta * s_ij - logsumexp_bank(beta * s_bank,j), i.e. the log of
          exp(beta s_ij) / sum_bank exp(beta s_bank,j); beta = eval.is_beta (QB-Norm's 20). A per-item bias.
- csls:   CSLS (Conneau et al. ICLR 2018, MUSE): 2 s_ij - r_T(i) - r_S(j) with r_T(i) the mean of query i's k
          largest similarities to the gallery and r_S(j) the mean of item j's k largest to the bank's queries,
          k = eval.csls_k (MUSE's 10); scored as that / (2 tau). r_T(i) shifts a whole row: the ranking is s_ij -
          r_S(j) / 2, a per-item bias.
Every scorer of a per-item method carries `fold_bias` (C,): its ranking equals that of s_ij / tau + fold_bias_j.
"""

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch

from ncl_ray.ncl.methods import BANK_METHODS, METHODS

Scorer = Callable[[slice, torch.Tensor], torch.Tensor]
MEMORY_MB = 2048  # default budget for the similarity blocks in flight
TEMPORARIES = 5  # (r, C) fp32 tensors alive at once in the heaviest pass (s, L, L + b, logsumexp's exp, ...)


def rows_per_block(n_cols: int, memory_mb: float = MEMORY_MB, workers: int = 1) -> int:
    """Block height that keeps `workers` blocks of (r, n_cols) fp32 temporaries within half of `memory_mb` (the
    other half may hold bank logits that the Sinkhorn pass keeps between iterations)."""
    per_row = TEMPORARIES * 4 * max(1, n_cols) * max(1, workers)
    return max(1, int(memory_mb * 2 ** 20 / 2) // per_row)


def default_workers() -> int:
    """Threads for the bank's blocks: only the cores torch's own kernels leave idle (measured on 2 cores at 1M
    columns, 2 block threads over 2-thread kernels were 15 % slower than one), at most 4."""
    return max(1, min(4, len(os.sched_getaffinity(0)) // max(1, torch.get_num_threads())))


class Sims:
    """Query-by-gallery similarities (R, C), produced in row blocks of at most `chunk` rows.

    `chunk` > 0 fixes the block height; 0 derives it from `memory_mb` and `workers` (see `rows_per_block`).
    """

    def __init__(self, n_rows: int, n_cols: int, block: Callable[[slice], torch.Tensor], chunk: int = 0,
                 memory_mb: float = MEMORY_MB, workers: int = 0):
        self.n_rows, self.n_cols, self._block = n_rows, n_cols, block
        self.memory_mb, self.workers = memory_mb, workers if workers > 0 else default_workers()
        self.chunk = chunk if chunk > 0 else rows_per_block(n_cols, memory_mb, self.workers)

    @staticmethod
    def dense(s: torch.Tensor, chunk: int = 0, memory_mb: float = MEMORY_MB, workers: int = 0) -> "Sims":
        return Sims(s.shape[0], s.shape[1], lambda sl: s[sl].float(), chunk, memory_mb, workers)

    @staticmethod
    def embeddings(queries: torch.Tensor, gallery: torch.Tensor, chunk: int = 0, memory_mb: float = MEMORY_MB,
                   workers: int = 0) -> "Sims":
        """queries (R, D) x gallery (C, D) -> blocks of queries[rows] @ gallery.T."""
        g = gallery.float()  # (C, D), converted once rather than per block
        return Sims(queries.shape[0], gallery.shape[0], lambda sl: queries[sl].float() @ g.T, chunk, memory_mb,
                    workers)

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

        return Sims(offsets[-1], parts[0].n_cols, block, parts[0].chunk, parts[0].memory_mb, parts[0].workers)

    def block(self, rows: slice) -> torch.Tensor:
        return self._block(rows)

    def slices(self) -> List[slice]:
        return [slice(a, min(a + self.chunk, self.n_rows)) for a in range(0, self.n_rows, self.chunk)]

    def blocks(self) -> Iterator[Tuple[slice, torch.Tensor]]:
        for rows in self.slices():
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
    kept: Dict[int, torch.Tensor] = {}  # block index -> (r, C) logits kept between iterations, within budget
    room, lock = [bank.memory_mb * 2 ** 20 / 2], threading.Lock()

    def logits(i: int) -> torch.Tensor:
        if i in kept:
            return kept[i]
        L = bank.block(slices[i]).mul(scale)  # (r, C), recomputed every iteration unless kept
        with lock:
            if room[0] >= L.numel() * 4:
                room[0] -= L.numel() * 4
                kept[i] = L
        return L

    def column_lse(i: int) -> torch.Tensor:  # one block's share of logsumexp_r(L_rc + u_r): (C,)
        L = logits(i)  # (r, C)
        x = L + b[None, :]  # (r, C)
        u = -torch.logsumexp(x, dim=1)  # (r,) rows of softmax(L + b) sum to 1
        return torch.logsumexp(torch.add(L, u[:, None], out=x), dim=0)

    slices = bank.slices()
    with ThreadPoolExecutor(min(bank.workers, len(slices))) as pool:
        for _ in range(n_iters):
            acc = torch.full((C,), float("-inf"))
            for part in pool.map(column_lse, range(len(slices))):  # blocks in parallel, merged in a fixed order
                acc = torch.logaddexp(acc, part)
            b = math.log(R / C) - acc
    return b - b.mean()


@torch.no_grad()
def top_mean(bank: Sims, k: int, name: str = "nnn", keys: str = "eval.nnn_k, --nnn-k") -> torch.Tensor:
    """The mean of each column's k largest bank similarities (C,), the top k kept across row blocks. NNN's own
    code fails when k exceeds the bank's queries; so does this, naming the method and its settings."""
    if not 1 <= k <= bank.n_rows:
        raise ValueError(f"{name}: k={k} needs 1 <= k <= the bank's {bank.n_rows} queries ({keys})")
    top: Optional[torch.Tensor] = None  # (<= k, C) the largest similarities seen so far, per column
    for _, s in bank.blocks():
        both = s.float() if top is None else torch.cat([top, s.float()], dim=0)  # (r', C)
        top = both.topk(min(k, len(both)), dim=0).values
    return top.mean(dim=0)


def nnn_gallery_bias(bank: Sims, k: int = 256, alpha: float = 0.5) -> torch.Tensor:
    """NNN's bias (C,): -alpha * the mean of each column's k largest bank similarities."""
    return -alpha * top_mean(bank, k)


def is_gallery_bias(bank: Sims, beta: float = 20.0) -> torch.Tensor:
    """Inverted softmax's bias (C,) on the similarity scale: -logsumexp_bank(beta s_bank,j) / beta."""
    return -column_logsumexp(bank, beta) / beta


def csls_gallery_bias(bank: Sims, k: int = 10) -> torch.Tensor:
    """CSLS's per-item term on the similarity scale (C,): -r_S(j) / 2 (the ranking is s - r_S / 2)."""
    return -0.5 * top_mean(bank, k, "csls", "eval.csls_k, --csls-k")


def item_bias(method: str, bank: Sims, temperature: float, n_iters: int = 10, nnn_k: int = 256,
              nnn_alpha: float = 0.5, is_beta: float = 20.0, csls_k: int = 10) -> torch.Tensor:
    """The bias (C,) on the logit scale that a per-item method adds to s / tau (what the index folds in)."""
    if method == "ncl":
        return ncl_gallery_bias(bank, temperature, n_iters)
    sim_scale = {"nnn": lambda: nnn_gallery_bias(bank, nnn_k, nnn_alpha), "is": lambda: is_gallery_bias(bank, is_beta),
                 "csls": lambda: csls_gallery_bias(bank, csls_k)}
    if method not in sim_scale:
        raise ValueError(f"{method!r} is not a per-item bias method")
    return sim_scale[method]() / temperature


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


@dataclass(frozen=True)
class MethodSettings:
    """The test-time methods' settings (the same keys and defaults as the config's `eval` section)."""
    n_iters: int = 10  # ncl: Sinkhorn iterations
    qbnorm_beta: float = 20.0
    qbnorm_k: int = 1
    nnn_k: int = 256
    nnn_alpha: float = 0.5
    is_beta: float = 20.0
    csls_k: int = 10


def make_scorer(method: str, test: Sims, temperature: float, bank: Optional[Sims] = None,
                settings: Optional[MethodSettings] = None, **fields) -> Scorer:
    """A function (rows, block of test sims) -> ranking scores, after the method's gallery statistics are
    computed once (per-item biases, dsl column sums, qbnorm bank sums). `fields` replace single settings by
    name (make_scorer("nnn", ..., nnn_k=8))."""
    st = replace(settings or MethodSettings(), **fields)
    n_iters, qbnorm_beta, qbnorm_k, nnn_k, nnn_alpha, is_beta, csls_k = (
        st.n_iters, st.qbnorm_beta, st.qbnorm_k, st.nnn_k, st.nnn_alpha, st.is_beta, st.csls_k)
    if method not in METHODS:
        raise ValueError(f"unknown normalisation method {method!r} (choose from {', '.join(METHODS)})")
    if method in BANK_METHODS:
        if bank is None:
            raise ValueError(f"method {method!r} needs a bank of queries x gallery similarities")
        if bank.n_cols != test.n_cols:
            raise ValueError(f"bank has {bank.n_cols} gallery columns, similarities have {test.n_cols}")
    if method == "none":
        return lambda rows, s: s / temperature
    if method in ("ncl", "nnn", "is"):
        b = item_bias(method, bank, temperature, n_iters, nnn_k, nnn_alpha, is_beta)  # (C,) logit scale
        scale = is_beta * temperature if method == "is" else 1.0  # is: beta s - lse, the log of its ratio

        def per_item(rows: slice, s: torch.Tensor) -> torch.Tensor:
            return scale * (s / temperature + b[None, :])

        per_item.fold_bias = b
        return per_item
    if method == "csls":
        b = item_bias("csls", bank, temperature, csls_k=csls_k)  # -r_S / (2 tau)
        k = min(csls_k, test.n_cols)

        def csls(rows: slice, s: torch.Tensor) -> torch.Tensor:
            r_t = s.float().topk(k, dim=1).values.mean(dim=1)  # (r,) the query's own neighbourhood
            return s / temperature - r_t[:, None] / (2 * temperature) + b[None, :]

        csls.fold_bias = b
        return csls
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
