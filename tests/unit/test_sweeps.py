"""Sweep plumbing without Ray: the space file's errors name the key, and the trial count the progress line uses."""

import pytest

from ncl_ray.config.schema import ConfigError, load_config


def test_space_file_errors_name_the_key(tmp_path):
    from ncl_ray.train.tune import load_space

    cfg = load_config(None)
    bad = tmp_path / "space.yaml"
    bad.write_text("ncl.queue_sz: {grid: [1, 2]}\n")
    with pytest.raises(ConfigError, match="ncl.queue_sz"):
        load_space(str(bad), cfg)
    bad.write_text("ncl.n_iters: {gird: [1, 2]}\n")
    with pytest.raises(ConfigError, match="ncl.n_iters"):
        load_space(str(bad), cfg)


def test_the_trial_count_is_every_grid_combination_times_the_samples(tmp_path):
    from ncl_ray.train.tune import count_trials, load_space

    space = tmp_path / "space.yaml"
    space.write_text("ncl.n_iters: {grid: [0, 3, 10]}\nncl.queue_size: {grid: [16, 64]}\n"
                     "model.init_temperature: {loguniform: [0.01, 0.1]}\n")
    assert count_trials(load_space(str(space), load_config(None)), num_samples=2) == 12  # 3 x 2 grid, twice
    assert count_trials({}, num_samples=4) == 4
