"""QB-Norm's row rule against an independent copy of its reference code (dynamic_inverted_softmax.py)."""

import numpy as np
import pytest
import torch

from ncl_ray.ncl.normalize import Sims, make_scorer


def _reference_qbnorm(train_test: np.ndarray, test_test: np.ndarray, k: int, beta: float) -> np.ndarray:
    """QB-Norm's qb_norm(): activation set = unique top-k items of the bank rows; rows whose argmax lies in it
    become exp(beta s) / sum_bank exp(beta s_bank), the others stay as they are."""
    retrieved = np.unique(np.argsort(-train_test, axis=1)[:, :k].reshape(-1))
    top1 = np.argsort(-test_test, axis=1)[:, 0]
    idx = np.nonzero(np.isin(top1, retrieved))[0]
    out = test_test.copy()
    norm = np.exp(train_test * beta).sum(axis=0)
    out[idx, :] = np.exp(test_test[idx] * beta) / norm
    return out


def _normalised_rows(scorer, s: np.ndarray, tau: float) -> np.ndarray:
    t = torch.from_numpy(s).float()
    scores = scorer(slice(0, len(s)), t)
    return ~torch.isclose(scores, t / tau).all(dim=1).numpy()


def test_hand_computed_top1_rule():
    bank = np.array([[0.9, 0.1, 0.0, 0.2],
                     [0.2, 0.8, 0.1, 0.0]], np.float32)
    # k=1: activated {0, 1}. k=3: {0, 1, 3} (bank row 0's top 3: 0, 3, 1) and {1, 0, 2} -> {0, 1, 2, 3}
    test = np.array([[0.5, 0.1, 0.4, 0.0],   # top-1 item 0 (activated); its top-2 holds item 2
                     [0.0, 0.1, 0.6, 0.2],   # top-1 item 2: activated at k=3 only
                     [0.1, 0.7, 0.0, 0.65]], np.float32)  # top-1 item 1 (activated)
    tau = 0.05
    for k, expected in ((1, [True, False, True]), (3, [True, True, True])):
        scorer = make_scorer("qbnorm", Sims.dense(torch.from_numpy(test)), tau, Sims.dense(torch.from_numpy(bank)),
                             qbnorm_beta=20.0, qbnorm_k=k)
        assert _normalised_rows(scorer, test, tau).tolist() == expected, k
    # a normalised row is beta * s - logsumexp_bank(beta * s_bank), the log of QB-Norm's ratio
    scorer = make_scorer("qbnorm", Sims.dense(torch.from_numpy(test)), tau, Sims.dense(torch.from_numpy(bank)),
                         qbnorm_beta=20.0, qbnorm_k=1)
    row0 = scorer(slice(0, 1), torch.from_numpy(test[:1]))[0].double().numpy()
    ref = np.log(np.exp(20 * test[0].astype(np.float64)) / np.exp(20 * bank.astype(np.float64)).sum(axis=0))
    assert np.allclose(row0, ref, atol=1e-4)


@pytest.mark.parametrize("k", [1, 3])
def test_rows_and_rankings_match_reference(k):
    g = np.random.default_rng(k)
    bank = g.normal(size=(40, 25)).astype(np.float32) * 0.1
    bank[:, :5] += 0.15  # a few hubs take every bank query's top-k
    test = g.normal(size=(60, 25)).astype(np.float32) * 0.1
    beta, tau = 20.0, 0.05
    ref = _reference_qbnorm(bank.astype(np.float64), test.astype(np.float64), k, beta)
    scorer = make_scorer("qbnorm", Sims.dense(torch.from_numpy(test)), tau, Sims.dense(torch.from_numpy(bank)),
                         qbnorm_beta=beta, qbnorm_k=k)
    ours = scorer(slice(0, len(test)), torch.from_numpy(test)).double().numpy()
    ref_rows = ~np.isclose(ref, test).all(axis=1)
    assert _normalised_rows(scorer, test, tau).tolist() == ref_rows.tolist()
    assert 0 < ref_rows.sum() < len(test)  # the case exercises both branches
    assert (np.argsort(-ours, axis=1, kind="stable") == np.argsort(-ref, axis=1, kind="stable")).all()
