"""The plots read back: titles naming run, split and bank, axis labels, legends on every panel, chance."""

import numpy as np

from ncl_ray.ui.plots import mass_figure, recall_figure, save


def test_recall_figure_has_title_labels_legends_and_chance(tmp_path):
    metrics = {f"{m}/{d}_R@{k}": 10.0 * k for m in ("none", "ncl") for d in ("t2v", "v2t") for k in (1, 5, 10)}
    fig = recall_figure(metrics, ["none", "ncl"], 80, "run r1, split 'test' (80 videos), bank-train")
    assert "run r1" in fig._suptitle.get_text() and "bank-train" in fig._suptitle.get_text()
    for ax, direction in zip(fig.axes, ("t2v", "v2t")):
        assert ax.get_title().startswith(direction) and ax.get_xlabel().startswith(direction)
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["chance", "none", "ncl"] or set(labels) == {"chance", "none", "ncl"}
        chance = [line for line in ax.get_lines() if line.get_label() == "chance"][0]
        assert np.allclose(chance.get_ydata(), [1.25, 6.25, 12.5])
    assert fig.axes[0].get_ylabel() == "recall (%)"
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
