"""TensorBoard logging on rank 0 (a no-op elsewhere), fed by the metric dicts of train and eval steps."""

import logging
from typing import Dict, Optional

log = logging.getLogger("ncl_ray")


class MetricLogger:
    """Scalars to TensorBoard; tags are the metric names (e.g. `train/contrastive_loss`, `val/ncl/t2v_R@1`)."""

    def __init__(self, log_dir: Optional[str], enabled: bool = True):
        self.writer = None
        if enabled and log_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=log_dir, flush_secs=10)

    def log_dict(self, metrics: Dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.writer.add_scalar(k, v, step)

    def histogram(self, tag: str, values, step: int) -> None:
        if self.writer is not None:
            self.writer.add_histogram(tag, values, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
