"""The leak check: every method not labelled transductive passes on real-shaped embeddings; a scorer that reads
the other test queries, or one whose item bias secretly depends on the gallery, fails it."""

import pytest
import torch
import torch.nn.functional as F

from ncl_ray.evaluation.evaluate import Banks, Compute, Embeddings, directions
from ncl_ray.evaluation.leaks import LeakError, check_leaks
from ncl_ray.ncl.methods import METHODS
from ncl_ray.ncl.normalize import MethodSettings, column_logsumexp, make_scorer


def _setup(methods=METHODS, V=12, per=2, D=8):
    g = torch.Generator().manual_seed(0)
    video = F.normalize(torch.randn(V, D, generator=g), dim=1)
    owner = torch.arange(V).repeat_interleave(per)
    text = F.normalize(video[owner] + 0.5 * torch.randn(V * per, D, generator=g), dim=1)
    banks = Banks(F.normalize(torch.randn(20, D, generator=g), dim=1), F.normalize(torch.randn(16, D, generator=g),
                                                                                  dim=1))
    return directions(Embeddings(video, text, owner), methods, banks, Compute(chunk_size=5))


def test_every_method_not_labelled_transductive_passes():
    result = check_leaks(_setup(), METHODS, 0.05, MethodSettings(nnn_k=4, csls_k=3))
    assert "dsl" in result["transductive"] and "dsl" not in result["checked"]
    assert set(result["checked"]) == set(METHODS) - {"dsl"}


def test_a_scorer_that_reads_the_other_test_queries_fails():
    """ncl's name, dual softmax's rule: the statistics come from the test queries being scored."""
    def leaky(method, test, tau, bank=None, settings=None, gallery_bank=None):
        if method != "ncl":
            return make_scorer(method, test, tau, bank, settings, gallery_bank)
        lse = column_logsumexp(test, 1.0 / tau)
        return lambda rows, s: s / tau - lse[None, :]

    with pytest.raises(LeakError, match="ncl .*scored alone differs"):
        check_leaks(_setup(["none", "ncl"]), ["none", "ncl"], 0.05, MethodSettings(), factory=leaky)


def test_a_column_only_bias_that_depends_on_the_gallery_fails():
    def leaky(method, test, tau, bank=None, settings=None, gallery_bank=None):
        scorer = make_scorer(method, test, tau, bank, settings, gallery_bank)
        if method != "nnn":
            return scorer
        shift = torch.arange(test.n_cols) / test.n_cols  # each item's share depends on the gallery's size

        def nnn(rows, s):
            return scorer(rows, s) + shift

        nnn.fold_bias = scorer.fold_bias
        return nnn

    with pytest.raises(LeakError, match="nnn .*removing another item"):
        check_leaks(_setup(["nnn"]), ["nnn"], 0.05, MethodSettings(nnn_k=4), factory=leaky)


def test_the_check_runs_on_a_bounded_subset_of_the_test_embeddings():
    from ncl_ray.evaluation.leaks import subset

    owner = torch.arange(30).repeat_interleave(2)
    emb = Embeddings(torch.randn(30, 4), torch.randn(60, 4), owner)
    part = subset(emb, 10)
    assert len(part.video) == 10 and len(part.text) == 20 and int(part.caption_to_video.max()) == 9
    assert torch.equal(part.text, emb.text[:20]) and subset(emb, 100) is emb
