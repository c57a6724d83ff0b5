"""Cross-worker gathers. Every collective is guarded by `dist.is_initialized()`, so one CPU process runs
the same code with world size 1.
"""

from typing import Tuple

import torch
import torch.distributed as dist


def world_info() -> Tuple[int, int]:
    """(rank, world_size); (0, 1) when no process group exists."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slice.

    Sum, not mean: with the per-rank loss averaged by DDP, d(mean_r loss_r)/dx_k then equals the gradient of one
    process on the whole batch. all_reduce is used in backward because gloo lacks reduce_scatter.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, world = world_info()
        ctx.rank, ctx.B = rank, x.shape[0]
        out = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)  # (W*B, D)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # (W*B, D) summed over ranks
        return grad[ctx.rank * ctx.B: (ctx.rank + 1) * ctx.B]


def gather_features(x: torch.Tensor, with_grad: bool = True) -> torch.Tensor:
    """Concatenate (B, D) features of all ranks into (W*B, D), rank order.

    with_grad=True: gradients flow back to every rank's slice (exact large-batch equivalence).
    with_grad=False: other ranks' slices are constants; the local slice is put back so it keeps its gradient.
    """
    rank, world = world_info()
    if world == 1:
        return x
    if with_grad:
        return _AllGatherWithGrad.apply(x)
    out = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(out, x.detach().contiguous())
    out[rank] = x  # put the local slice back: it keeps its gradient
    return torch.cat(out, dim=0)  # (W*B, D)
