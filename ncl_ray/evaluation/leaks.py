"""The leak check every `ncl-ray eval` runs on the user's own embeddings, for every method it reports.

A test-time method that reads the test queries it is scoring (beyond the query itself) reports numbers a search
service cannot reach; T-MASS's published 50.2 R@1 on MSR-VTT fell to 41.9 once swapped video and text axes were
found in its inference. The check, for each direction and each method not labelled transductive:
- a query scored alone (the method built from that query only, with the same banks) gets exactly the scores the
  query gets in the full batch;
- on a gallery of one video fewer (so videos != captions whichever way the axes run), the method builds, scores
  every remaining item with finite values, and a method whose item bias depends on the item's own column alone
  gives the remaining items the same scores as before, up to one constant per query (CSLS's query term).
A failure raises `LeakError`: the numbers are not reported. Transductive methods (dsl) are named, not checked.
The check runs on the first LEAK_VIDEOS test videos and their captions (`subset`), with the full banks: a leak
shows on any gallery, and the check then costs a bounded share of a large evaluation.
"""

from typing import Callable, Dict, List, Sequence

import torch

from ncl_ray.evaluation.evaluate import Direction, Embeddings
from ncl_ray.ncl.methods import BY_NAME
from ncl_ray.ncl.normalize import GalleryBank, MethodSettings, Sims, make_scorer

LEAK_VIDEOS = 500  # test videos (with their captions) the check runs on


def subset(emb: Embeddings, n_videos: int = LEAK_VIDEOS) -> Embeddings:
    """The first `n_videos` videos of `emb` and their captions (all of it when smaller)."""
    if len(emb.video) <= n_videos:
        return emb
    keep = emb.caption_to_video < n_videos  # (C,)
    return Embeddings(emb.video[:n_videos], emb.text[keep], emb.caption_to_video[keep])


class LeakError(RuntimeError):
    """A method's scores depend on test queries other than the one scored (or on the axes' sizes)."""


def _rows(sims: Sims, rows: slice) -> Sims:
    return Sims(rows.stop - rows.start, sims.n_cols, lambda sl: sims.block(slice(rows.start + sl.start,
                                                                              rows.start + sl.stop)),
                sims.chunk, sims.memory_mb, sims.workers)


def _cols(sims: Sims, keep: torch.Tensor) -> Sims:
    return Sims(sims.n_rows, len(keep), lambda sl: sims.block(sl)[:, keep], sims.chunk, sims.memory_mb,
                sims.workers)


def _check(method: str, name: str, d: Direction, tau: float, st: MethodSettings, factory: Callable) -> None:
    full = factory(method, d.test, tau, d.bank, st, d.gallery_bank)
    n, C = d.test.n_rows, d.test.n_cols
    keep = torch.arange(C - 1)  # the gallery less its last item
    for p in sorted({0, n // 2, n - 1}):
        row = slice(p, p + 1)
        block = d.test.block(row)  # (1, C)
        batch = full(row, block)
        alone = factory(method, _rows(d.test, row), tau, d.bank, st, d.gallery_bank)(slice(0, 1), block)
        if not torch.allclose(alone.double(), batch.double(), rtol=1e-5, atol=1e-5):
            raise LeakError(f"{method} ({name}): query {p} scored alone differs from its scores in the batch "
                            f"(max difference {float((alone.double() - batch.double()).abs().max()):.3g}): it reads "
                            f"other test queries; mark it transductive or fix it")
        if C < 2:
            continue
        gb = d.gallery_bank and GalleryBank(_cols(d.gallery_bank.items, keep), d.gallery_bank.cross)
        smaller = factory(method, _cols(d.test, keep), tau, d.bank and _cols(d.bank, keep), st, gb)
        fewer = smaller(row, block[:, keep])
        if fewer.shape != (1, C - 1) or not torch.isfinite(fewer).all():
            raise LeakError(f"{method} ({name}): on a gallery of {C - 1} items for {n} queries it gave scores of "
                            f"shape {tuple(fewer.shape)}, finite: {bool(torch.isfinite(fewer).all())}")
        moved = fewer.double() - batch[:, keep].double()  # (1, C - 1); one constant: the ranking is unchanged
        uneven = float((moved - moved[:, :1]).abs().max())
        if BY_NAME[method].column_only and hasattr(full, "fold_bias") and uneven > 1e-5:
            raise LeakError(f"{method} ({name}): removing another item changed the scores of the others, though "
                            f"its bias depends on each item's own column")


def check_leaks(parts: Dict[str, Direction], methods: Sequence[str], tau: float, settings: MethodSettings,
                factory: Callable = make_scorer) -> Dict[str, List[str]]:
    """{'checked': methods that passed, 'transductive': methods not held to it}; LeakError on a failure."""
    checked = [m for m in methods if not BY_NAME[m].transductive]
    for name, d in parts.items():
        for method in checked:
            _check(method, name, d, tau, settings, factory)
    return {"checked": checked, "transductive": [m for m in methods if BY_NAME[m].transductive]}
