"""Query-by-gallery similarities in row blocks (`Sims`) and the column statistics every test-time method is made
of (logsumexp over rows, the mean of the k largest). No Ray.

Similarities are never materialised whole: a `Sims` yields row blocks (r, C), either slices of a stored matrix
or products of query and gallery embeddings. The block height follows a byte budget (`memory_mb`, by default
2 GiB: half for the blocks in flight, half for bank logits the Sinkhorn pass keeps between its iterations instead
of recomputing them), so a 1M-video gallery gets blocks of a few dozen rows and a 1k one of thousands: memory
stays O(budget) whatever the gallery size.
"""

import os
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple

import torch

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
def top_mean(bank: Sims, k: int, key: str) -> torch.Tensor:
    """The mean of each column's k largest bank similarities (C,), the top k kept across row blocks. NNN's own
    code fails when k exceeds the bank's queries; so does this, naming the setting `key` (nnn_k, csls_k)."""
    if not 1 <= k <= bank.n_rows:
        raise ValueError(f"{key.split('_')[0]}: k={k} needs 1 <= k <= the bank's {bank.n_rows} queries "
                         f"(eval.{key}, --{key.replace('_', '-')})")
    top: Optional[torch.Tensor] = None  # (<= k, C) the largest similarities seen so far, per column
    for _, s in bank.blocks():
        both = s.float() if top is None else torch.cat([top, s.float()], dim=0)  # (r', C)
        top = both.topk(min(k, len(both)), dim=0).values
    return top.mean(dim=0)


@torch.no_grad()
def column_mean(sims: Sims) -> torch.Tensor:
    """The mean of each column over all rows (C,), fp32."""
    acc = torch.zeros(sims.n_cols, dtype=torch.float64)
    for _, s in sims.blocks():
        acc += s.double().sum(dim=0)
    return (acc / max(1, sims.n_rows)).float()


def side_by_side(left: Sims, right: Sims) -> Sims:
    """The columns of `right` after those of `left`, over the same rows: (R, C_left + C_right)."""
    if left.n_rows != right.n_rows:
        raise ValueError(f"side_by_side: {left.n_rows} rows against {right.n_rows}")
    return Sims(left.n_rows, left.n_cols + right.n_cols, lambda sl: torch.cat([left.block(sl), right.block(sl)], 1),
                left.chunk, left.memory_mb, left.workers)


@dataclass(frozen=True)
class GalleryBank:
    """A bank of gallery items beside the test gallery (DBNorm, DBSN): `items` their similarities with the test
    gallery (G, C), `cross` the query bank's similarities with them (B, G)."""
    items: Sims
    cross: Sims
