"""`ncl-ray rerank`: test-time normalisation of a saved similarity matrix, no model needed.

    ncl-ray rerank --sims S.npy --bank-sims B.npy --method ncl --iters 10 --json out.json

S is queries x gallery (row i's correct item is column i unless --query-to-item maps queries to items);
B is bank-queries x gallery. --transpose scores the other direction (v2t) on the same files.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from ncl_ray.ncl.methods import BANK_METHODS, GALLERY_BANK_METHODS
from ncl_ray.ncl.normalize import GalleryBank, MethodSettings, Sims, make_scorer
from ncl_ray.evaluation.retrieval import direction_metrics, normalization_errors


class InputError(ValueError):
    """A bad input file; the message names it."""


def load_matrix(path: str, name: str, ndim: int = 2) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{name}: file not found: {path}")
    try:
        a = np.load(p, allow_pickle=False)
    except Exception as e:
        raise InputError(f"{name}: cannot read {path} as a .npy array ({e})") from None
    if a.ndim != ndim:
        raise InputError(f"{name}: {path} must be {ndim}-D, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise InputError(f"{name}: {path} must be numeric, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise InputError(f"{name}: {path} contains NaN or infinite values")
    return a


@dataclass(frozen=True)
class SavedBanks:
    """The saved banks: bank queries x gallery (`sims`), the bank's source (train | test | train+test), and for
    dbnorm and dbsn a gallery bank: its items x the gallery (`items`) and the bank queries x its items (`cross`)."""
    sims: Optional[np.ndarray] = None
    source: str = "train"
    items: Optional[np.ndarray] = None
    cross: Optional[np.ndarray] = None


def _gallery_bank(method: str, banks: SavedBanks, n_bank: int, n_cols: int) -> Optional[GalleryBank]:
    if method not in GALLERY_BANK_METHODS:
        return None
    if banks.items is None or banks.cross is None:
        raise InputError(f"--method {method} needs --gallery-bank-sims and --cross-sims")
    items, cross = (torch.from_numpy(np.asarray(x, dtype=np.float32)) for x in (banks.items, banks.cross))
    if items.shape[1] != n_cols or cross.shape != (n_bank, items.shape[0]):
        raise InputError(f"--gallery-bank-sims must be (G, {n_cols}) and --cross-sims ({n_bank}, G); got "
                         f"{tuple(items.shape)} and {tuple(cross.shape)}")
    return GalleryBank(Sims.dense(items), Sims.dense(cross))


def rerank(sims: np.ndarray, method: str, banks: Optional[SavedBanks] = None,
           query_to_item: Optional[np.ndarray] = None, transpose: bool = False, temperature: float = 0.01,
           settings: Optional[MethodSettings] = None) -> Dict:
    """Metrics and normalisation error of `method` on `sims` with the methods' `settings`; see the module
    docstring."""
    banks = banks or SavedBanks()
    bank_sims, bank = banks.sims, banks.source
    s = torch.from_numpy(np.asarray(sims, dtype=np.float32))
    Q, G = s.shape
    if query_to_item is None:
        if Q != G:
            raise InputError(f"similarities are {Q}x{G}: give --query-to-item when queries and items differ")
        q2i = torch.arange(Q)
    else:
        q2i = torch.from_numpy(np.asarray(query_to_item)).long()
        if q2i.shape != (Q,) or int(q2i.min()) < 0 or int(q2i.max()) >= G:
            raise InputError(f"query-to-item must have {Q} entries in [0, {G}), got shape {tuple(q2i.shape)}")
    b = None if bank_sims is None else torch.from_numpy(np.asarray(bank_sims, dtype=np.float32))
    if transpose:  # videos become queries; a bank of text queries x videos does not apply
        s = s.T.contiguous()
        if method in BANK_METHODS and bank != "test":
            raise InputError(f"--transpose with {method} needs --bank test (the bank holds text queries)")
        b = None
    test = Sims.dense(s)
    bank_sims_ = None
    if method in BANK_METHODS:
        if bank != "test" and b is None:
            raise InputError(f"--method {method} needs --bank-sims (or --bank test)")
        if b is not None and b.shape[1] != s.shape[1]:
            raise InputError(f"--bank-sims has {b.shape[1]} gallery columns, --sims has {s.shape[1]}")
        parts = {"train": [b], "test": [s], "train+test": [b, s]}[bank]
        bank_sims_ = Sims.stack([Sims.dense(x) for x in parts])
    try:
        gallery_bank = _gallery_bank(method, banks, bank_sims_.n_rows if bank_sims_ else 0, test.n_cols)
        scorer = make_scorer(method, test, temperature, bank_sims_, settings, gallery_bank)
    except ValueError as e:  # e.g. a k beyond the bank's queries: name the flag alone
        raise InputError(re.sub(r"eval\.\w+, (--[\w-]+)", r"\1", str(e))) from None
    key = "v2t" if transpose else "t2v"
    if transpose and query_to_item is not None:
        m = direction_metrics(test, scorer, owner=q2i)
        out: Dict = {key: m["strict"], key + "_lenient": m["lenient"]}
    else:
        out = {key: direction_metrics(test, scorer, target=q2i)["strict"]}
    out["normalization_error"] = normalization_errors(test, scorer, temperature)
    out["method"], out["bank"], out["queries"], out["gallery"] = method, bank, int(s.shape[0]), int(s.shape[1])
    return out


def format_table(result: Dict, header: bool = True) -> str:
    rows = [k for k in result if k.startswith(("t2v", "v2t"))]
    lines = [f"{'':14s} {'R@1':>7s} {'R@5':>7s} {'R@10':>7s} {'MdR':>7s} {'MnR':>8s}"] if header else []
    for k in rows:
        m = result[k]
        lines.append(f"{k + ' ' + result['method']:14s} {m['R@1']:7.2f} {m['R@5']:7.2f} {m['R@10']:7.2f} "
                     f"{m['MdR']:7.1f} {m['MnR']:8.2f}")
    ne = result["normalization_error"]
    lines.append(f"{'':14s} normalisation error ({result['method']}): before {ne['before']:.4f}  "
                 f"after {ne['after']:.4f}")
    return "\n".join(lines)


def write_json(result: Dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2))
