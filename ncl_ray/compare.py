"""`ncl-ray compare CONFIG --seeds N [--arms plain,ncl] [key=value ...]`: does NCL training help, beyond noise?

Runs arms x seeds as one Ray Tune experiment (a grid; every trial a Ray Train run, no early stopping). Arms:
`plain` (ncl.n_iters=0, served with `none`) and `ncl` (the config's n_iters, at least 1, served with `ncl`), each
trained with seeds 0..N-1 (`train.seed` sets the initial weights, the data order and the caption sampling).
Writes to runs/<name>/: `compare.csv` (one row per trial, every test metric), `compare.txt` (mean +- std and
the 95 % interval of the mean per arm, test-time method and metric; the paired per-seed difference of the served
rankings with its interval) and `compare.png` (R@1 with 95 % error bars).
"""

import logging
import math
from typing import Dict, List, Sequence, Tuple

import numpy as np

log = logging.getLogger("ncl_ray.compare")
ARMS = {"plain": 0, "ncl": None}  # n_iters; None = the config's (>= 1)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t_quantile(df: int) -> float:
    """Two-sided 95 % Student-t quantile (table; 1.96 beyond 30 degrees of freedom)."""
    if df <= 0:
        return float("nan")
    keys = sorted(k for k in T975 if k <= df)
    return T975[keys[-1]] if df <= 30 else 1.96


def mean_std_ci(values: Sequence[float]) -> Tuple[float, float, float]:
    """(mean, sample std, half-width of the 95 % interval of the mean)."""
    x = np.asarray(values, float)
    if len(x) < 2:
        return float(x.mean()) if len(x) else float("nan"), float("nan"), float("nan")
    sd = float(x.std(ddof=1))
    return float(x.mean()), sd, t_quantile(len(x) - 1) * sd / math.sqrt(len(x))


