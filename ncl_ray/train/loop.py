"""One NCL training step (`train_step`) and the worker's helpers around it: in-training evaluation, fault
injection. worker.py runs them on every Ray Train worker (`fit.py` is the driver side, `job.py` the job).
"""

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from ncl_ray.runtime.checkpoint import load_model
from ncl_ray.data.transforms import frame_mask, normalize_frames, sample_captions
from ncl_ray.evaluation.evaluate import Banks, embed_batches, eval_settings, evaluate_embeddings
from ncl_ray.model.clip import VideoCLIP
from ncl_ray.ncl.loss import NCLLoss
from ncl_ray.train.builders import build_loss, build_optimizer, build_scheduler  # noqa: F401  (re-exported)
from ncl_ray.train.profiling import Clock

log = logging.getLogger("ncl_ray.train.loop")
FAULT_ENV = "NCL_RAY_FAIL_AT_STEP"  # fault injection, same as train.fail_at_step


def unwrap(model: torch.nn.Module) -> VideoCLIP:
    return model.module if hasattr(model, "module") else model


@dataclass(frozen=True)
class StepOptions:
    """How train_step runs: autocast dtype (None: fp32), gradient clipping (0: off), the loss's diagnostics, scalars
    as floats or 0-d device tensors, frames normalised in the autocast dtype, and an optional dict that receives
    the seconds per phase."""
    amp_dtype: Optional[torch.dtype] = None
    grad_clip: float = 0.0
    diagnostics: bool = True
    as_floats: bool = True
    amp_frames: bool = True
    timings: Optional[Dict[str, float]] = None


def train_step(model: torch.nn.Module, loss_fn: NCLLoss, batch: Dict[str, torch.Tensor],
               optimizer: torch.optim.Optimizer, scheduler, generator: torch.Generator,
               device: torch.device, options: StepOptions = StepOptions()) -> Dict[str, Any]:
    """One optimisation step on a batch of split rows; returns `train/...` scalars (the loss's diagnostics only
    with `options.diagnostics`: they cost about as much as the queue logits). With `options.timings`, adds the
    seconds spent in forward, loss (gather + Sinkhorn + CE), backward (with DDP's overlapped all-reduce) and
    optimizer to it (each lap waits for the GPU). Without `as_floats` the scalars stay 0-d device tensors: the step
    then never waits for the GPU, and the caller reads them only on the steps it logs. Frames are normalised in
    the autocast dtype (`amp_frames`), where the first layer would cast them anyway."""
    o = options
    amp_dtype = o.amp_dtype
    clock = Clock(device, o.timings)
    frames = batch["frames"].to(device, non_blocking=True)
    frames = normalize_frames(frames, amp_dtype if o.amp_frames else None)  # (B, T, 3, H, W)
    n_captions = batch.get("host_n_captions", batch["n_captions"])  # (B,) on the host
    tokens = sample_captions(batch["tokens"], n_captions, generator).to(device, non_blocking=True)  # (B, L)
    mask = frame_mask(batch, device)  # (B, T) or None
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = model(frames, tokens, mask)
    clock.lap("forward")
    terms = loss_fn(**out, diagnostics=o.diagnostics)
    total = sum(v for k, v in terms.items() if k.endswith("_loss"))
    clock.lap("loss")
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    clock.lap("backward")
    if o.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
    optimizer.step()
    scheduler.step()
    unwrap(model).clamp_temperature()
    clock.lap("optimizer")
    metrics: Dict[str, Any] = {f"train/{k}": v.detach() for k, v in terms.items()}
    metrics["train/temperature"] = 1.0 / out["logit_scale"].detach()
    if o.as_floats:
        metrics = {k: float(v) for k, v in metrics.items()}
    lrs = optimizer.current_lrs() if hasattr(optimizer, "current_lrs") else [optimizer.param_groups[-1]["lr"]]
    metrics["train/lr"] = float(max(lrs))
    return metrics


def maybe_fail(fail_at: int, step: int, rank: int, run_dir: Path) -> None:
    """Fault injection: rank 0 dies (once per run) when it reaches `fail_at`."""
    marker = run_dir / "fault_injected"
    if fail_at >= 0 and step == fail_at and rank == 0 and not marker.exists():
        marker.write_text(f"worker killed at step {step}\n")
        log.error("fault injection: killing worker rank 0 at step %d", step)
        os._exit(1)


def evaluate_split(model, loss_fn: NCLLoss, dataset, cfg, device, methods, prefix: str) -> Dict[str, float]:
    t = time.perf_counter()
    emb = embed_batches(unwrap(model), dataset.iter_torch_batches(batch_size=64), device)
    embed_s, t = time.perf_counter() - t, time.perf_counter()
    e = cfg.eval
    tau = 1.0 / float(unwrap(model).logit_scale.detach().exp().clamp(max=100))
    settings, compute = eval_settings(e)
    banks = Banks(loss_fn.text_queue.embeddings.cpu(), loss_fn.video_queue.embeddings.cpu(), e.bank, e.gallery_bank)
    m = evaluate_embeddings(emb, tau, methods, banks, settings, compute=compute)
    m.update({"time/embed_s": embed_s, "time/score_s": time.perf_counter() - t, "time/videos": len(emb.video)})
    return {f"{prefix}/{k}": v for k, v in m.items()}


def load_for_eval(cfg, checkpoint: Path, device):
    """A second model and loss (queues) from a checkpoint folder, for testing the best epoch at the end."""
    model, _, state = load_model(str(checkpoint))
    loss_fn = build_loss(cfg, model.embed_dim)
    loss_fn.load_state_dict(state["loss"])
    return model.to(device), loss_fn.to(device)


def quiet_report_logs() -> None:
    """Ray Train logs every report with its whole metrics dict at INFO (one long line per worker and epoch);
    the rank-0 progress line says the same in one line, so that logger (named by its file) keeps warnings only."""
    suffix = os.path.join("train", "v2", "_internal", "execution", "context.py")
    for name in list(logging.root.manager.loggerDict):
        if name.endswith(suffix):
            logging.getLogger(name).setLevel(logging.WARNING)
