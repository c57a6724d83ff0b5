"""A real Ray Tune sweep whose trials are Ray Train runs, on tiny built-in data."""

from pathlib import Path

import pandas as pd
import pytest

from ncl_ray.config.schema import load_config
from tiny import tiny

pytestmark = [pytest.mark.ray, pytest.mark.slow]




def test_small_sweep_writes_table_csv_and_best_config(ray_local, tmp_path, builtin_data, capsys):
    from ncl_ray.train.tune import run_sweep as main

    space = tmp_path / "space.yaml"
    # plain training and NCL with a queue: a grid over whole settings (the queue means nothing without NCL)
    space.write_text("variants:\n  - {ncl.n_iters: 0}\n  - {ncl.n_iters: 3, ncl.queue_size: 16}\n"
                     "model.init_temperature: {grid: [0.05]}\n")
    cfg = load_config("conf/tune_small.yaml", tiny(
        builtin_data, tmp_path / "runs", "train.epochs=2", f"tune.space={space}",
        "tune.grace_period=1", "tune.reduction_factor=2", "run.name=sweep",
        "train.num_workers=1", "train.cpus_per_worker=1", "tune.max_concurrent=2"))  # two one-worker trials at once
    assert main(cfg) == 0
    sweep = Path(tmp_path) / "runs" / "sweep"
    table = pd.read_csv(sweep / "results.csv")
    assert len(table) == 2 and set(table["variants"]) == {"ncl.n_iters=0", "ncl.n_iters=3 ncl.queue_size=16"}
    assert set(table["model.init_temperature"]) == {0.05}
    metric = table["val/served/t2v_R@1"].tolist()
    assert metric == sorted(metric, reverse=True)  # ranked by the reported objective
    assert table["training_iteration"].max() == 2 and table["training_iteration"].min() >= 1
    best = load_config(str(sweep / "best.yaml"))
    winner = table.loc[table["best"].idxmax(), "variants"]
    assert f"ncl.n_iters={best.ncl.n_iters}" in winner or table["best"].nunique() == 1
    assert best.model.init_temperature == 0.05
    assert (sweep / "best.yaml").read_text().startswith("# ncl-ray train")
    assert "sweep sweep in" in (sweep / "logs" / "driver.log").read_text()  # the start train and compare share
    trials = list((sweep / "trials").glob("train-*/tensorboard"))
    assert len(trials) == 2  # one TensorBoard folder per trial, under the sweep
    captured = capsys.readouterr()
    assert "val/served/t2v_R@1" in captured.out and "best config" in captured.out
    assert "2/2 trials" in captured.err  # the one progress line counts every trial of the sweep
