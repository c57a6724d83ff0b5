"""`ncl-ray compare` for real: a 2-arm x 2-seed Ray Tune miniature, its CSV, text, plot and collapse statistics."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tiny import tiny


@pytest.mark.ray
@pytest.mark.slow
def test_two_arm_two_seed_miniature(ray_local, tmp_path, builtin_data, capsys):
    from ncl_ray.train.compare import run_comparison as main
    from ncl_ray.config.schema import load_config

    # one worker per trial, two trials at a time: the 2 x 2 grid's start-up waits overlap
    cfg = load_config("conf/compare.yaml", tiny(builtin_data, tmp_path / "runs", "train.epochs=1",
                                                "train.eval_every_epochs=2", "ncl.queue_size=16", "run.name=cmp",
                                                "train.num_workers=1", "train.cpus_per_worker=1",
                                                "tune.max_concurrent=2"))
    assert main(cfg, 2, ["plain"], {"ncl": {"ncl.n_iters": "2", "ncl.plain_loss_weight": "0.5"}}) == 0
    run = Path(tmp_path) / "runs" / "cmp"
    table = pd.read_csv(run / "compare.csv")
    assert sorted(zip(table["arm"], table["seed"])) == [("ncl", 0), ("ncl", 1), ("plain", 0), ("plain", 1)]
    # the collapse statistics come from each run's TensorBoard: biases spread only where Sinkhorn ran
    assert (table[table["arm"] == "ncl"]["train/text_bias_std"] > 0).all()
    assert (table[table["arm"] == "plain"]["train/text_bias_std"] == 0).all()
    assert {"test/ncl/t2v_R@1", "test/none/v2t_R@1", "test/qbnorm/t2v_R@5"} <= set(table.columns)
    # seeds change the outcome (initialisation, order, sampling): the two plain runs differ
    plain = table[table["arm"] == "plain"]
    assert plain[[c for c in table.columns if c.startswith("test/")]].nunique().max() > 1
    text = (run / "compare.txt").read_text()
    assert "paired per-seed difference" in text and "caption ceiling" in text
    assert (run / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "comparison cmp in" in (run / "logs" / "driver.log").read_text()  # the start train and tune share
    assert json.dumps(pd.read_csv(run / "compare_summary.csv").to_dict()) and "95% CI" in capsys.readouterr().out
