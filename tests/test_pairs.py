"""Epochs over (video, caption) pairs: one global permutation per (seed, epoch), split across ranks by rows."""

import numpy as np

from ncl_ray.data.pairs import all_pairs, pair_order, pair_steps, rank_rows


def test_every_pair_once_per_epoch_in_a_fresh_global_permutation():
    n = np.array([3, 1, 2, 0, 4])
    pairs = all_pairs(n)
    assert pairs.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [2, 0], [2, 1], [4, 0], [4, 1], [4, 2], [4, 3]]
    e0, e1 = pair_order(n, 7, 0), pair_order(n, 7, 1)
    for order in (e0, e1):
        assert sorted(map(tuple, order.tolist())) == sorted(map(tuple, pairs.tolist()))
    assert e0.tolist() != e1.tolist()  # a new permutation every epoch
    assert pair_order(n, 7, 0).tolist() == e0.tolist()  # the same on every rank and after a restart
    assert pair_order(n, 8, 0).tolist() != e0.tolist()


def test_ranks_split_each_global_batch_of_the_one_permutation():
    n = np.full(11, 3)  # 33 pairs, global batch 2 x 4 = 8: 4 steps, the last partial batch dropped
    order = pair_order(n, 0, 0)
    assert pair_steps(n, 8) == 4
    seen = []
    for step in range(4):
        parts = [rank_rows(order, step, r, 4, 2) for r in range(2)]
        assert np.concatenate(parts).tolist() == order[step * 8:(step + 1) * 8].tolist()
        seen += np.concatenate(parts).tolist()
    assert len(seen) == 32 and len({tuple(p) for p in seen}) == 32


def test_msrvtt_recipe_runs_1406_steps_per_epoch_over_180k_pairs():
    from ncl_ray.config import load_config

    cfg = load_config("conf/msrvtt.yaml", ["ncl.n_iters=0"])
    assert cfg.data.samples == "pairs" and cfg.train.epochs == 5
    n = np.full(9000, min(20, cfg.data.max_captions))  # MSR-VTT 9k: 20 captions per video
    assert n.sum() == 180_000
    assert pair_steps(n, cfg.train.batch_size * cfg.train.num_workers) == 1406
