"""Inverted softmax and CSLS as per-item biases, against hand-written statements of their authors' rules; the
per-item property that lets a served index add one video without touching the others' biases."""

import numpy as np
import pytest
import torch

from ncl_ray.ncl.methods import ITEM_BIAS_METHODS, PER_ITEM_METHODS
from ncl_ray.ncl.normalize import GalleryBank, MethodSettings, Sims, item_bias, make_scorer

G = np.random.default_rng(0)
TEST = G.uniform(-0.2, 0.6, (5, 7)).astype(np.float32)  # 5 test queries x 7 videos
BANK = G.uniform(-0.2, 0.6, (12, 7)).astype(np.float32)  # 12 bank queries x the same videos
ITEMS = G.uniform(-0.2, 0.6, (4, 7)).astype(np.float32)  # 4 gallery-bank videos x the test videos
CROSS = G.uniform(-0.2, 0.6, (12, 4)).astype(np.float32)  # the bank queries x the gallery-bank videos


def _gallery_bank(cols=slice(None)):
    return GalleryBank(Sims.dense(torch.from_numpy(ITEMS[:, cols])), Sims.dense(torch.from_numpy(CROSS)))


def _scores(method, tau=0.05, **kw):
    scorer = make_scorer(method, Sims.dense(torch.from_numpy(TEST)), tau, Sims.dense(torch.from_numpy(BANK)),
                         gallery_bank=_gallery_bank(), **kw)
    return scorer(slice(0, 5), torch.from_numpy(TEST)).numpy(), scorer


def _bias(method, cols, st):
    """The fold bias of `method` over the gallery's columns `cols`."""
    test = Sims.dense(torch.from_numpy(TEST[:, cols]))
    return make_scorer(method, test, 0.05, Sims.dense(torch.from_numpy(BANK[:, cols])), st,
                       gallery_bank=_gallery_bank(cols)).fold_bias


def test_inverted_softmax_is_qbnorms_ratio_for_every_query():
    """QB-Norm's code: exp(beta * s) / sum over the bank of exp(beta * s_bank), column by column; applied to
    every query (its dynamic gate, which `qbnorm` keeps, opens for all of them)."""
    beta = 20.0
    ratio = np.exp(beta * TEST.astype(np.float64)) / np.exp(beta * BANK.astype(np.float64)).sum(axis=0)
    got, _ = _scores("is", is_beta=beta)
    assert np.allclose(got, np.log(ratio), atol=1e-4)
    assert (got.argsort(axis=1) == ratio.argsort(axis=1)).all()


def test_csls_is_twice_the_cosine_less_both_neighbourhoods():
    """CSLS(q, j) = 2 cos(q, j) - r_T(q) - r_S(j); r_T(q): mean of q's k best gallery items, r_S(j): mean of
    j's k best bank queries (k = 3 here), scored / (2 tau)."""
    k, tau = 3, 0.05
    r_t = np.sort(TEST, axis=1)[:, -k:].mean(axis=1)  # (5,)
    r_s = np.sort(BANK, axis=0)[-k:, :].mean(axis=0)  # (7,)
    csls = 2 * TEST - r_t[:, None] - r_s[None, :]
    got, _ = _scores("csls", tau=tau, csls_k=k)
    assert np.allclose(got, csls / (2 * tau), atol=1e-4)
    assert (got.argsort(axis=1) == csls.argsort(axis=1)).all()


@pytest.mark.parametrize("method", ITEM_BIAS_METHODS)
def test_each_per_item_method_ranks_like_the_plain_scores_plus_its_fold_bias(method):
    """What the server folds into its index: s / tau + fold_bias_j ranks every query's items as the scorer."""
    got, scorer = _scores(method, nnn_k=4, csls_k=3)
    folded = TEST / 0.05 + scorer.fold_bias.numpy()[None, :]
    assert (np.argsort(-got, axis=1, kind="stable") == np.argsort(-folded, axis=1, kind="stable")).all()


@pytest.mark.parametrize("method", PER_ITEM_METHODS)
def test_a_new_items_bias_needs_only_its_own_column(method):
    st = MethodSettings(nnn_k=4, csls_k=3)
    full, alone = _bias(method, slice(None), st), _bias(method, slice(6, None), st)
    assert torch.allclose(full[6:], alone, atol=1e-6)


def test_ncl_biases_depend_on_the_whole_gallery():
    full = item_bias("ncl", Sims.dense(torch.from_numpy(BANK)), 0.05, MethodSettings(n_iters=10))
    fewer = item_bias("ncl", Sims.dense(torch.from_numpy(BANK[:, :6])), 0.05, MethodSettings(n_iters=10))
    assert not torch.allclose(full[:6] - full[:6].mean(), fewer - fewer.mean(), atol=1e-3)


def test_csls_k_beyond_the_bank_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match=r"csls: k=13 needs 1 <= k <= the bank's 12 queries \(eval.csls_k"):
        _scores("csls", csls_k=13)
