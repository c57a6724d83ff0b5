"""Diagnostic plots (PNG, matplotlib Agg): sum-retrieval-probability histograms and R@K per method.

Every figure names the run, the split and the bank in its title, labels both axes, has a legend on every
panel and marks what chance (or the NCL target) would be. `*_figure` builds the figure (tests read it back);
the plain functions also save it.
"""

from pathlib import Path
from typing import Dict, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mass_figure(before: np.ndarray, after: np.ndarray, n_queries: int, title: str, method: str = "ncl"):
    """Histogram of P(v_j) = sum_i p(v_j | t_i) over gallery videos, with method `none` and after `method`.
    NCL's target is the same value R/C for every video (the dashed line)."""
    plt = _plt()
    target = n_queries / len(before)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    hi = max(float(before.max()), float(after.max()), 2 * target)
    bins = np.linspace(0, hi, 40)
    ax.hist(before, bins=bins, alpha=0.6, label="none (no normalisation)")
    ax.hist(after, bins=bins, alpha=0.6, label=method)
    ax.axvline(target, color="k", linestyle="--", label=f"equal share R/C = {target:.2f}")
    ax.set_xlabel("summed retrieval probability of a test video over all test captions")
    ax.set_ylabel("number of videos")
    ax.set_title(f"t2v retrieval mass per video\n{title}", fontsize=10)
    ax.legend()
    fig.tight_layout()
    return fig


def recall_figure(metrics: Dict[str, float], methods: Sequence[str], n_videos: int, title: str, prefix: str = ""):
    """Grouped bars of R@1/5/10 per method, t2v and v2t side by side, with the chance level of each K."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    ks = (1, 5, 10)
    width = 0.8 / max(1, len(methods))
    for ax, direction in zip(axes, ("t2v", "v2t")):
        x = np.arange(len(ks))
        for i, m in enumerate(methods):
            vals = [metrics.get(f"{prefix}{m}/{direction}_R@{k}", 0.0) for k in ks]
            ax.bar(x + i * width, vals, width, label=m)
        chance = [min(100.0, 100.0 * k / max(1, n_videos)) for k in ks]
        ax.plot(x + width * (len(methods) - 1) / 2, chance, "k_", markersize=30, mew=2, label="chance")
        ax.set_xticks(x + width * (len(methods) - 1) / 2, [f"R@{k}" for k in ks])
        ax.set_xlabel(f"{direction}: recall at K")
        ax.set_title(f"{direction} ({'text -> video' if direction == 't2v' else 'video -> text'})")
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("recall (%)")
    handles, labels = axes[0].get_legend_handles_labels()  # one legend, under the plots: it covers no bar
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def save(fig, path: str) -> str:
    plt = _plt()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def mass_histogram(before: np.ndarray, after: np.ndarray, n_queries: int, path: str, title: str = "",
                   method: str = "ncl") -> str:
    return save(mass_figure(before, after, n_queries, title, method), path)


def recall_bars(metrics: Dict[str, float], methods: Sequence[str], path: str, n_videos: int = 0, title: str = "",
                prefix: str = "") -> str:
    return save(recall_figure(metrics, methods, n_videos, title, prefix), path)