def summarize(rows: List[Dict], metrics: Sequence[str] = ("t2v_R@1", "v2t_R@1", "t2v_R@5", "v2t_R@5"),
              methods: Sequence[str] = ("none", "ncl", "dsl", "qbnorm")) -> Tuple[List[Dict], List[Dict]]:
    """rows: {arm, seed, test/<method>/<metric>...} -> (per arm/method/metric stats, paired served differences)."""
    stats = []
    for arm in sorted({r["arm"] for r in rows}):
        arm_rows = [r for r in rows if r["arm"] == arm]
        for method in methods:
            for m in metrics:
                vals = [r[f"test/{method}/{m}"] for r in arm_rows if f"test/{method}/{m}" in r]
                if vals:
                    mean, sd, ci = mean_std_ci(vals)
                    stats.append({"arm": arm, "method": method, "metric": m, "n": len(vals), "mean": mean,
                                  "std": sd, "ci95": ci})
    paired = []
    served = {"plain": "none", "ncl": "ncl"}
    by_seed = {(r["arm"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows if ("plain", r["seed"]) in by_seed and ("ncl", r["seed"]) in by_seed})
    for m in metrics:
        diffs = [by_seed[("ncl", s)][f"test/ncl/{m}"] - by_seed[("plain", s)][f"test/none/{m}"] for s in seeds]
        if diffs:
            mean, sd, ci = mean_std_ci(diffs)
            paired.append({"metric": m, "comparison": f"ncl arm ({served['ncl']}) - plain arm ({served['plain']})",
                           "n": len(diffs), "mean": mean, "std": sd, "ci95": ci})
    return stats, paired


def format_summary(stats: List[Dict], paired: List[Dict], ceiling: float) -> str:
    lines = [f"{'arm':6s} {'method':7s} {'metric':8s} {'n':>3s} {'mean':>7s} {'std':>6s} {'95% CI of mean':>18s}"]
    for s in stats:
        lines.append(f"{s['arm']:6s} {s['method']:7s} {s['metric']:8s} {s['n']:3d} {s['mean']:7.2f} {s['std']:6.2f} "
                     f"[{s['mean'] - s['ci95']:7.2f}, {s['mean'] + s['ci95']:7.2f}]")
    lines.append("")
    lines.append("paired per-seed difference of the served rankings (NCL-trained with ncl - plain with none):")
    for p in paired:
        verdict = "beyond noise" if abs(p["mean"]) > p["ci95"] else "within noise"
        lines.append(f"  {p['metric']:8s} n={p['n']} mean {p['mean']:+.2f} std {p['std']:.2f} "
                     f"95% CI [{p['mean'] - p['ci95']:+.2f}, {p['mean'] + p['ci95']:+.2f}]  ({verdict})")
    lines.append(f"caption ceiling: {ceiling:.1f} % of test captions are word for word a caption of another test "
                 f"video, so t2v R@1 cannot reach 100")
    return "\n".join(lines)


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
    from ncl_ray.plots import _plt, save

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, metric in zip(axes, ("t2v_R@1", "v2t_R@1")):
        rows = [s for s in stats if s["metric"] == metric]
        arms = sorted({s["arm"] for s in rows})
        methods = [m for m in ("none", "ncl", "dsl", "qbnorm") if any(s["method"] == m for s in rows)]
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


def main(cfg, seeds: int, arms: List[str]) -> int:
    import pandas as pd
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from ncl_ray.cluster import init_ray
    from ncl_ray.config import ConfigError, save_config, to_dict
    from ncl_ray.inputs import check_inputs, prepare_data
    from ncl_ray.runs import open_run_dir
    from ncl_ray.tune import _trial

    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise ConfigError(f"--arms: unknown arm(s) {unknown} (choose from {', '.join(ARMS)})")
    if seeds < 2:
        raise ConfigError("--seeds: at least 2 seeds are needed for a spread")
    n_iters = {a: (ARMS[a] if ARMS[a] is not None else max(1, cfg.ncl.n_iters)) for a in arms}
    entries = check_inputs(cfg)
    run_dir = open_run_dir(cfg, "compare_config.yaml", kind="comparison")
    init_ray(cfg.run.ray_address, verbose=cfg.run.verbose)
    datasets, meta, cache = prepare_data(cfg, run_dir, entries)
    meta["trials_dir"] = str(run_dir / "trials")
    space = {"ncl.n_iters": tune.grid_search(sorted(set(n_iters.values()))), "train.seed": tune.grid_search(
        list(range(seeds)))}
    trainable = tune.with_resources(tune.with_parameters(_trial, base=to_dict(cfg), datasets=datasets, meta=meta),
                                    {"CPU": 0.1})
    import os

    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's own path and TensorBoard hints off (verbose=0)
    tuner = tune.Tuner(trainable, param_space=space,
                       tune_config=tune.TuneConfig(max_concurrent_trials=cfg.tune.max_concurrent),
                       run_config=tune.RunConfig(name="tuner", storage_path=str(run_dir), verbose=0,
                                                 callbacks=[JsonLoggerCallback(), CSVLoggerCallback()]))
    log.info("comparison: arms %s x seeds 0..%d = %d Ray Train runs", ", ".join(arms), seeds - 1,
             len(arms) * seeds)
    grid = tuner.fit()
    arm_of = {v: a for a, v in n_iters.items()}
    rows = []
    for r in grid:
        if r.error or not r.metrics:
            log.warning("trial %s failed: %s", r.path, str(r.error).splitlines()[0] if r.error else "no metrics")
            continue
        rows.append({"arm": arm_of[r.config["ncl.n_iters"]], "seed": r.config["train.seed"],
                     **{k: v for k, v in r.metrics.items() if k.startswith("test/")}})
    if not rows:
        print("no trial finished", flush=True)
        return 1
    pd.DataFrame(rows).sort_values(["arm", "seed"]).to_csv(run_dir / "compare.csv", index=False)
    stats, paired = summarize(rows)
    text = format_summary(stats, paired, caption_ceiling(entries, cfg.data.test_split))
    (run_dir / "compare.txt").write_text(text + "\n")
    pd.DataFrame(stats).to_csv(run_dir / "compare_summary.csv", index=False)
    plot(stats, str(run_dir / "compare.png"), f"{cfg.run.name}: {len(rows)} runs, test split '{cfg.data.test_split}'"
         f" ({cfg.data.dataset}, {cfg.data.synthetic_profile if cfg.data.dataset == 'synthetic' else ''})")
    save_config(cfg, str(run_dir / "compare_config.yaml"))
    print()
    print(text)
    print(f"wrote {run_dir / 'compare.csv'}, compare.txt, compare_summary.csv, compare.png")
    return 0 if len(rows) == len(arms) * seeds else 1
