"""Paired statistics over seeds for `ncl-ray compare`: the 95 % interval of a mean (Student's t), every arm's
mean per test-time method, the paired per-seed differences (arm against baseline, each as served; and the league:
each arm's served method against every other method on the same checkpoints), and the summary text. No Ray."""

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ncl_ray.ncl.methods import METHODS
from ncl_ray.ui.summary import TRANSDUCTIVE_MARK, shown

COLLAPSE = ("train/text_bias_std", "train/text_popularity_std", "train/text_mean_norm")
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
              methods: Sequence[str] = METHODS, served: Optional[Dict[str, str]] = None,
              baseline: str = "") -> Tuple[List[Dict], List[Dict]]:
    """rows: {arm, seed, test/<method>/<metric>...} -> (per arm/method/metric stats, paired differences of the
    served rankings: every arm minus the baseline arm, seed by seed). `served`: arm -> its test-time method."""
    stats = []
    for arm in sorted({r["arm"] for r in rows}):
        arm_rows = [r for r in rows if r["arm"] == arm]
        for method in methods:
            for m in metrics if method != "train" else COLLAPSE:
                key = m if method == "train" else f"test/{method}/{m}"
                vals = [r[key] for r in arm_rows if key in r and r[key] == r[key]]
                if vals:
                    mean, sd, ci = mean_std_ci(vals)
                    stats.append({"arm": arm, "method": method, "metric": m, "n": len(vals), "mean": mean,
                                  "std": sd, "ci95": ci})
    paired = []
    served = served or {"plain": "none", "ncl": "ncl"}
    arms = [a for a in dict.fromkeys(r["arm"] for r in rows)]
    base = "plain" if "plain" in arms else (baseline or arms[0])
    by_seed = {(r["arm"], r["seed"]): r for r in rows}
    for arm in [a for a in arms if a != base]:
        seeds = sorted({r["seed"] for r in rows if (base, r["seed"]) in by_seed and (arm, r["seed"]) in by_seed})
        for m in metrics:
            a_key, b_key = f"test/{served.get(arm, 'ncl')}/{m}", f"test/{served.get(base, 'none')}/{m}"
            diffs = [by_seed[(arm, s)][a_key] - by_seed[(base, s)][b_key] for s in seeds
                     if a_key in by_seed[(arm, s)] and b_key in by_seed[(base, s)]]
            if diffs:
                mean, sd, ci = mean_std_ci(diffs)
                paired.append({"metric": m, "comparison": f"{arm} arm ({served.get(arm, 'ncl')}) - {base} arm "
                               f"({served.get(base, 'none')})", "n": len(diffs), "mean": mean, "std": sd, "ci95": ci})
    return stats, paired


def league_pairs(rows: List[Dict], served: Dict[str, str], methods: Sequence[str] = METHODS,
                 metrics: Sequence[str] = ("t2v_R@1", "v2t_R@1")) -> List[Dict]:
    """The test-time league on every seed's checkpoint: within each arm, its served method minus each other
    method, seed by seed (`eval.methods=[all]` puts every method in the rows)."""
    out = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        own = served.get(arm, "ncl")
        for other in (m for m in methods if m != own):
            for metric in metrics:
                a, b = f"test/{own}/{metric}", f"test/{other}/{metric}"
                diffs = [r[a] - r[b] for r in rows if r["arm"] == arm and a in r and b in r]
                if len(diffs) >= 2:
                    mean, sd, ci = mean_std_ci(diffs)
                    out.append({"metric": metric, "comparison": f"{arm} arm: {own} - {other}", "n": len(diffs),
                                "mean": mean, "std": sd, "ci95": ci})
    return out


def _paired_line(p: Dict) -> str:
    verdict = "beyond noise" if abs(p["mean"]) > p["ci95"] else "within noise"
    return (f"  {p['comparison']}: {p['metric']:8s} n={p['n']} mean {p['mean']:+.2f} std {p['std']:.2f} "
            f"95% CI [{p['mean'] - p['ci95']:+.2f}, {p['mean'] + p['ci95']:+.2f}]  ({verdict})")


def format_summary(stats: List[Dict], paired: List[Dict], ceiling: float, league: Sequence[Dict] = ()) -> str:
    lines = [f"{'arm':8s} {'method':7s} {'metric':26s} {'n':>3s} {'mean':>7s} {'std':>6s} {'95% CI of mean':>18s}"]
    for s in stats:
        lines.append(f"{s['arm']:8s} {shown(s['method']):7s} {s['metric']:26s} {s['n']:3d} {s['mean']:7.2f} "
                     f"{s['std']:6.2f} [{s['mean'] - s['ci95']:7.2f}, {s['mean'] + s['ci95']:7.2f}]")
    if any(shown(s["method"]) != s["method"] for s in stats):
        lines.append(TRANSDUCTIVE_MARK)
    lines.append("")
    lines.append("paired per-seed difference of the served rankings (each arm as served - the baseline as served):")
    lines += [_paired_line(p) for p in paired]
    if league:
        lines.append("the test-time league, paired per seed (each arm's served method - another method, same "
                     "checkpoints):")
    lines += [_paired_line(p) for p in league]
    lines.append(f"caption ceiling: {ceiling:.1f} % of test captions are word for word a caption of another test "
                 f"video, so t2v R@1 cannot reach 100")
    return "\n".join(lines)
