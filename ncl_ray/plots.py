"""Diagnostic plots (PNG, matplotlib Agg): sum-retrieval-probability histograms and R@K per method."""

from pathlib import Path
from typing import Dict, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mass_histogram(before: np.ndarray, after: np.ndarray, n_queries: int, path: str, label: str = "NCL") -> str:
    """Histogram of P(v_j) = sum_i p(v_j | t_i) over gallery items, before and after normalisation.
    NCL's target is the same value R/C for every item (the dashed line)."""
    plt = _plt()
    target = n_queries / len(before)
    fig, ax = plt.subplots(figsize=(6, 4))
    hi = max(float(before.max()), float(after.max()), 2 * target)
    bins = np.linspace(0, hi, 40)
    ax.hist(before, bins=bins, alpha=0.6, label="plain softmax")
    ax.hist(after, bins=bins, alpha=0.6, label=label)
    ax.axvline(target, color="k", linestyle="--", label=f"target R/C = {target:.2f}")
    ax.set_xlabel("sum retrieval probability of a gallery video")
    ax.set_ylabel("videos")
    ax.set_title("t2v: how evenly the gallery is retrieved")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def recall_bars(metrics: Dict[str, float], methods: Sequence[str], path: str, prefix: str = "") -> str:
    """Grouped bars of R@1/5/10 per method, t2v and v2t side by side."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    ks = ("R@1", "R@5", "R@10")
    width = 0.8 / max(1, len(methods))
    for ax, direction in zip(axes, ("t2v", "v2t")):
        for i, m in enumerate(methods):
            vals = [metrics.get(f"{prefix}{m}/{direction}_{k}", 0.0) for k in ks]
            ax.bar(np.arange(len(ks)) + i * width, vals, width, label=m)
        ax.set_xticks(np.arange(len(ks)) + width * (len(methods) - 1) / 2, ks)
        ax.set_title(direction)
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("recall (%)")
    axes[1].legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
