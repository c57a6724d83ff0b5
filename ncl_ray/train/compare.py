"""`ncl-ray compare CONFIG --seeds N [--arms plain,ncl] [--arm NAME:key=value,...] [key=value ...]`: does NCL
training help, beyond noise?

Runs arms x seeds as one Ray Tune experiment (a grid; every trial a Ray Train run, no early stopping). Arms:
`plain` (ncl.n_iters=0, served with `none`), `ncl` (the config's n_iters, at least 1, served with `ncl`) and any
named with `--arm NAME:key=value,key=value` (e.g. `--arm w0.5:ncl.plain_loss_weight=0.5`), each trained with
seeds 0..N-1 (`train.seed` sets the initial weights, the data order and the caption sampling). Every arm is
served as its training implies (n_iters > 0: `ncl`, else `none`) and compared per seed with the baseline arm
(`plain` when it runs, else the first). The collapse statistics of each run (the last logged values of
`train/text_bias_std`, `train/text_popularity_std`, `train/text_mean_norm`) are summarised per arm too.
Writes to runs/<name>/: `compare.csv` (one row per trial, every test metric), `compare.txt` (mean +- std and
the 95 % interval of the mean per arm, test-time method and metric; the paired per-seed difference of the served
rankings with its interval; with more test-time methods than two (`eval.methods=[all]`), the league: each arm's
served method against every other method on the same checkpoints, paired per seed) and `compare.png` (R@1 with
95 % error bars).
"""

import logging
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ncl_ray.ncl.methods import METHODS
from ncl_ray.runtime import storage
from ncl_ray.runtime.runs import publish, run_uri_of
from ncl_ray.train.paired import COLLAPSE, format_summary, league_pairs, summarize

log = logging.getLogger("ncl_ray.train.compare")
ARMS = {"plain": 0, "ncl": None}  # n_iters; None = the config's (>= 1)


def parse_arm(spec: str) -> Tuple[str, Dict[str, str]]:
    """`NAME:key=value,key=value` -> (NAME, {key: value}); a clear error naming the spec otherwise."""
    from ncl_ray.config.schema import ConfigError

    name, sep, rest = spec.partition(":")
    pairs = [p.strip() for p in rest.split(",") if p.strip()]
    if not sep or not name.strip() or not pairs or any("=" not in p for p in pairs):
        raise ConfigError(f"--arm {spec!r}: expected NAME:key=value[,key=value...], "
                          f"e.g. w0.5:ncl.plain_loss_weight=0.5")
    return name.strip(), dict(p.split("=", 1) for p in pairs)


def caption_ceiling(entries, split: str) -> float:
    """Share (percent) of the split's captions that also describe another video of the split, word for word."""
    owners: Dict[str, set] = {}
    for e in entries:
        if e.split == split:
            for c in e.captions:
                owners.setdefault(c, set()).add(e.video_id)
    total = sum(1 for e in entries if e.split == split for _ in e.captions)
    shared = sum(1 for e in entries if e.split == split for c in e.captions if len(owners[c]) > 1)
    return 100.0 * shared / max(1, total)


def plot(stats: List[Dict], path: str, title: str) -> str:
    from ncl_ray.ui.plots import _plt, save

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, metric in zip(axes, ("t2v_R@1", "v2t_R@1")):
        rows = [s for s in stats if s["metric"] == metric]
        arms = sorted({s["arm"] for s in rows})
        methods = [m for m in METHODS if any(s["method"] == m for s in rows)]
        width = 0.8 / max(1, len(arms))
        for i, arm in enumerate(arms):
            vals = [next((s for s in rows if s["arm"] == arm and s["method"] == m), None) for m in methods]
            ax.bar(np.arange(len(methods)) + i * width, [v["mean"] if v else 0 for v in vals], width,
                   yerr=[v["ci95"] if v else 0 for v in vals], capsize=4, label=f"{arm}-trained")
        ax.set_xticks(np.arange(len(methods)) + width * (len(arms) - 1) / 2, methods)
        ax.set_xlabel("test-time method")
        ax.set_title(metric.replace("_", " "))
        ax.legend()
    axes[0].set_ylabel("recall (%), mean with 95 % interval over seeds")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def arm_overrides(cfg, arms: List[str], custom: Dict[str, Dict[str, str]]) -> Dict[str, Dict]:
    """Every arm's config overrides, typed and checked against the schema (before Ray starts)."""
    import yaml

    from ncl_ray.config.schema import ConfigError, to_dict
    from ncl_ray.train.tune import apply_params

    unknown = [a for a in arms if a not in ARMS]
    if unknown or not (arms or custom):
        raise ConfigError(f"--arms: unknown arm(s) {unknown} (choose from {', '.join(ARMS)}, or name one with --arm)")
    out = {a: {"ncl.n_iters": ARMS[a] if ARMS[a] is not None else max(1, cfg.ncl.n_iters)} for a in arms}
    for name, pairs in custom.items():
        if name in out:
            raise ConfigError(f"--arm {name}: the name is already taken by another arm")
        data_keys = [k for k in pairs if k.startswith("data.")]
        if data_keys:
            raise ConfigError(f"--arm {name}: {data_keys[0]} cannot differ between arms (they share one dataset)")
        out[name] = {k: yaml.safe_load(v) for k, v in pairs.items()}
        apply_params(to_dict(cfg), out[name])  # unknown keys, wrong types, out-of-range values
    return out


