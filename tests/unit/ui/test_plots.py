"""The plots read back: titles naming run, split and bank, axis labels, legends on every panel, chance."""

import numpy as np

from ncl_ray.ui.plots import mass_figure, recall_figure, save


def test_recall_figure_has_title_labels_legends_and_chance(tmp_path):
    metrics = {f"{m}/{d}_R@{k}": 10.0 * k for m in ("none", "ncl") for d in ("t2v", "v2t") for k in (1, 5, 10)}
    fig = recall_figure(metrics, ["none", "ncl"], 80, "run r1, split 'test' (80 videos), bank-train")
    assert "run r1" in fig._suptitle.get_text() and "bank-train" in fig._suptitle.get_text()
    for ax, direction in zip(fig.axes, ("t2v", "v2t")):
        assert ax.get_title().startswith(direction) and ax.get_xlabel().startswith(direction)
        chance = [line for line in ax.get_lines() if line.get_label() == "chance"][0]
        assert np.allclose(chance.get_ydata(), [1.25, 6.25, 12.5])
    assert fig.axes[0].get_ylabel() == "recall (%)"
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"chance", "none", "ncl"}  # one figure legend
    path = save(fig, str(tmp_path / "recall.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_mass_figure_names_methods_as_the_table_does():
    g = np.random.default_rng(0)
    fig = mass_figure(g.random(50) * 3, np.full(50, 3.0), 150, "run r1, split 'test', bank-train")
    ax = fig.axes[0]
    assert "run r1" in ax.get_title() and "bank-train" in ax.get_title()
    assert ax.get_xlabel() and ax.get_ylabel() == "number of videos"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("none") and labels[1] == "ncl" and "R/C = 3.00" in labels[2]


def test_the_recall_legend_covers_no_bar():
    from ncl_ray.ui.plots import recall_figure

    methods = ["none", "ncl", "dsl", "qbnorm"]
    metrics = {f"{m}/{d}_R@{k}": 95.0 for m in methods for d in ("t2v", "v2t") for k in (1, 5, 10)}  # tall bars
    fig = recall_figure(metrics, methods, 80, "run x")
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    bars = [patch.get_window_extent() for ax in fig.axes for patch in ax.patches]
    assert len(bars) == 2 * 3 * len(methods) and not [b for b in bars if b.overlaps(legend)]
    assert not [ax for ax in fig.axes if ax.get_legend() is not None]  # no second legend inside an axis
