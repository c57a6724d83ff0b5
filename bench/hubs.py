"""The test-time league on a hub benchmark: every method of the registry (ncl/methods.py) on the same
similarities, side by side, with an in-domain bank and with a shifted one.

A synthetic gallery where a few items lie close to every query (hubs); a bank of training queries about the same
items (in-domain: the test queries' style; shifted: another shared direction, as a bank from another corpus
would be); a gallery bank of training items drawn like the test items (dbnorm, dbsn). Each method runs through
`evaluation.rerank.rerank`, the function `ncl-ray rerank` calls, timed in this process.

    python -m bench.hubs [--items 1000] [--hubs 20]
"""

import argparse
import time

import numpy as np

from bench.report import write
from ncl_ray.evaluation.rerank import SavedBanks, rerank
from ncl_ray.ncl.methods import BY_NAME, METHODS
from ncl_ray.ncl.normalize import MethodSettings


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def hub_problem(n, d, hubs, bank_per_item, seed=0):
    """test sims (n, n), in-domain and shifted bank sims (n * bank_per_item, n), gallery-bank items x gallery
    (n, n), and bank queries x gallery-bank items for each bank."""
    rng = np.random.default_rng(seed)
    common, other = rng.normal(size=d), rng.normal(size=d)

    def items_():
        x = rng.normal(size=(n, d))
        x[:hubs] += 2.0 * common  # hubs lean towards a direction every query shares
        return x

    items, train_items = items_(), items_()

    def queries(k, style):
        return _unit(np.repeat(items, k, axis=0) + 1.4 * rng.normal(size=(n * k, d)) + style)

    g, t = _unit(items), _unit(train_items)
    test = queries(1, common)
    banks = {"in-domain": queries(bank_per_item, common), "shifted": queries(bank_per_item, 1.5 * other)}
    f32 = lambda a: a.astype(np.float32)  # noqa: E731
    return (f32(test @ g.T), {k: (f32(b @ g.T), f32(b @ t.T)) for k, b in banks.items()}, f32(t @ g.T))


def run(sims, bank, cross, items, method, settings):
    started = time.perf_counter()
    r = rerank(sims, method, SavedBanks(bank, "train", items, cross), None, False, 0.01, settings)
    return r, time.perf_counter() - started


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--hubs", type=int, default=20)
    ap.add_argument("--dim", type=int, default=64)
    args = ap.parse_args()
    sims, banks, items = hub_problem(args.items, args.dim, args.hubs, bank_per_item=2)
    settings = MethodSettings()
    league, shift = [], []
    for method in METHODS:
        per_bank = {name: run(sims, bank, cross, items, method, settings) for name, (bank, cross) in banks.items()}
        r, cost = per_bank["in-domain"]
        m = BY_NAME[method]
        league.append({"method": method, "test queries": "yes" if m.transductive else "no",
                       "banks": m.banks or "-", "R@1": r["t2v"]["R@1"], "R@5": r["t2v"]["R@5"],
                       "MdR": r["t2v"]["MdR"], "norm_error": r["normalization_error"]["after"], "cost_s": cost})
        shifted = per_bank["shifted"][0]["t2v"]["R@1"]
        shift.append({"method": method, "R@1 in-domain bank": r["t2v"]["R@1"], "R@1 shifted bank": shifted,
                      "change": shifted - r["t2v"]["R@1"]})
    setup = (f"{args.items} items ({args.hubs} hubs), {args.items} test queries, bank {2 * args.items} training "
             f"queries, gallery bank {args.items} training items, D={args.dim}, tau=0.01, every default setting")
    write("hubs", league, {"setup": setup})
    write("hubs_bank_shift", shift, {"setup": setup + "; shifted bank: the same items asked in another style "
                                              "(another shared direction)"})


if __name__ == "__main__":
    main()
