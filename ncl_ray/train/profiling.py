"""Where a training step's time goes: forward, loss, backward, optimizer, input wait, all-reduce (rehearsal report)."""

import time
from typing import Dict, Optional

import torch


class Clock:
    """Adds wall time between laps to `timings[name]` (synchronising the GPU first); a no-op without timings."""

    def __init__(self, device: torch.device, timings: Optional[Dict[str, float]]):
        self.device, self.timings = device, timings
        self.t = time.perf_counter() if timings is not None else 0.0

    def lap(self, name: str) -> None:
        if self.timings is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.t
        self.t = now


def allreduce_seconds(model: torch.nn.Module, device: torch.device) -> float:
    """Time of one all-reduce of a gradient-sized buffer (what DDP moves per step), 0 without a process group."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() < 2:
        return 0.0
    buf = torch.zeros(sum(p.numel() for p in model.parameters() if p.requires_grad), device=device)
    dist.all_reduce(buf)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(3):
        dist.all_reduce(buf)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t) / 3
