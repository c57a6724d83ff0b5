"""Builders for the NCL loss, the optimizer (AdamW with two learning rates, or CLIP4Clip's BertAdam), the
warm-up + cosine schedule (BertAdam carries its own: its LambdaLR here is constant). The compiled model:
model/compile.py."""

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ncl_ray.model.bertadam import BertAdam, clip4clip_groups
from ncl_ray.model.clip import VideoCLIP
from ncl_ray.ncl.loss import NCLLoss


def build_loss(cfg, dim: int) -> NCLLoss:
    n = cfg.ncl
    return NCLLoss(dim, n.queue_size, n.n_iters, n.detach_biases, n.gather_with_grad, n.plain_loss_weight)


@dataclass(frozen=True)
class BertAdamSchedule:
    """BertAdam's own schedule: warm-up over `warmup_ratio` of `total_steps`, then linear decay; and its gradient
    clipping inside the update."""
    total_steps: int = -1
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0


def build_optimizer(model: VideoCLIP, lr: float, backbone_lr: float, weight_decay: float, name: str = "adamw",
                    schedule: BertAdamSchedule = BertAdamSchedule(),
                    fused: Optional[bool] = None) -> torch.optim.Optimizer:
    """adamw: AdamW with two learning rates (backbone, new layers); no decay on gains, biases and the
    temperature; fused (one kernel for every tensor) when the parameters are on a GPU, unless `fused` says.
    bertadam: CLIP4Clip's optimizer and groups (model/bertadam.py) over `schedule`."""
    if name == "bertadam":
        return BertAdam(clip4clip_groups(model, lr, backbone_lr, weight_decay), lr=lr, warmup=schedule.warmup_ratio,
                        t_total=schedule.total_steps, b1=0.9, b2=0.98, e=1e-6, weight_decay=weight_decay,
                        max_grad_norm=schedule.max_grad_norm)
    if name != "adamw":
        raise ValueError(f"optim.name={name!r}: expected adamw or bertadam")
    backbone, new = model.param_groups()
    groups = []
    for params, group_lr in ((backbone, backbone_lr), (new, lr)):
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups += [{"params": decay, "lr": group_lr, "weight_decay": weight_decay},
                   {"params": no_decay, "lr": group_lr, "weight_decay": 0.0}]
    if fused is None:
        fused = all(p.is_cuda for p in backbone + new)
    return torch.optim.AdamW([g for g in groups if g["params"]], betas=(0.9, 0.98), eps=1e-6, fused=fused)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    """Linear warm-up over warmup_ratio * total_steps, then cosine decay to 0 (constant for BertAdam, whose
    schedule is part of its update)."""
    if isinstance(optimizer, BertAdam):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    warmup = max(1, int(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
