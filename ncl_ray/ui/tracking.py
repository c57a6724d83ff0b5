"""TensorBoard logging on rank 0 (a no-op elsewhere), fed by the metric dicts of train and eval steps.

Training and validation curves are scalars; the final test results, one number each, are a text table
(`test/results`) and one HParams row (the run's main settings beside its headline test metrics).
"""

import logging
from typing import Dict, Optional, Sequence

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

    def log_final(self, metrics: Dict[str, float], cfg, methods: Sequence[str], served: str, step: int) -> None:
        """`test/*` of `metrics` as a text table and an HParams row: settings -> the served method's metrics."""
        if self.writer is None:
            return
        from ncl_ray.ui.summary import format_results

        table = format_results(metrics, list(methods), prefix="test/")
        self.writer.add_text("test/results", "    " + table.replace("\n", "\n    "), step)  # a code block
        settings = {"model.arch": cfg.model.arch, "model.pooling": cfg.model.pooling, "ncl.n_iters": cfg.ncl.n_iters,
                    "ncl.queue_size": cfg.ncl.queue_size, "optim.name": cfg.optim.name,
                    "train.batch_size": cfg.train.batch_size, "train.epochs": cfg.train.epochs,
                    "train.seed": cfg.train.seed, "data.num_frames": cfg.data.num_frames, "served": served}
        headline = {f"hparams/{direction}_{k}": metrics[f"test/{served}/{direction}_{k}"]
                    for direction in ("t2v", "v2t") for k in ("R@1", "R@5", "MdR")
                    if f"test/{served}/{direction}_{k}" in metrics}
        self.writer.add_hparams(settings, headline, run_name=".", global_step=step)

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
