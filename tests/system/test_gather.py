"""Two gloo processes with B rows each must match one process on the 2B rows: loss, gradients, queue."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from ncl_ray.ncl.loss import NCLLoss

B, D_IN, D, STEPS = 4, 12, 8, 3


def make_setup(queue_size, n_iters, with_grad):
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"v": torch.nn.Linear(D_IN, D), "t": torch.nn.Linear(D_IN, D)})
    loss_fn = NCLLoss(D, queue_size, n_iters, gather_with_grad=with_grad)
    data = [(torch.randn(2 * B, D_IN), torch.randn(2 * B, D_IN)) for _ in range(STEPS)]
    return model, loss_fn, data


def run_steps(model, loss_fn, data, rows):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    trace = []
    for xv, xt in data:
        v = F.normalize(model["v"](xv[rows]), dim=1)
        t = F.normalize(model["t"](xt[rows]), dim=1)
        loss = loss_fn(v, t, torch.tensor(10.0))["contrastive_loss"]
        opt.zero_grad()
        loss.backward()
        if dist.is_initialized():  # what DDP does: average gradients and the logged loss
            for p in model.parameters():
                dist.all_reduce(p.grad)
                p.grad /= dist.get_world_size()
            loss = loss.detach().clone()
            dist.all_reduce(loss)
            loss /= dist.get_world_size()
        trace.append((float(loss.detach()), [p.grad.clone() for p in model.parameters()]))
        opt.step()
    return trace, loss_fn.text_queue.embeddings.clone()


def _worker(rank, store, out, queue_size, n_iters, with_grad):
    # a file rendezvous: no TCP port that another process could take between choosing and binding it
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    model, loss_fn, data = make_setup(queue_size, n_iters, with_grad)
    result = run_steps(model, loss_fn, data, slice(rank * B, (rank + 1) * B))
    if rank == 0:
        torch.save(result, out)
    dist.barrier()  # both ranks are done talking
    # Leave without tearing gloo down: its destructors can abort a rank whose peer has already closed the
    # connection ("terminate called without an active exception"), which is a teardown race, not a result.
    os._exit(0)


@pytest.mark.slow
@pytest.mark.parametrize("queue_size,n_iters", [(0, 0), (0, 3), (16, 3)])
def test_two_process_gather_equals_one_process(tmp_path, queue_size, n_iters):
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(str(tmp_path / "store"), out, queue_size, n_iters, True), nprocs=2, join=True)
    dist_trace, dist_queue = torch.load(out)
    model, loss_fn, data = make_setup(queue_size, n_iters, True)
    ref_trace, ref_queue = run_steps(model, loss_fn, data, slice(0, 2 * B))
    for (l_d, g_d), (l_r, g_r) in zip(dist_trace, ref_trace):
        assert l_d == pytest.approx(l_r, abs=1e-5)
        for a, b in zip(g_d, g_r):
            assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(dist_queue, ref_queue, atol=1e-6)
