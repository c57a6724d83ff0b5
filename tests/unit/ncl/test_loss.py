import torch
import torch.nn.functional as F

from ncl_ray.ncl.loss import NCLLoss
from ncl_ray.ncl.sinkhorn import sinkhorn_biases


def clip_loss(v, t, scale):
    logits = scale * t @ v.T
    labels = torch.arange(len(v))
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def feats(n=8, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = F.normalize(torch.randn(n, d, generator=g), dim=1)
    t = F.normalize(v + 0.5 * torch.randn(n, d, generator=g), dim=1)
    return v, t


def test_zero_iterations_equals_clip_loss_and_gradients():
    v, t = feats()
    scale = torch.tensor(20.0)
    v1, t1 = v.clone().requires_grad_(), t.clone().requires_grad_()
    loss_fn = NCLLoss(16, queue_size=32, n_iters=0)
    loss_fn.text_queue.enqueue(torch.randn(10, 16))  # a filled queue must not matter with 0 iterations
    out = loss_fn(v1, t1, scale)
    out["contrastive_loss"].backward()
    v2, t2 = v.clone().requires_grad_(), t.clone().requires_grad_()
    ref = clip_loss(v2, t2, scale)
    ref.backward()
    assert torch.allclose(out["contrastive_loss"], ref, atol=1e-6)
    assert torch.allclose(v1.grad, v2.grad, atol=1e-6) and torch.allclose(t1.grad, t2.grad, atol=1e-6)


def test_ncl_loss_equals_hand_computed_biased_ce():
    v, t = feats()
    scale = torch.tensor(10.0)
    qt, qv = F.normalize(torch.randn(5, 16), dim=1), F.normalize(torch.randn(5, 16), dim=1)
    loss_fn = NCLLoss(16, queue_size=5, n_iters=4)
    loss_fn.text_queue.enqueue(qt)
    loss_fn.video_queue.enqueue(qv)
    out = loss_fn(v, t, scale)
    _, b = sinkhorn_biases(scale * torch.cat([qt, t]) @ v.T, 4)
    _, a = sinkhorn_biases(scale * torch.cat([qv, v]) @ t.T, 4)
    labels = torch.arange(8)
    ref = 0.5 * (F.cross_entropy(scale * t @ v.T + b, labels) + F.cross_entropy(scale * v @ t.T + a, labels))
    assert torch.allclose(out["contrastive_loss"], ref, atol=1e-6)
    assert not torch.allclose(out["contrastive_loss"], clip_loss(v, t, scale))
    assert out["norm_error_after"] < out["norm_error_before"]


def test_loss_uses_old_queue_then_enqueues():
    v, t = feats(n=4)
    loss_fn = NCLLoss(16, queue_size=6, n_iters=2)
    loss_fn(v, t, torch.tensor(5.0))
    assert int(loss_fn.text_queue.filled) == 4
    assert torch.equal(loss_fn.text_queue.embeddings, t) and torch.equal(loss_fn.video_queue.embeddings, v)
    loss_fn.eval()
    loss_fn(v, t, torch.tensor(5.0))  # evaluation does not enqueue
    assert int(loss_fn.text_queue.filled) == 4


def test_detach_switch_changes_gradient_not_value():
    v, t = feats()
    grads, values = [], []
    for detach in (True, False):
        vv, tt = v.clone().requires_grad_(), t.clone().requires_grad_()
        out = NCLLoss(16, 0, 3, detach_biases=detach)(vv, tt, torch.tensor(10.0))
        out["contrastive_loss"].backward()
        grads.append(tt.grad)
        values.append(out["contrastive_loss"].detach())
    assert torch.allclose(values[0], values[1], atol=1e-6)
    assert not torch.allclose(grads[0], grads[1], atol=1e-6)


def test_plain_loss_term_is_clip_loss_and_diagnostics_are_there():
    import torch

    from ncl_ray.ncl.loss import NCLLoss

    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    t = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    scale = torch.tensor(10.0)
    out = NCLLoss(8, 0, 0, plain_loss_weight=1.0)(v, t, scale)
    assert torch.allclose(out["plain_loss"], out["contrastive_loss"])  # n_iters=0: NCL is the plain loss
    out = NCLLoss(8, 0, 3, plain_loss_weight=0.5)(v, t, scale)
    assert out["plain_loss"] > 0 and {"text_bias_std", "text_popularity_std", "text_mean_norm"} <= set(out)
    assert "plain_loss" not in NCLLoss(8, 0, 3)(v, t, scale)


def _flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_cost_zero_iterations_is_clip_and_sinkhorn_reuses_batch_logits():
    """Counted matrix-multiply FLOPs (forward + backward), not timings: with n_iters=0 a full queue costs nothing;
    with iterations the queue rows are multiplied once per direction and the batch rows not again."""
    B, D, Q = 8, 16, 64
    v, t = feats(n=B, d=D)
    scale = torch.tensor(10.0)

    def run(loss_fn=None):
        vv, tt = v.clone().requires_grad_(), t.clone().requires_grad_()
        loss = loss_fn(vv, tt, scale, diagnostics=False)["contrastive_loss"] if loss_fn else clip_loss(vv, tt, scale)
        loss.backward()

    def filled(n_iters):
        loss_fn = NCLLoss(D, queue_size=Q, n_iters=n_iters)
        loss_fn.text_queue.enqueue(F.normalize(torch.randn(Q, D), dim=1))
        loss_fn.video_queue.enqueue(F.normalize(torch.randn(Q, D), dim=1))
        return loss_fn.eval()

    clip = _flops(run)
    assert clip > 0
    assert _flops(lambda: run(filled(0))) == clip
    assert _flops(lambda: run(filled(3))) == clip + 2 * (2 * Q * B * D)  # (Q, D) x (D, B) per direction
    # the diagnostics are what costs the queue logits at n_iters=0: asked for, they are computed
    loss_fn = filled(0)
    out = loss_fn(v, t, scale, diagnostics=True)
    assert out["norm_error_before"] > 0 and "text_popularity_std" in out
    assert "norm_error_before" not in loss_fn(v, t, scale, diagnostics=False)
