"""FIFO query queue (MoCo-style): past steps' embeddings standing in for the unknown test queries.

The queue is state, so it lives in buffers: `.to()`, `state_dict()` and checkpoints carry it. It is replicated:
callers gather across workers first, then enqueue the same global batch on every rank.
"""

import torch
from torch import nn


class FeatureQueue(nn.Module):
    """A ring buffer of `size` detached embeddings of dimension `dim`.

    Buffers: `queue` (Q, D), `ptr` () next write position, `filled` () number of valid rows. The two counters
    are also kept on the host (`_ptr`, `_filled`): reading a GPU buffer with `int()` would make every training
    step wait for the GPU. The buffers are written (asynchronously) so that checkpoints carry them; loading a
    state dict reads them back once.
    """

    host_counters = True  # False: read the buffers at every step instead (bench/gpu.py's baseline)

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 0 or dim <= 0:
            raise ValueError(f"queue size must be >= 0 and dim > 0, got size={size}, dim={dim}")
        self.size = size
        self.register_buffer("queue", torch.zeros(size, dim))  # (Q, D)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self._ptr = self._filled = 0

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._ptr, self._filled = int(self.ptr), int(self.filled)  # one read per load, not per step

    @property
    def embeddings(self) -> torch.Tensor:
        """The valid rows (filled, D); order is irrelevant to Sinkhorn."""
        return self.queue[: self._filled if self.host_counters else int(self.filled)]

    @torch.no_grad()
    def enqueue(self, x: torch.Tensor) -> None:
        """Append (n, D) embeddings, overwriting the oldest rows when full. Keeps the last Q if n > Q."""
        if self.size == 0:
            return
        x = x.detach().to(self.queue.dtype)[-self.size:]  # (n, D), n <= Q
        if not self.host_counters:
            self._ptr, self._filled = int(self.ptr), int(self.filled)
        n, ptr = x.shape[0], self._ptr
        first = min(n, self.size - ptr)
        self.queue[ptr: ptr + first] = x[:first]
        self.queue[: n - first] = x[first:]  # wrap-around
        self._ptr, self._filled = (ptr + n) % self.size, min(self.size, self._filled + n)
        self.ptr.fill_(self._ptr)
        self.filled.fill_(self._filled)
