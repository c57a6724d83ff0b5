from pathlib import Path

import pytest

from ncl_ray.config.schema import ConfigError, from_dict, load_config, save_config, to_dict

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("path", sorted(str(p) for p in (ROOT / "conf").glob("*.yaml")))
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.run.name and Path(cfg.run.storage_path).is_absolute() or "://" in cfg.run.storage_path
    first = Path(path).read_text().splitlines()[0]
    assert first.startswith("#") and "ncl-ray" in first, f"{path} must open with the command that runs it"


def test_overrides_and_types():
    cfg = load_config(None, ["ncl.n_iters=0", "train.batch_size=4", "eval.methods=[none,ncl]"])
    assert cfg.ncl.n_iters == 0 and cfg.train.batch_size == 4 and list(cfg.eval.methods) == ["none", "ncl"]


def test_unknown_key_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="ncl.n_iter"):
        load_config(None, ["ncl.n_iter=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*epochz"):
        load_config(str(bad))


def test_wrong_type_and_value_name_the_key():
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(None, ["train.batch_size=many"])
    with pytest.raises(ConfigError, match="model.pooling"):
        load_config(None, ["model.pooling=max"])
    with pytest.raises(ConfigError, match="ncl.n_iters"):
        load_config(None, ["ncl.n_iters=-1"])
    with pytest.raises(ConfigError, match="data.decode_threads"):
        load_config(None, ["data.decode_threads=-2"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("conf/nope.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_resume_needs_a_name():
    with pytest.raises(ConfigError, match="run.name"):
        load_config(None, ["train.resume=true"])


def test_save_and_round_trip(tmp_path):
    cfg = load_config(None, ["ncl.queue_size=7"])
    save_config(cfg, str(tmp_path / "config.yaml"))
    again = load_config(str(tmp_path / "config.yaml"))
    assert to_dict(again) == to_dict(cfg)
    assert from_dict(to_dict(cfg)).ncl.queue_size == 7


@pytest.mark.parametrize("override, key", [
    ("train.checkpoint_every_epochs=0", "train.checkpoint_every_epochs"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints"),
    ("train.cpus_per_worker=-1", "train.cpus_per_worker"),
    ("optim.lr=-1", "optim.lr"),
    ("optim.weight_decay=-0.1", "optim.weight_decay"),
    ("optim.warmup_ratio=2", "optim.warmup_ratio"),
    ("data.synthetic_videos=-5", "data.synthetic_videos"),
    ("train.max_failures=-2", "train.max_failures"),
    ("eval.qbnorm_k=0", "eval.qbnorm_k"),
    ("tune.reduction_factor=1", "tune.reduction_factor"),
    ("run.name=../../etc/x", "run.name"),
    ("run.name=a/b", "run.name"),
    ("train=5", "train"),
])
def test_range_checks_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_yaml_shapes_are_checked(tmp_path):
    top_list = tmp_path / "list.yaml"
    top_list.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml.*mapping"):
        load_config(str(top_list))
    scalar_section = tmp_path / "scalar.yaml"
    scalar_section.write_text("train: 5\n")
    with pytest.raises(ConfigError, match="scalar.yaml.*'train' must be a section"):
        load_config(str(scalar_section))


@pytest.mark.parametrize("conf", ["conf/default.yaml", "conf/msrvtt.yaml", "conf/tune_small.yaml"])
def test_config_show_is_yaml_that_loads_back_to_the_same_values(conf, capsys, tmp_path):
    import yaml
    from omegaconf import OmegaConf

    from ncl_ray.cli import main

    assert main(["config", "show", conf, "eval.methods=[none,ncl]", "run.name=show"]) == 0  # a name not from the clock
    out = capsys.readouterr().out
    cfg = load_config(conf, ["eval.methods=[none,ncl]", "run.name=show"])
    assert yaml.safe_load(out) == OmegaConf.to_container(cfg, resolve=True)
    assert "  methods: [none, ncl]" in out and "# " in out  # flow lists, and the meanings as comments
    (tmp_path / "mine.yaml").write_text(out)  # and it is a config file of its own
    assert to_dict(load_config(str(tmp_path / "mine.yaml"))) == to_dict(cfg)


@pytest.mark.parametrize("override, message", [
    ("train.epochs=abc", "command line: 'train.epochs' expects an integer, e.g. train.epochs=20; got 'abc'"),
    ("model.learn_temperature=maybe", "'model.learn_temperature' expects true or false, e.g. "
                                      "model.learn_temperature=true; got 'maybe'"),
    ("model.init_temperature=x", "'model.init_temperature' expects a number, e.g. model.init_temperature=0.07"),
    ("eval.methods=ncl", "'eval.methods' expects a list, e.g. eval.methods=[none,ncl,dsl,qbnorm]"),
    ("train.epochz=3", "unknown key 'train.epochz'"),
])
def test_value_errors_name_the_key_the_type_and_an_example(override, message, capsys):
    from ncl_ray.cli import main

    assert main(["config", "show", "conf/default.yaml", override]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1  # one line, no OmegaConf internals
    assert "full_key" not in err and "object_type" not in err


def test_a_manifest_dataset_without_a_manifest_names_the_key():
    with pytest.raises(ConfigError, match=r"'data.manifest' is required with data.dataset=manifest"):
        load_config("conf/default.yaml", ["data.dataset=manifest"])


def test_decode_on_worker_refuses_what_it_cannot_decode_and_auto_follows_the_gpu():
    from ncl_ray.config.rules import decode_site
    from ncl_ray.config.schema import ConfigError, load_config

    for clash in ("data.cache_encoding=raw", "data.streaming=true"):
        with pytest.raises(ConfigError, match=f"'data.decode_on=worker'.*'{clash}'"):
            load_config(None, ["data.decode_on=worker", clash])
    assert decode_site(load_config(None, [])) == "tasks"
    assert decode_site(load_config(None, ["train.use_gpu=true"])) == "worker"
    assert decode_site(load_config(None, ["train.use_gpu=true", "data.cache_encoding=raw"])) == "tasks"
    # the recipe's pairs: nvJPEG in the trainer on GPUs as well (and accepted when asked for)
    assert decode_site(load_config("conf/msrvtt.yaml", ["train.use_gpu=true"])) == "worker"
    assert decode_site(load_config("conf/msrvtt.yaml", ["data.decode_on=worker"])) == "worker"


def test_an_unknown_arch_is_one_line_before_anything_starts(tmp_path):
    """`ncl-ray train ... model.arch=ViT-X-99`: exit 2 at once, one line with the nearest names, no run folder."""
    import subprocess
    import sys
    import time

    from ncl_ray.config.rules import open_clip_archs

    root = Path(__file__).resolve().parents[3]
    started = time.time()
    r = subprocess.run([sys.executable, "-m", "ncl_ray", "train", str(root / "conf" / "default.yaml"),
                        "model.arch=ViT-B-33", f"run.storage_path={tmp_path / 'runs'}"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and time.time() - started < 15
    assert r.stderr.strip().splitlines() == [
        "config error: command line: 'model.arch': unknown architecture 'ViT-B-33' (tiny, or one of open_clip's "
        f"{len(open_clip_archs())}, e.g. ViT-B-32, ViT-S-32, "
        "ViT-M-32)"]
    assert not (tmp_path / "runs").exists() and list(tmp_path.iterdir()) == []
    for ok in ("ViT-B-32", "tiny", "hf-hub:org/model"):
        assert load_config("conf/default.yaml", [f"model.arch={ok}"]).model.arch == ok


def test_an_empty_override_is_the_empty_string_and_range_errors_name_their_source(tmp_path):
    assert load_config("conf/default.yaml", ["model.pretrained="]).model.pretrained == ""
    with pytest.raises(ConfigError, match=r"^command line: 'ncl.queue_size' must be >= 0, got -1$"):
        load_config("conf/default.yaml", ["ncl.queue_size=-1"])
    mine = tmp_path / "mine.yaml"
    mine.write_text("ncl:\n  queue_size: -2\n")
    with pytest.raises(ConfigError, match=rf"^{mine}: 'ncl.queue_size' must be >= 0, got -2$"):
        load_config(str(mine))


def test_config_show_without_a_name_trains_again_under_a_new_name(capsys, tmp_path):
    """The clock's run name is made at each start, so the shown config is '' there and loads to a fresh name."""
    from ncl_ray.cli import main

    assert main(["config", "show", "conf/default.yaml"]) == 0
    out = capsys.readouterr().out
    assert "  name: ''" in out
    (tmp_path / "shown.yaml").write_text(out)
    assert load_config(str(tmp_path / "shown.yaml")).run.name.startswith("ncl-")
    assert main(["config", "show", str(tmp_path / "shown.yaml"), "run.name=mine"]) == 0
    assert "  name: mine" in capsys.readouterr().out
