"""NNN (Nearest Neighbor Normalization, Chowdhury et al. EMNLP 2024) against hand-computed values and against its
reference code's formula, transcribed below: per gallery item, the mean of its k largest similarities to the
reference queries, times alpha, is subtracted from every query's score for that item."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ncl_ray.ncl.fold import fold_gallery, fold_queries
from ncl_ray.ncl.normalize import Sims, make_scorer, nnn_gallery_bias


def unit(*shape, g):
    return F.normalize(torch.randn(*shape, generator=g), dim=1)


def reference_nnn_scores(queries, gallery, reference, k, alpha):
    """NNN's `NNNRetriever`: alignment_means = mean(topk(einsum('ik,jk->ij', gallery, reference), k, dim=1)),
    scores = einsum('ik,jk->ij', queries, gallery) - alpha * alignment_means.T."""
    means = torch.topk(torch.einsum("ik,jk->ij", gallery, reference), k, dim=1).values.mean(dim=1, keepdim=True)
    return torch.einsum("ik,jk->ij", queries, gallery) - alpha * means.T


def test_biases_by_hand():
    bank = torch.tensor([[0.9, 0.1, 0.5],
                         [0.8, 0.2, 0.4],
                         [0.1, 0.3, 0.6],
                         [0.7, 0.0, 0.2]])  # 4 reference queries x 3 items
    b = nnn_gallery_bias(Sims.dense(bank), k=2, alpha=0.5)
    # item 0: top-2 of (0.9, 0.8, 0.1, 0.7) = 0.9, 0.8 -> mean 0.85; item 1: 0.3, 0.2 -> 0.25; item 2: 0.6, 0.5
    assert torch.allclose(b, torch.tensor([-0.425, -0.125, -0.275]))
    scorer = make_scorer("nnn", Sims.dense(torch.tensor([[0.5, 0.45, 0.4]])), 0.01, Sims.dense(bank), nnn_k=2,
                         nnn_alpha=0.5)
    scores = scorer(slice(0, 1), torch.tensor([[0.5, 0.45, 0.4]]))
    assert torch.allclose(scores * 0.01, torch.tensor([[0.075, 0.325, 0.125]]))  # the hub (item 0) drops to last
    assert scores.argsort(dim=1, descending=True).tolist() == [[1, 2, 0]]


@pytest.mark.parametrize("k, alpha, chunk", [(256, 0.5, 0), (128, 0.75, 37), (1, 1.0, 5), (300, 0.5, 64)])
def test_equals_the_reference_formula(k, alpha, chunk):
    g = torch.Generator().manual_seed(k)
    queries, gallery, reference = unit(50, 16, g=g), unit(40, 16, g=g), unit(300, 16, g=g)
    expected = reference_nnn_scores(queries, gallery, reference, k, alpha)  # (50, 40)
    bank = Sims.embeddings(reference, gallery, chunk=chunk)  # row blocks of `chunk` reference queries
    tau = 0.02
    scorer = make_scorer("nnn", Sims.embeddings(queries, gallery), tau, bank, nnn_k=k, nnn_alpha=alpha)
    ours = scorer(slice(0, 50), queries @ gallery.T) * tau
    assert torch.allclose(ours, expected, atol=1e-6)
    assert torch.equal(ours.argsort(dim=1, descending=True), expected.argsort(dim=1, descending=True))


def test_the_bias_of_an_item_needs_only_its_own_column():
    g = torch.Generator().manual_seed(0)
    reference, gallery, new = unit(64, 8, g=g), unit(10, 8, g=g), unit(1, 8, g=g)
    before = nnn_gallery_bias(Sims.embeddings(reference, gallery), k=16)
    after = nnn_gallery_bias(Sims.embeddings(reference, torch.cat([gallery, new])), k=16)
    alone = nnn_gallery_bias(Sims.embeddings(reference, new), k=16)
    assert torch.equal(after[:10], before) and torch.allclose(after[10:], alone)  # one new bias, none changed


def test_folds_into_an_inner_product_index():
    g = torch.Generator().manual_seed(1)
    queries, gallery = unit(30, 8, g=g), unit(25, 8, g=g)
    bias = nnn_gallery_bias(Sims.embeddings(unit(80, 8, g=g), gallery), k=8)
    folded = fold_queries(queries) @ fold_gallery(gallery, bias, 1.0).T  # nnn's bias is on the similarity scale
    expected = (queries @ gallery.T + bias[None, :]).numpy()
    assert np.allclose(folded, expected, atol=1e-6)


def test_k_beyond_the_bank_is_refused_by_name():
    with pytest.raises(ValueError, match=r"nnn: k=256 needs 1 <= k <= the bank's 24 queries \(eval.nnn_k"):
        nnn_gallery_bias(Sims.dense(torch.rand(24, 5)), k=256)


def test_rerank_scores_nnn_and_names_a_too_large_k(tmp_path, capsys):
    from ncl_ray.cli import main

    g = np.random.default_rng(0)
    np.save(tmp_path / "s.npy", g.normal(size=(20, 20)).astype(np.float32))
    np.save(tmp_path / "b.npy", g.normal(size=(40, 20)).astype(np.float32))
    args = ["rerank", "--sims", str(tmp_path / "s.npy"), "--bank-sims", str(tmp_path / "b.npy"), "--method", "nnn"]
    assert main(args + ["--nnn-k", "8"]) == 0 and "t2v nnn" in capsys.readouterr().out
    assert main(args) == 2  # NNN's default k = 256 > 40 bank queries
    assert "nnn: k=256 needs 1 <= k <= the bank's 40 queries (--nnn-k)" in capsys.readouterr().err


def test_a_k_beyond_the_configured_bank_is_refused_before_anything_runs():
    from ncl_ray.config.schema import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"'eval.nnn_k=256' exceeds the 24 queries of the bank \(ncl.queue_size\)"):
        load_config("conf/default.yaml", ["eval.methods=[none,nnn]", "ncl.queue_size=24"])
    cfg = load_config("conf/default.yaml", ["eval.methods=[none,nnn]", "ncl.queue_size=24", "eval.nnn_k=16"])
    assert list(cfg.eval.methods) == ["none", "nnn"]
