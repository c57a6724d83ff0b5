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


def test_msrvtt_recipe_runs_1406_steps_per_epoch_over_180k_pairs(tmp_path):
    """MSR-VTT's 9k split as CLIP4Clip's files describe it (9,000 training videos x 20 captions), read by the
    dataset reader: 180,000 pairs, 1,406 steps of 128 with the published protocol (all 9k train); the held-out
    default keeps 450 videos for selection (171,000 pairs, 1,335 steps)."""
    import csv
    import json

    from ncl_ray.config.schema import load_config
    from ncl_ray.data.manifest import read_msrvtt

    train = [f"video{i}" for i in range(9000)]
    test = [f"video{i}" for i in range(9000, 10000)]
    sentences = [{"video_id": v, "caption": f"a caption {k} of {v}"} for v in train + test for k in range(20)]
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps({"sentences": sentences}))
    (tmp_path / "MSRVTT_train.9k.csv").write_text("video_id\n" + "\n".join(train) + "\n")
    with (tmp_path / "MSRVTT_JSFUSION_test.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        w.writerows([["k", "v", v, "a test caption"] for v in test])
    for protocol, pairs, steps in (("published", 180_000, 1406), ("held-out", 171_000, 1335)):
        cfg = load_config("conf/msrvtt.yaml", ["ncl.n_iters=0", f"train.protocol={protocol}"])
        assert cfg.data.samples == "pairs" and cfg.train.epochs == 5
        entries = read_msrvtt(str(tmp_path), holdout=protocol != "published")
        n = np.array([min(len(e.captions), cfg.data.max_captions) for e in entries if e.split == "train"])
        assert n.sum() == pairs
        assert pair_steps(n, cfg.train.batch_size * cfg.train.num_workers) == steps
