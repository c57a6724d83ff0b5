"""dbnorm, dbsn and dn against transcriptions of their authors' rules (written here from the rules their code
applies, in numpy), on random similarities and on a gallery with a hub."""

import numpy as np
import ot
import pytest
import torch

from ncl_ray.ncl.normalize import GalleryBank, MethodSettings, Sims, make_scorer

TAU = 0.05


def _inputs(seed: int, hub: bool):
    """test (6 x 9), query bank (15 x 9), gallery bank (5 x 9) and bank x gallery bank (15 x 5) similarities;
    with `hub`, item 0 is close to every query."""
    g = np.random.default_rng(seed)
    test, bank, items, cross = (g.uniform(-0.2, 0.6, shape) for shape in ((6, 9), (15, 9), (5, 9), (15, 5)))
    if hub:
        test[:, 0] += 0.3
        bank[:, 0] += 0.3
        items[:, 0] += 0.3
    return test, bank, items, cross


def _score(method, test, bank, items, cross, **settings):
    t = lambda a: Sims.dense(torch.from_numpy(a.astype(np.float32)))  # noqa: E731
    scorer = make_scorer(method, t(test), TAU, t(bank), MethodSettings(**settings), GalleryBank(t(items), t(cross)))
    return scorer(slice(0, len(test)), torch.from_numpy(test.astype(np.float32))).double().numpy()


# --- DBNorm (its dbnorm.py: QB-Norm's IS and qb_norm with exp(beta * s); the two factors multiplied) ---------

def _is(train_test, test_test, beta):
    return np.exp(test_test * beta) / np.exp(train_test * beta).sum(axis=0)


def _qb_norm(train_test, test_test, k, beta):
    retrieved = np.unique(np.argsort(-train_test, axis=1)[:, :k].reshape(-1))
    out = test_test.copy()  # its code writes into its input; each factor here reads the test similarities
    rows = np.nonzero(np.isin(np.argsort(-test_test, axis=1)[:, 0], retrieved))
    out[rows, :] = np.exp(test_test[rows, :] * beta) / np.exp(train_test * beta).sum(axis=0)
    return out


def _db_norm(train_cap_test_vis, train_vis_test_vis, test_cap_test_vis, k, beta1, beta2, dynamic):
    if dynamic:
        return (_qb_norm(train_cap_test_vis, test_cap_test_vis, k, beta1)
                * _qb_norm(train_vis_test_vis, test_cap_test_vis, k, beta2))
    return _is(train_cap_test_vis, test_cap_test_vis, beta1) * _is(train_vis_test_vis, test_cap_test_vis, beta2)


@pytest.mark.parametrize("hub", [False, True])
@pytest.mark.parametrize("betas", [(20.0, 20.0), (1 / 1.99, 3.0)])
def test_dbnorm_static_is_the_log_of_both_inverted_softmaxes_product(hub, betas):
    test, bank, items, cross = _inputs(1, hub)
    want = _db_norm(bank, items, test, 1, *betas, dynamic=False)
    got = _score("dbnorm", test, bank, items, cross, dbnorm_beta_query=betas[0], dbnorm_beta_gallery=betas[1])
    assert np.allclose(got, np.log(want), atol=1e-3)


@pytest.mark.parametrize("hub", [False, True])
@pytest.mark.parametrize("k", [1, 2])
def test_dbnorm_dynamic_gates_each_factor_as_qbnorm_does(hub, k):
    test, bank, items, cross = _inputs(2, hub)
    bank[:, 3:] -= 0.5  # the bank's top items are among the first three: some test queries stay ungated
    want = _db_norm(bank, items, test, k, 20.0, 20.0, dynamic=True)
    got = _score("dbnorm", test, bank, items, cross, dbnorm_variant="dynamic", dbnorm_k=k)
    assert np.allclose(got, want, rtol=1e-4, atol=1e-9)
    assert (np.argsort(-got, axis=1) == np.argsort(-want, axis=1)).all()


# --- DBSN (its dbsn.py: POT's Sinkhorn on 1 - [test gallery; gallery bank] x bank queries) -------------------

@pytest.mark.parametrize("hub", [False, True])
@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")
@pytest.mark.parametrize("reg,iters", [(0.01, 10), (0.05, 5)])
def test_dbsn_adds_reg_log_u_of_pots_sinkhorn(hub, reg, iters):
    test, bank, items, cross = _inputs(3, hub)
    stacked = np.concatenate([bank.T, cross.T], axis=0).astype(np.float64)  # (9 + 5, 15): items x bank queries
    a, b = np.ones(len(stacked)) / len(stacked), np.ones(stacked.shape[1]) / stacked.shape[1]
    _, logs = ot.sinkhorn(a, b, 1 - stacked, reg=reg, log=True, numItermax=iters)
    hubness = -reg * np.log(logs["u"])[: test.shape[1]]  # the test gallery's rows
    got = _score("dbsn", test, bank, items, cross, dbsn_reg=reg, dbsn_iters=iters)
    assert np.allclose(got * TAU, test - hubness[None, :], atol=1e-4)


def test_dbsn_needs_the_gallery_bank():
    test, bank, _, _ = _inputs(4, False)
    t = Sims.dense(torch.from_numpy(test.astype(np.float32)))
    with pytest.raises(ValueError, match="gallery items"):
        make_scorer("dbsn", t, TAU, Sims.dense(torch.from_numpy(bank.astype(np.float32))))


# --- DN (its compute_retrieval.py: (t - lambda mean(dev t)) . (v - lambda mean(dev v)), LAMBDA = 0.25) ------

@pytest.mark.parametrize("lam", [0.25, 0.6])
def test_dn_ranks_as_dns_shifted_embeddings(lam):
    g = np.random.default_rng(5)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    t, v = unit(g.normal(size=(6, 16)) + 1.0), unit(g.normal(size=(9, 16)) + 1.0)  # a shared offset: DN's case
    dev_t, dev_v = unit(g.normal(size=(20, 16)) + 1.0), unit(g.normal(size=(11, 16)) + 1.0)
    dn = (t - lam * dev_t.mean(axis=0)) @ (v - lam * dev_v.mean(axis=0)).T  # (6, 9)
    got = _score("dn", t @ v.T, dev_t @ v.T, dev_v @ v.T, dev_t @ dev_v.T, dn_lambda=lam) * TAU
    shift = got - dn  # DN's per-query terms: one constant per row
    assert np.allclose(shift, shift[:, :1], atol=1e-5)
    assert (np.argsort(-got, axis=1) == np.argsort(-dn, axis=1)).all()
