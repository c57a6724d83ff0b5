import math

import numpy as np
import ot
import pytest
import torch

from ncl_ray.ncl.sinkhorn import column_mass, normalization_error, sinkhorn_biases


def numpy_sinkhorn(L: np.ndarray, n_iters: int):
    """Plain-numpy multiplicative Sinkhorn on K = exp(L) (float64), the independent reference."""
    R, C = L.shape
    K = np.exp(L)
    v = np.ones(C)
    for _ in range(n_iters):
        u = 1.0 / (K @ v)
        v = (R / C) / (K.T @ u)
    return np.log(v)


@pytest.mark.parametrize("R,C", [(40, 10), (10, 10), (7, 30)])
def test_marginals_are_uniform(R, C):
    torch.manual_seed(0)
    L = torch.randn(R, C) * 3
    u, b = sinkhorn_biases(L, 200)
    P = torch.exp(L + u[:, None] + b[None, :])
    assert torch.allclose(P.sum(1), torch.ones(R), atol=1e-5)
    assert torch.allclose(P.sum(0), torch.full((C,), R / C), rtol=1e-4)
    assert torch.allclose(column_mass(L, b), torch.full((C,), R / C), rtol=1e-4)
    assert abs(float(b.mean())) < 1e-5


def test_matches_numpy_reference_at_every_iteration_count():
    rng = np.random.default_rng(1)
    L = rng.normal(size=(25, 12)) * 2
    for n in (1, 2, 5):
        _, b = sinkhorn_biases(torch.tensor(L), n)
        ref = numpy_sinkhorn(L, n)
        ref -= ref.mean()
        np.testing.assert_allclose(b.numpy(), ref, atol=1e-4)


def test_matches_pot_plan():
    rng = np.random.default_rng(2)
    R, C = 30, 8
    L = rng.normal(size=(R, C)) * 2
    plan = ot.sinkhorn(np.ones(R), np.full(C, R / C), -L, reg=1.0, numItermax=5000, stopThr=1e-12)
    u, b = sinkhorn_biases(torch.tensor(L), 500)
    ours = np.exp(L + u.numpy()[:, None] + b.numpy()[None, :])
    np.testing.assert_allclose(ours, plan, atol=1e-5)


def test_zero_iterations_gives_zero_biases():
    u, b = sinkhorn_biases(torch.randn(5, 4), 0)
    assert torch.equal(u, torch.zeros(5)) and torch.equal(b, torch.zeros(4))


def test_large_logit_scale_does_not_overflow():
    sims = torch.nn.functional.normalize(torch.randn(64, 16), dim=1) @ torch.nn.functional.normalize(
        torch.randn(32, 16), dim=1).T
    L = (100.0 * sims).half()  # CLIP's maximal scale, in half precision
    u, b = sinkhorn_biases(L, 300)
    assert torch.isfinite(u).all() and torch.isfinite(b).all() and b.dtype == torch.float32
    assert normalization_error(L, b) < 1e-2 < normalization_error(L, torch.zeros(32))


def test_gradient_flows_only_when_asked():
    L = torch.randn(6, 3, requires_grad=True)
    assert not sinkhorn_biases(L, 3)[1].requires_grad
    _, b = sinkhorn_biases(L, 3, with_grad=True)
    (b * torch.arange(3.0)).sum().backward()
    assert L.grad is not None and L.grad.abs().sum() > 0


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        sinkhorn_biases(torch.randn(3), 1)
    with pytest.raises(ValueError, match="n_iters"):
        sinkhorn_biases(torch.randn(3, 3), -1)


def test_normalization_error_definition():
    L = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])  # each row: p = (1/4, 3/4)
    # P = (0.5, 1.5), target 1 -> mean(|0.5-1|, |1.5-1|) / 1 = 0.5
    assert normalization_error(L, torch.zeros(2)) == pytest.approx(0.5)
