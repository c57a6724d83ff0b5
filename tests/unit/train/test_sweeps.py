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


@pytest.mark.parametrize("line, match", [
    ("ncl.queue_size: {grid: [16, -4]}", r"'ncl.queue_size' = -4: 'ncl.queue_size' must be >= 0, got -4"),
    ("model.init_temperature: {loguniform: [0.01, 2.0]}", r"= 2.0: 'model.init_temperature' must be in \(0, 1\]"),
    ("model.pooling: {choice: [meanP, maxP]}", r"'model.pooling' = 'maxP': invalid value for 'model.pooling'"),
    ("ncl.n_iters: {randint: [-1, 4]}", r"'ncl.n_iters' = -1: 'ncl.n_iters' must be >= 0"),
    ("ncl.n_iters: {uniform: [1]}", r"'ncl.n_iters' uniform needs \[low, high\]"),
])
def test_every_value_a_space_can_sample_passes_the_schema_before_ray_starts(tmp_path, line, match):
    """Grid and choice values, and both ends of a range, are checked like a loaded config."""
    from ncl_ray.train.tune import load_space

    space = tmp_path / "space.yaml"
    space.write_text(line + "\n")
    with pytest.raises(ConfigError, match=match):
        load_space(str(space), load_config(None))


def test_the_trial_count_is_every_grid_combination_times_the_samples(tmp_path):
    from ncl_ray.train.tune import count_trials, load_space

    space = tmp_path / "space.yaml"
    space.write_text("ncl.n_iters: {grid: [0, 3, 10]}\nncl.queue_size: {grid: [16, 64]}\n"
                     "model.init_temperature: {loguniform: [0.01, 0.1]}\n")
    assert count_trials(load_space(str(space), load_config(None)), num_samples=2) == 12  # 3 x 2 grid, twice
    assert count_trials({}, num_samples=4) == 4


def test_variants_are_one_grid_over_whole_settings_each_checked(tmp_path):
    """`variants:` lists settings where one key matters only with another (the queue only with NCL): each is
    one grid value, checked like a loaded config, and applied key by key."""
    from ncl_ray.config.schema import to_dict
    from ncl_ray.train.tune import apply_params, count_trials, load_space

    space = tmp_path / "space.yaml"
    space.write_text("variants:\n  - {ncl.n_iters: 0}\n  - {ncl.n_iters: 3, ncl.queue_size: 64}\n"
                     "  - {ncl.n_iters: 3, eval.methods: [none, ncl]}\nmodel.init_temperature: {grid: [0.05, 0.1]}\n")
    cfg = load_config(None)
    loaded = load_space(str(space), cfg)
    assert loaded["variants"]["grid_search"] == ["ncl.n_iters=0", "ncl.n_iters=3 ncl.queue_size=64",
                                                  "ncl.n_iters=3 eval.methods=[none,ncl]"]
    assert count_trials(loaded, num_samples=1) == 6
    applied = apply_params(to_dict(cfg), {"variants": "ncl.n_iters=3 ncl.queue_size=64",
                                          "model.init_temperature": 0.1})
    assert (applied.ncl.n_iters, applied.ncl.queue_size, applied.model.init_temperature) == (3, 64, 0.1)
    assert list(apply_params(to_dict(cfg), {"variants": "eval.methods=[none,ncl]"}).eval.methods) == ["none", "ncl"]
    for bad, match in [("variants:\n  - {ncl.queue_size: -1}\n", r"variants\[0\] ncl.queue_size=-1: .*>= 0"),
                       ("variants:\n  - {ncl.queue_sz: 4}\n", r"variants\[0\].*'ncl.queue_sz' is not a config key"),
                       ("variants: {ncl.n_iters: 0}\n", "needs a list of mappings"),
                       ("variants:\n  - {ncl.n_iters: 0}\n  - {ncl.n_iters: 0}\n", "the same settings twice")]:
        space.write_text(bad)
        with pytest.raises(ConfigError, match=match):
            load_space(str(space), cfg)
