"""BertAdam as CLIP4Clip trains with it, and CLIP4Clip's parameter groups. Torch only.

    groups = clip4clip_groups(model, lr=1e-4, backbone_lr=1e-7, weight_decay=0.2)
    opt = BertAdam(groups, lr=1e-4, warmup=0.1, t_total=steps)   # the schedule lives in the optimizer

The update (per tensor p with gradient g, step s counted from 0 before the update):
    g is clipped to norm max_grad_norm (per tensor, on top of the caller's global clip)
    m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2          no bias correction
    u = m / (sqrt(v) + e) + weight_decay * p                 decoupled decay, added to the update
    p -= lr * schedule(s / t_total, warmup) * u
with schedule = warmup_cosine: x / warmup while x < warmup, else 0.5 (1 + cos(pi x)); the cosine runs over
the whole run (it does not restart after the warm-up), so the first step has lr 0. Moments have the
parameter's dtype: with fp16 backbone weights they are fp16, updated in place with no fp32 master copy,
which is how CLIP4Clip's published numbers were trained (small updates round away).

CLIP4Clip's groups: no decay for tensors whose name contains "bias" (its other no-decay names, LayerNorm.*,
name no tensor of CLIP, whose norms are ln_*); the backbone learning rate for CLIP's tensors and for the
temperature (CLIP4Clip learns CLIP's own logit_scale, at the backbone's rate and with decay).
"""

import math
from typing import Dict, List

import torch
from torch import nn


def warmup_cosine(x: float, warmup: float) -> float:
    """CLIP4Clip's schedule factor at progress x = step / t_total."""
    if x < warmup:
        return x / warmup
    return 0.5 * (1.0 + math.cos(math.pi * x))


class BertAdam(torch.optim.Optimizer):
    """Adam without bias correction, per-tensor gradient clipping and a built-in warmup_cosine schedule."""

    def __init__(self, params, lr: float, warmup: float = 0.1, t_total: int = -1, b1: float = 0.9,
                 b2: float = 0.98, e: float = 1e-6, weight_decay: float = 0.2, max_grad_norm: float = 1.0):
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup {warmup} must lie in [0, 1)")
        defaults = dict(lr=lr, warmup=warmup, t_total=t_total, b1=b1, b2=b2, e=e, weight_decay=weight_decay,
                        max_grad_norm=max_grad_norm)
        super().__init__(params, defaults)

    def scheduled_lr(self, group: Dict, step: int) -> float:
        if group["t_total"] <= 0:
            return group["lr"]
        return group["lr"] * warmup_cosine(step / group["t_total"], group["warmup"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["next_m"] = torch.zeros_like(p)
                    state["next_v"] = torch.zeros_like(p)
                if group["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                g, m, v = p.grad, state["next_m"], state["next_v"]
                m.mul_(group["b1"]).add_(g, alpha=1 - group["b1"])
                v.mul_(group["b2"]).addcmul_(g, g, value=1 - group["b2"])
                update = m / (v.sqrt() + group["e"])
                if group["weight_decay"] > 0.0:
                    update += group["weight_decay"] * p
                p.add_(-self.scheduled_lr(group, state["step"]) * update)
                state["step"] += 1
        return loss

    def current_lrs(self) -> List[float]:
        """The scheduled learning rate of each group for its next step (for logging)."""
        out = []
        for group in self.param_groups:
            steps = [self.state[p]["step"] for p in group["params"] if self.state[p]]
            out.append(self.scheduled_lr(group, steps[0] if steps else 0))
        return out


def clip4clip_groups(model: nn.Module, lr: float, backbone_lr: float, weight_decay: float) -> List[Dict]:
    """CLIP4Clip's four groups: (backbone | new) x (decay | no decay), trainable tensors only."""
    groups = {(b, d): [] for b in (True, False) for d in (True, False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        backbone = name.startswith("clip.") or name == "logit_scale"
        decay = "bias" not in name
        groups[(backbone, decay)].append(p)
    return [{"params": ps, "lr": backbone_lr if b else lr, "weight_decay": weight_decay if d else 0.0}
            for (b, d), ps in groups.items() if ps]