def _arm_trial(params: Dict, arms: Dict[str, Dict], base: Dict, datasets, meta: Dict) -> None:
    from ncl_ray.train.tune import _trial

    _trial({**arms[params["arm"]], "train.seed": params["train.seed"]}, base, datasets, meta)


def last_logged(tb_dir: str, tags: Sequence[str] = COLLAPSE, n: int = 5) -> Dict[str, float]:
    """Mean of the last `n` logged values of each tag in a run's TensorBoard folder (missing tags left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(tb_dir)
    events.Reload()
    have = set(events.Tags().get("scalars", []))
    return {t: float(np.mean([e.value for e in events.Scalars(t)[-n:]])) for t in tags if t in have}


def run_comparison(cfg, seeds: int, arms: List[str], custom: Optional[Dict[str, Dict[str, str]]] = None) -> int:
    from ncl_ray.config.schema import ConfigError, served_method, to_dict
    from ncl_ray.train.inputs import open_run
    from ncl_ray.train.tune import apply_params

    overrides = arm_overrides(cfg, arms, custom or {})
    if seeds < 2:
        raise ConfigError("--seeds: at least 2 seeds are needed for a spread")
    served = {a: served_method(apply_params(to_dict(cfg), o)) for a, o in overrides.items()}
    run_dir, entries = open_run(cfg, "compare_config.yaml", kind="comparison")
    uri = run_uri_of(cfg)  # object storage: run_dir is a scratch folder, mirrored there at the end and removed
    try:
        return _compare(cfg, seeds, overrides, served, run_dir, uri, entries)
    finally:
        if uri:
            publish(run_dir, uri)
            shutil.rmtree(run_dir, ignore_errors=True)


def _compare(cfg, seeds: int, overrides, served, run_dir, uri: str, entries) -> int:
    import os

    import pandas as pd
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from ncl_ray.config.schema import save_config, to_dict
    from ncl_ray.train.inputs import prepare_data

    home = uri or str(run_dir)  # where Tune and the trials keep their state
    datasets, meta, cache = prepare_data(cfg, run_dir, entries)
    meta["trials_dir"] = storage.join(home, "trials")
    space = {"arm": tune.grid_search(list(overrides)), "train.seed": tune.grid_search(list(range(seeds)))}
    trainable = tune.with_resources(tune.with_parameters(_arm_trial, arms=overrides, base=to_dict(cfg),
                                                         datasets=datasets, meta=meta), {"CPU": 0.1})
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's own path and TensorBoard hints off (verbose=0)
    tuner = tune.Tuner(trainable, param_space=space,
                       tune_config=tune.TuneConfig(max_concurrent_trials=cfg.tune.max_concurrent),
                       run_config=tune.RunConfig(name="tuner", storage_path=home, verbose=0,
                                                 callbacks=[JsonLoggerCallback(), CSVLoggerCallback()]))
    log.info("comparison: arms %s x seeds 0..%d = %d Ray Train runs", ", ".join(overrides), seeds - 1,
             len(overrides) * seeds)
    grid = tuner.fit()
    rows = []
    for r in grid:
        if r.error or not r.metrics:
            log.warning("trial %s failed: %s", r.path, str(r.error).splitlines()[0] if r.error else "no metrics")
            continue
        tb = storage.join(meta["trials_dir"], f"train-{r.metrics.get('trial_id', '')}", "tensorboard")
        rows.append({"arm": r.config["arm"], "seed": r.config["train.seed"],
                     **{k: v for k, v in r.metrics.items() if k.startswith("test/")},
                     **(last_logged(tb) if storage.is_uri(tb) or Path(tb).is_dir() else {})})
    if not rows:
        print("no trial finished", flush=True)
        return 1
    pd.DataFrame(rows).sort_values(["arm", "seed"]).to_csv(run_dir / "compare.csv", index=False)
    stats, paired = summarize(rows, methods=(*METHODS, "train"), served=served,
                              baseline=next(iter(overrides)))
    league = league_pairs(rows, served) if len(cfg.eval.methods) > 2 else []
    text = format_summary(stats, paired, caption_ceiling(entries, cfg.data.test_split), league)
    if cfg.train.protocol == "published":
        from ncl_ray.ui.summary import PUBLISHED

        text = PUBLISHED + "\n" + text
    (run_dir / "compare.txt").write_text(text + "\n")
    pd.DataFrame(stats).to_csv(run_dir / "compare_summary.csv", index=False)
    plot(stats, str(run_dir / "compare.png"), f"{cfg.run.name}: {len(rows)} runs, test split '{cfg.data.test_split}'"
         f" ({cfg.data.dataset}, {cfg.data.synthetic_profile if cfg.data.dataset == 'synthetic' else ''})")
    save_config(cfg, str(run_dir / "compare_config.yaml"))
    print()
    print(text)
    print(f"wrote {home}/compare.csv, compare.txt, compare_summary.csv, compare.png")
    return 0 if len(rows) == len(overrides) * seeds else 1
