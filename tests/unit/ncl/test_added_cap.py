"""The cap on added rows' served biases (ncl/added_cap.py), by hand, and through `bank_biases`
with one added item no training caption reaches."""

import numpy as np
import torch
import torch.nn.functional as F

from ncl_ray.ncl import added_cap


def test_an_added_row_keeps_at_most_the_held_out_rows_median_bias():
    bias = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 0.5, -3.0])
    held = torch.tensor([True] * 9 + [False, False])  # nine held-out rows: median 5
    got = added_cap.cap_added(torch.cat([bias[:9], torch.tensor([9.0])]), torch.cat([held[:9], torch.tensor([False])]))
    assert torch.equal(got, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 5.0]))  # 9 capped at 5
    got = added_cap.cap_added(bias, held)
    assert torch.equal(got[9:], torch.tensor([0.5, -3.0]))  # below the cap (a penalty too): kept whole
    assert torch.equal(got[:9], bias[:9])  # held-out rows: untouched


def test_without_enough_held_out_rows_nothing_is_capped():
    bias = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0])
    held = torch.tensor([True, False, False, False, False])  # 1 < MIN_HELD_OUT: no reference for a typical lift
    assert torch.equal(added_cap.cap_added(bias, held), bias)
    assert torch.equal(added_cap.cap_added(torch.zeros(0), torch.zeros(0, dtype=torch.bool)), torch.zeros(0))


def test_an_added_item_no_training_caption_reaches_is_not_lifted_by_the_served_bias():
    from ncl_ray.config.schema import load_config
    from ncl_ray.serve.manage import Bank, bank_biases, held_out_rows

    g = torch.Generator().manual_seed(0)
    queries = torch.zeros(48, 16)
    queries[:, :8] = torch.randn(48, 8, generator=g)  # the training captions span the first 8 dimensions only
    queries = F.normalize(queries, dim=1)
    videos = F.normalize(queries + 0.3 * F.pad(torch.randn(48, 8, generator=g), (0, 8)), dim=1)
    ood = torch.zeros(1, 16)
    ood[0, 12] = 1.0  # orthogonal to every caption
    gallery = torch.cat([videos[:10], ood]).numpy()  # (11, 16): ten held-out videos, one added
    bank = Bank(queries, load_config(None, ["eval.n_iters=50", "eval.nnn_k=8"]).eval, videos)
    held = held_out_rows([""] * 10 + ["sha-of-the-added-file"])
    assert held.tolist() == [True] * 10 + [False]
    raw = bank_biases(bank, gallery, 0.05, ["ncl", "nnn"])
    served = bank_biases(bank, gallery, 0.05, ["ncl", "nnn"], held)
    assert raw["ncl"][10] > raw["ncl"][:10].max()  # Sinkhorn gives the item nothing retrieves the largest lift
    for m in ("ncl", "nnn"):
        assert np.array_equal(served[m][:10], raw[m][:10])  # held-out rows: eval's biases
        cap = float(torch.quantile(torch.from_numpy(raw[m][:10]), 0.5))
        assert np.isclose(served[m][10], min(raw[m][10], cap))
    assert served["ncl"][10] < raw["ncl"][10]
