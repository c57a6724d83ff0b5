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
- dbnorm, dbsn, dn: in their own modules (ncl/dbnorm.py, ncl/dbsn.py, ncl/dn.py), each with its authors' rule.
Every scorer of a per-item method carries `fold_bias` (C,): its ranking equals that of s_ij / tau + fold_bias_j.
"""

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import field, make_dataclass, replace
from typing import Dict, Optional

import torch

from ncl_ray.ncl.dbnorm import activated, dbnorm_scorer
from ncl_ray.ncl.dbsn import dbsn_scorer
from ncl_ray.ncl.dn import dn_gallery_bias
from ncl_ray.ncl.methods import BANK_METHODS, GALLERY_BANK_METHODS, METHODS, SETTINGS
from ncl_ray.ncl.sims import (MEMORY_MB, GalleryBank, Scorer, Sims, column_logsumexp,  # noqa: F401  (re-exported)
                              default_workers, rows_per_block, top_mean)

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


def nnn_gallery_bias(bank: Sims, k: int = 256, alpha: float = 0.5) -> torch.Tensor:
    """NNN's bias (C,): -alpha * the mean of each column's k largest bank similarities."""
    return -alpha * top_mean(bank, k, "nnn_k")


def is_gallery_bias(bank: Sims, beta: float = 20.0) -> torch.Tensor:
    """Inverted softmax's bias (C,) on the similarity scale: -logsumexp_bank(beta s_bank,j) / beta."""
    return -column_logsumexp(bank, beta) / beta


def csls_gallery_bias(bank: Sims, k: int = 10) -> torch.Tensor:
    """CSLS's per-item term on the similarity scale (C,): -r_S(j) / 2 (the ranking is s - r_S / 2)."""
    return -0.5 * top_mean(bank, k, "csls_k")


def item_bias(method: str, bank: Sims, temperature: float, settings=None) -> torch.Tensor:
    """The bias (C,) on the logit scale that a per-item method with a query bank alone adds to s / tau (what the
    index folds in)."""
    st = settings or MethodSettings()
    if method == "ncl":
        return ncl_gallery_bias(bank, temperature, st.n_iters)
    sim_scale = {"nnn": lambda: nnn_gallery_bias(bank, st.nnn_k, st.nnn_alpha),
                 "is": lambda: is_gallery_bias(bank, st.is_beta), "csls": lambda: csls_gallery_bias(bank, st.csls_k),
                 "dn": lambda: dn_gallery_bias(bank, st.dn_lambda)}
    if method not in sim_scale:
        raise ValueError(f"{method!r} is not a per-item bias method with a query bank alone")
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


MethodSettings = make_dataclass(
    "MethodSettings", [(x.key, type(x.default), field(default=x.default)) for x in SETTINGS], frozen=True)
MethodSettings.__doc__ = "Every method's settings (ncl/methods.py) by their `eval` keys: MethodSettings(nnn_k=8)."


def settings_from(section) -> "MethodSettings":
    """The methods' settings read by key from a config section (`cfg.eval`), defaults for keys it lacks."""
    return MethodSettings(**{x.key: getattr(section, x.key, x.default) for x in SETTINGS})


def _per_item(b: torch.Tensor, temperature: float, scale: float = 1.0) -> Scorer:
    def per_item(rows: slice, s: torch.Tensor) -> torch.Tensor:
        return scale * (s / temperature + b[None, :])

    per_item.fold_bias = b
    return per_item


def _check_banks(method: str, test: Sims, bank: Optional[Sims], gallery_bank: Optional[GalleryBank]) -> None:
    if method in BANK_METHODS:
        if bank is None:
            raise ValueError(f"method {method!r} needs a bank of queries x gallery similarities")
        if bank.n_cols != test.n_cols:
            raise ValueError(f"bank has {bank.n_cols} gallery columns, similarities have {test.n_cols}")
    if method in GALLERY_BANK_METHODS:
        if gallery_bank is None:
            raise ValueError(f"method {method!r} needs a bank of gallery items beside the test gallery")
        if gallery_bank.items.n_cols != test.n_cols or gallery_bank.cross.n_rows != bank.n_rows:
            raise ValueError(f"{method}: the gallery bank's similarities do not fit the test gallery and the bank")


def make_scorer(method: str, test: Sims, temperature: float, bank: Optional[Sims] = None,
                settings: Optional[MethodSettings] = None, gallery_bank: Optional[GalleryBank] = None,
                **fields) -> Scorer:
    """A function (rows, block of test sims) -> ranking scores, after the method's gallery statistics are
    computed once (per-item biases, dsl column sums, qbnorm bank sums). `fields` replace single settings by
    name (make_scorer("nnn", ..., nnn_k=8))."""
    st = replace(settings or MethodSettings(), **fields)
    if method not in METHODS:
        raise ValueError(f"unknown normalisation method {method!r} (choose from {', '.join(METHODS)})")
    _check_banks(method, test, bank, gallery_bank)
    if method == "none":
        return lambda rows, s: s / temperature
    if method in ("ncl", "nnn", "dn"):
        return _per_item(item_bias(method, bank, temperature, st), temperature)
    if method == "is":  # beta s - lse: the log of its ratio
        return _per_item(item_bias(method, bank, temperature, st), temperature, st.is_beta * temperature)
    if method == "csls":
        return _csls(test, bank, temperature, st)
    if method == "dsl":
        lse = column_logsumexp(test, 1.0 / temperature)  # softmax over all test queries, per gallery item
        return lambda rows, s: s * torch.exp(s / temperature - lse[None, :]) / temperature
    if method == "dbnorm":
        return dbnorm_scorer(bank, gallery_bank, temperature, st.dbnorm_variant, st.dbnorm_beta_query,
                             st.dbnorm_beta_gallery, st.dbnorm_k)
    if method == "dbsn":
        return dbsn_scorer(bank, gallery_bank, temperature, st.dbsn_reg, st.dbsn_iters)
    return _qbnorm(test, bank, temperature, st)


def _csls(test: Sims, bank: Sims, temperature: float, st) -> Scorer:
    b = item_bias("csls", bank, temperature, st)  # -r_S / (2 tau)
    k = min(st.csls_k, test.n_cols)

    def csls(rows: slice, s: torch.Tensor) -> torch.Tensor:
        r_t = s.float().topk(k, dim=1).values.mean(dim=1)  # (r,) the query's own neighbourhood
        return s / temperature - r_t[:, None] / (2 * temperature) + b[None, :]

    csls.fold_bias = b
    return csls


def _qbnorm(test: Sims, bank: Sims, temperature: float, st) -> Scorer:
    lse = column_logsumexp(bank, st.qbnorm_beta)  # (C,)
    active = activated(bank, min(st.qbnorm_k, test.n_cols))
    beta = st.qbnorm_beta

    def qbnorm(rows: slice, s: torch.Tensor) -> torch.Tensor:
        normalise = active[s.argmax(dim=1)]  # (r,) the query's top-1 item is activated by the bank
        return torch.where(normalise[:, None], beta * s - lse[None, :], s / temperature)

    return qbnorm
