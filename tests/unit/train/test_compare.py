"""`ncl-ray compare`: statistics against hand-computed values and the long-tailed corpus (the real Ray Tune
miniature: tests/ray/test_compare_run.py)."""


import numpy as np
import pytest
import torch

from ncl_ray.train.compare import caption_ceiling
from ncl_ray.train.paired import mean_std_ci, summarize, t_quantile
from ncl_ray.data.manifest import VideoEntry, read_manifest


def test_mean_std_and_interval_by_hand():
    mean, sd, ci = mean_std_ci([20.0, 22.0, 24.0, 26.0, 28.0])
    assert mean == 24.0 and sd == pytest.approx(np.sqrt(10.0))  # deviations 4,2,0,2,4: 40 / 4
    assert ci == pytest.approx(2.776 * np.sqrt(10.0) / np.sqrt(5))  # t(0.975, 4) = 2.776
    assert t_quantile(1) == 12.706 and t_quantile(11) == 2.228 and t_quantile(100) == 1.96


def test_paired_difference_uses_each_arm_as_served():
    rows = [{"arm": "plain", "seed": s, "test/none/t2v_R@1": 20.0 + s, "test/ncl/t2v_R@1": 99.0} for s in range(3)]
    rows += [{"arm": "ncl", "seed": s, "test/ncl/t2v_R@1": 22.0 + 2 * s, "test/none/t2v_R@1": 0.0} for s in range(3)]
    stats, paired = summarize(rows, metrics=("t2v_R@1",), methods=("none", "ncl"))
    diff = paired[0]
    assert diff["n"] == 3 and diff["mean"] == pytest.approx(3.0)  # differences 2, 3, 4
    assert diff["std"] == pytest.approx(1.0) and diff["ci95"] == pytest.approx(4.303 / np.sqrt(3))
    plain_none = next(s for s in stats if s["arm"] == "plain" and s["method"] == "none")
    assert plain_none["mean"] == pytest.approx(21.0)


def test_named_arms_are_parsed_checked_and_compared_with_the_baseline():
    from ncl_ray.train.compare import arm_overrides, parse_arm
    from ncl_ray.config.schema import ConfigError, load_config

    assert parse_arm("w0.5:ncl.plain_loss_weight=0.5,ncl.n_iters=3") == \
        ("w0.5", {"ncl.plain_loss_weight": "0.5", "ncl.n_iters": "3"})
    for bad in ("w0.5", "w:", ":ncl.n_iters=1", "w:ncl.n_iters"):
        with pytest.raises(ConfigError, match="expected NAME:key=value"):
            parse_arm(bad)
    cfg = load_config("conf/compare.yaml")
    arms = arm_overrides(cfg, ["plain"], {"grad": {"ncl.detach_biases": "false"}})
    assert arms == {"plain": {"ncl.n_iters": 0}, "grad": {"ncl.detach_biases": False}}
    with pytest.raises(ConfigError, match="ncl.plain_loss_weight"):
        arm_overrides(cfg, [], {"w": {"ncl.plain_loss_weight": "-1"}})
    with pytest.raises(ConfigError, match="nosuch"):
        arm_overrides(cfg, [], {"w": {"ncl.nosuch": "1"}})
    with pytest.raises(ConfigError, match="share one dataset"):
        arm_overrides(cfg, ["plain"], {"w": {"data.frame_size": "64"}})
    # every non-baseline arm against the baseline, each as served; collapse statistics summarised per arm
    rows = [{"arm": "ncl", "seed": s, "test/ncl/t2v_R@1": 10.0 + s, "train/text_bias_std": 2.0 + s} for s in range(2)]
    rows += [{"arm": "w", "seed": s, "test/ncl/t2v_R@1": 13.0 + 2 * s, "train/text_bias_std": 1.0} for s in range(2)]
    stats, paired = summarize(rows, metrics=("t2v_R@1",), methods=("ncl", "train"), served={"ncl": "ncl", "w": "ncl"},
                              baseline="ncl")
    assert [(p["comparison"], p["mean"]) for p in paired] == [("w arm (ncl) - ncl arm (ncl)", pytest.approx(3.5))]
    bias = next(s for s in stats if s["arm"] == "ncl" and s["metric"] == "train/text_bias_std")
    assert bias["mean"] == pytest.approx(2.5) and bias["n"] == 2


def test_caption_ceiling_counts_shared_captions():
    entries = [VideoEntry("a", "a.mp4", "test", ["red circle", "only a"]),
               VideoEntry("b", "b.mp4", "test", ["red circle", "only b"]),
               VideoEntry("c", "c.mp4", "train", ["red circle"])]
    assert caption_ceiling(entries, "test") == pytest.approx(50.0)  # 2 of 4 test captions are shared


def test_longtail_corpus_has_hubs_and_generic_captions(tmp_path):
    from ncl_ray.data.synthetic import make_dataset

    uniform = read_manifest(make_dataset(str(tmp_path / "u"), 60, seed=0, num_frames=4))
    tail = read_manifest(make_dataset(str(tmp_path / "t"), 60, seed=0, num_frames=4, profile="longtail"))

    def top_share(entries):
        caps = [e.captions[0] for e in entries]
        return max(caps.count(c) for c in caps) / len(caps)

    assert top_share(tail) > 2 * top_share(uniform)  # a few attribute combinations recur in many videos
    generic = sum(c.startswith(("something", "a ")) and len(c.split()) <= 6 for e in tail for c in e.captions)
    assert generic > 0


def test_hub_share_by_hand():
    from ncl_ray.evaluation.evaluate import hub_share

    video = torch.eye(4)
    text = torch.tensor([[1.0, 0, 0, 0]] * 6 + [[0, 1.0, 0, 0], [0, 0, 1.0, 0]])  # video 0 is top-1 of 6 of 8
    assert hub_share(text, video) == pytest.approx(25.0)  # fair share 2, > 4 captions: one video of four




def test_the_league_pairs_each_arms_served_method_with_every_other_per_seed():
    from ncl_ray.train.paired import format_summary, league_pairs

    rows = [{"arm": "ncl", "seed": s, "test/ncl/t2v_R@1": 30.0 + s, "test/dbnorm/t2v_R@1": 28.0 + 2 * s,
             "test/none/t2v_R@1": 10.0} for s in range(3)]
    pairs = league_pairs(rows, {"ncl": "ncl"}, methods=("none", "ncl", "dbnorm"), metrics=("t2v_R@1",))
    by = {p["comparison"]: p for p in pairs}
    assert set(by) == {"ncl arm: ncl - none", "ncl arm: ncl - dbnorm"}
    assert by["ncl arm: ncl - dbnorm"]["mean"] == pytest.approx(1.0)  # differences 2, 1, 0
    assert by["ncl arm: ncl - dbnorm"]["ci95"] == pytest.approx(4.303 * 1.0 / np.sqrt(3))
    text = format_summary([], [], 0.0, pairs)
    assert "ncl arm: ncl - dbnorm: t2v_R@1  n=3 mean +1.00" in text and "(within noise)" in text
    assert "ncl arm: ncl - none" in text and "(beyond noise)" in text
