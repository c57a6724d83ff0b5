"""NCL training on Ray Train (Train V2): what every worker runs (`fit.py` is the driver side, `job.py` the job).

Workers: build the model and the NCL loss (which owns the replicated query queues), restore the latest
checkpoint if Ray restarted them (or `train.resume_from`), and loop over their data shard with `train_step`.
Every rank calls `ray.train.report` each epoch; rank 0 evaluates, writes TensorBoard and the checkpoint. Epochs are
counted from 1 in what a user reads (the console, results.json, restores.jsonl), from 0 inside checkpoints.
"""

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ncl_ray.runtime.checkpoint import load_checkpoint, load_model, load_model_weights, save_checkpoint
from ncl_ray.config.schema import from_dict, select_metric, served_method
from ncl_ray.data.transforms import frame_mask, normalize_frames, sample_captions
from ncl_ray.train.epochs import EpochFeeder
from ncl_ray.evaluation.evaluate import embed_batches, evaluate_embeddings
from ncl_ray.model.clip import VideoCLIP, build_model_from_config
from ncl_ray.ncl.loss import NCLLoss
from ncl_ray.model.compile import compile_mode, compile_model
from ncl_ray.train.builders import build_loss, build_optimizer, build_scheduler  # noqa: F401  (re-exported)
from ncl_ray.train.profiling import Clock, allreduce_seconds
from ncl_ray.runtime.runs import BEST, best_info, publish, pull_best, restore_source, save_best
from ncl_ray.train.threads import set_worker_threads
from ncl_ray.train.transfer import Ahead, worker_decoder
from ncl_ray.ui.tracking import MetricLogger

log = logging.getLogger("ncl_ray.train.loop")
FAULT_ENV = "NCL_RAY_FAIL_AT_STEP"  # fault injection, same as train.fail_at_step


def unwrap(model: torch.nn.Module) -> VideoCLIP:
    return model.module if hasattr(model, "module") else model


def train_step(model: torch.nn.Module, loss_fn: NCLLoss, batch: Dict[str, torch.Tensor],
               optimizer: torch.optim.Optimizer, scheduler, generator: torch.Generator,
               device: torch.device, amp_dtype: Optional[torch.dtype] = None, grad_clip: float = 0.0,
               timings: Optional[Dict[str, float]] = None, diagnostics: bool = True,
               as_floats: bool = True, amp_frames: bool = True) -> Dict[str, Any]:
    """One optimisation step on a batch of split rows; returns `train/...` scalars (the loss's diagnostics only
    with `diagnostics`: they cost about as much as the queue logits). With `timings`, adds the seconds spent in
    forward, loss (gather + Sinkhorn + CE), backward (with DDP's overlapped all-reduce) and optimizer to it
    (each lap waits for the GPU). Without `as_floats` the scalars stay 0-d device tensors: the step then never
    waits for the GPU, and the caller reads them only on the steps it logs. Frames are normalised in the
    autocast dtype (`amp_frames`), where the first layer would cast them anyway."""
    clock = Clock(device, timings)
    frames = batch["frames"].to(device, non_blocking=True)
    frames = normalize_frames(frames, amp_dtype if amp_frames else None)  # (B, T, 3, H, W)
    n_captions = batch.get("host_n_captions", batch["n_captions"])  # (B,) on the host
    tokens = sample_captions(batch["tokens"], n_captions, generator).to(device, non_blocking=True)  # (B, L)
    mask = frame_mask(batch, device)  # (B, T) or None
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = model(frames, tokens, mask)
    clock.lap("forward")
    terms = loss_fn(**out, diagnostics=diagnostics)
    total = sum(v for k, v in terms.items() if k.endswith("_loss"))
    clock.lap("loss")
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    clock.lap("backward")
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    unwrap(model).clamp_temperature()
    clock.lap("optimizer")
    metrics: Dict[str, Any] = {f"train/{k}": v.detach() for k, v in terms.items()}
    metrics["train/temperature"] = 1.0 / out["logit_scale"].detach()
    if as_floats:
        metrics = {k: float(v) for k, v in metrics.items()}
    lrs = optimizer.current_lrs() if hasattr(optimizer, "current_lrs") else [optimizer.param_groups[-1]["lr"]]
    metrics["train/lr"] = float(max(lrs))
    return metrics


def _maybe_fail(fail_at: int, step: int, rank: int, run_dir: Path) -> None:
    """Fault injection: rank 0 dies (once per run) when it reaches `fail_at`."""
    marker = run_dir / "fault_injected"
    if fail_at >= 0 and step == fail_at and rank == 0 and not marker.exists():
        marker.write_text(f"worker killed at step {step}\n")
        log.error("fault injection: killing worker rank 0 at step %d", step)
        os._exit(1)


def _evaluate(model, loss_fn: NCLLoss, dataset, cfg, device, methods, prefix: str) -> Dict[str, float]:
    t = time.perf_counter()
    emb = embed_batches(unwrap(model), dataset.iter_torch_batches(batch_size=64), device)
    embed_s, t = time.perf_counter() - t, time.perf_counter()
    e = cfg.eval
    tau = 1.0 / float(unwrap(model).logit_scale.detach().exp().clamp(max=100))
    m = evaluate_embeddings(emb, tau, methods, loss_fn.text_queue.embeddings.cpu(),
                            loss_fn.video_queue.embeddings.cpu(), e.bank, e.n_iters, e.chunk_size,
                            e.qbnorm_beta, e.qbnorm_k, e.nnn_k, e.nnn_alpha, e.is_beta, e.csls_k, memory_mb=e.memory_mb,
                            workers=e.workers)
    m.update({"time/embed_s": embed_s, "time/score_s": time.perf_counter() - t, "time/videos": len(emb.video)})
    return {f"{prefix}/{k}": v for k, v in m.items()}


def _load_for_eval(cfg, checkpoint: Path, device):
    """A second model and loss (queues) from a checkpoint folder, for testing the best epoch at the end."""
    model, _, state = load_model(str(checkpoint))
    loss_fn = build_loss(cfg, model.embed_dim)
    loss_fn.load_state_dict(state["loss"])
    return model.to(device), loss_fn.to(device)


def _quiet_report_logs() -> None:
    """Ray Train logs every report with its whole metrics dict at INFO (one long line per worker and epoch);
    the rank-0 progress line says the same in one line, so that logger (named by its file) keeps warnings only."""
    suffix = os.path.join("train", "v2", "_internal", "execution", "context.py")
    for name in list(logging.root.manager.loggerDict):
        if name.endswith(suffix):
            logging.getLogger(name).setLevel(logging.WARNING)


def train_loop_per_worker(config: Dict[str, Any]) -> None:
    """Runs on every Ray Train worker. `config` = {"cfg": resolved config dict, "meta": data facts}."""
    import ray.train
    import ray.train.torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _quiet_report_logs()
    cfg, meta = from_dict(config["cfg"]), config["meta"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    run_dir, run_uri = Path(meta["run_dir"]), meta.get("run_uri", "")
    if run_uri and rank == 0:  # object storage: this node's scratch, with the best epoch so far from the run
        pull_best(run_dir, run_uri)
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    device = ray.train.torch.get_device()
    threads = set_worker_threads(cfg, ctx.get_local_world_size(), meta.get("in_memory", "true"))
    # clip_fp16 runs as CLIP4Clip does: fp16 backbone, fp32 heads, no autocast
    amp_dtype = torch.bfloat16 if (device.type == "cuda" and cfg.train.amp and not cfg.model.clip_fp16) else None

    model = build_model_from_config(cfg)
    compiled = compile_mode(cfg.train.compile, device)  # None = eager
    if compiled:
        compile_model(model, mode=compiled)
    loss_fn = build_loss(cfg, model.embed_dim).to(device)
    model = ray.train.torch.prepare_model(model)
    o = cfg.optim
    steps_per_epoch = meta["steps_per_epoch"]
    optimizer = build_optimizer(unwrap(model), o.lr, o.backbone_lr, o.weight_decay, o.name,
                                steps_per_epoch * cfg.train.epochs, o.warmup_ratio, o.grad_clip)
    scheduler = build_scheduler(optimizer, steps_per_epoch * cfg.train.epochs, o.warmup_ratio)

    start_epoch, step, state = 0, 0, None
    source = restore_source(ray.train.get_checkpoint(), run_dir)
    if source is not None:
        state = load_checkpoint(source)
    elif cfg.train.resume_from:
        state = load_checkpoint(cfg.train.resume_from)
    if state is not None:
        load_model_weights(unwrap(model), state["model"], str(source or cfg.train.resume_from),
                           state["config"], config["cfg"])
        loss_fn.load_state_dict(state["loss"])
        if state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        if rank == 0:
            record = {"epoch": state["epoch"] + 1, "step": step, "queue_filled": int(loss_fn.text_queue.filled),
                      "queue_sum": float(loss_fn.text_queue.queue.sum()), "time": time.time()}
            with open(run_dir / "restores.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            log.info("restored after epoch %d, step %d, queue %d/%d", state["epoch"] + 1, step,
                     record["queue_filled"], cfg.ncl.queue_size)

    fail_at = int(os.environ.get(FAULT_ENV, cfg.train.fail_at_step))
    tb = MetricLogger(str(run_dir / "tensorboard"), enabled=rank == 0)
    shard = ray.train.get_dataset_shard("train") if meta.get("pair_store") is None else None
    B, seed, E = cfg.train.batch_size, cfg.train.seed, cfg.train.epochs
    board = meta.get("board") if rank == 0 else None
    if meta.get("board") is not None:  # every rank says where it runs (results.json records it)
        meta["board"].set.remote({f"worker/{rank}/node_id": ray.get_runtime_context().get_node_id(),
                                  f"worker/{rank}/torch_threads": threads, f"worker/{rank}/compiled": compiled,
                                  f"worker/{rank}/device": str(device),
                                  f"worker/{rank}/frame_decode": (worker_decoder(device) if meta.get("decode_on")
                                                                  == "worker" else "Ray Data tasks, CPU")})

    def post(**values) -> None:  # progress for the driver's console (fire and forget)
        if board is not None:
            board.set.remote(values)

    prof: Dict[str, float] = {}  # seconds per stage over the steady-state steps (rank 0 reports them)
    start_step = step
    warmup = 2 if steps_per_epoch * (E - start_epoch) > 4 else 1
    selector = select_metric(cfg)
    lower_is_better = selector.endswith(("MdR", "MnR"))
    best = best_info(run_dir) if rank == 0 else None
    post(phase="train", step=step, total=steps_per_epoch * E, epoch=start_epoch + 1, epochs=E)
    pairs = meta.get("pair_store")
    # on a GPU, batches are copied (and JPEG blobs decoded) in the feeder's thread, on a side stream (transfer.py)
    ahead = Ahead(device, frame_shape=meta.get("frame_shape"))
    shuffle = dict(batch_size=B, drop_last=True, local_shuffle_buffer_size=2 * B)
    if pairs is not None:  # data.samples=pairs: a global permutation of all pairs per epoch (data/pairstore.py)
        def make_iter(e):
            return (ahead.send({k: torch.from_numpy(v) for k, v in b.items()})
                    for b in pairs.batches(seed, e, rank, B, world))
    elif meta.get("decode_on") == "worker":  # rows carry JPEG blobs: numpy batches, decoded by `ahead`
        def make_iter(e):
            return (ahead.send({k: list(v) if k == "jpeg" else torch.from_numpy(v) for k, v in b.items()})
                    for b in shard.iter_batches(**shuffle, local_shuffle_seed=seed * 1000 + e, batch_format="numpy"))
    else:
        def make_iter(e):
            return (ahead.send(b) for b in shard.iter_torch_batches(
                **shuffle, local_shuffle_seed=seed * 1000 + e, device="cpu", pin_memory=ahead.pins))
    feeder = EpochFeeder(make_iter, start_epoch, E, buffered=4)  # the next epoch starts while this one ends
    for epoch in range(start_epoch, E):
        model.train()
        loss_fn.train()
        generator = torch.Generator().manual_seed(seed * 100003 + epoch * 1009 + rank)
        t0, clips, loss_sum, n_steps = time.time(), 0, 0.0, 0
        waited = time.perf_counter()
        for batch in feeder.epoch(epoch):
            batch = ahead.receive(batch)
            _maybe_fail(fail_at, step, rank, run_dir)
            logged = rank == 0 and (step + 1) % cfg.train.log_every_steps == 0
            # the profile samples the logged steps past warm-up: its clock waits for the GPU at every phase
            timed = logged and step - start_step >= warmup
            if timed:
                prof["input"] = prof.get("input", 0.0) + time.perf_counter() - waited
            # on a GPU, scalars are read on logged steps only: reading one waits for the whole step
            m = train_step(model, loss_fn, batch, optimizer, scheduler, generator, device, amp_dtype,
                           cfg.optim.grad_clip, prof if timed else None, diagnostics=logged,
                           as_floats=logged or device.type != "cuda")
            prof["steps"] = prof.get("steps", 0) + (1 if timed else 0)
            waited = time.perf_counter()
            step += 1
            n_steps += 1
            clips += B * world
            loss_sum = loss_sum + m["train/contrastive_loss"]  # a device tensor on GPUs
            if logged:
                tb.log_dict(m, step)
            shown = {"loss": m["train/contrastive_loss"]} if isinstance(m["train/contrastive_loss"], float) else {}
            post(phase="train", step=step, epoch=epoch + 1, clips_per_s=clips / max(time.time() - t0, 1e-9), **shown)
        elapsed = time.time() - t0
        metrics: Dict[str, float] = {"epoch": epoch + 1, "step": step, "train/clips_per_s": clips / max(elapsed, 1e-9),
                                     "train/epoch_loss": float(loss_sum) / max(1, n_steps)}
        last = epoch == cfg.train.epochs - 1
        every = cfg.train.eval_every_epochs
        if rank == 0:
            changed: List[str] = []  # best/ when this epoch replaced it: uploaded only then
            if last or (every > 0 and (epoch + 1) % every == 0):
                post(phase="evaluating val")
                metrics.update(_evaluate(model, loss_fn, ray.train.get_dataset_shard("val"), cfg, device,
                                         ["none", "ncl"], "val"))
                served = served_method(cfg)  # the ranking this model is served with, under one name for sweeps
                metrics.update({k.replace(f"val/{served}/", "val/served/"): v for k, v in list(metrics.items())
                                if k.startswith(f"val/{served}/")})
                score = metrics.get(selector)
                post(val=f"{selector.split('/', 1)[1]} {score:.1f}" if score is not None else "")
                better = best is None or (score < best["score"] if lower_is_better else score > best["score"])
                if cfg.train.keep_best and score is not None and better:
                    save_best(run_dir, unwrap(model), loss_fn, epoch, step, config["cfg"], selector, score)
                    best, changed = best_info(run_dir), [BEST]
            if last:
                post(phase="evaluating test")
                test_model, test_loss = model, loss_fn
                if cfg.train.keep_best and best is not None and best["epoch"] != epoch:
                    test_model, test_loss = _load_for_eval(cfg, run_dir / BEST, device)
                metrics.update(_evaluate(test_model, test_loss, ray.train.get_dataset_shard("test"), cfg, device,
                                         list(cfg.eval.methods), "test"))
                metrics["test_epoch"] = 1 + (best["epoch"] if (cfg.train.keep_best and best) else epoch)
            tb.log_dict({k: v for k, v in metrics.items() if "/" in k and not k.startswith("test/")}, step)
            if last:  # the test table as text, headline metrics and settings in HParams: not one chart per number
                tb.log_final(metrics, cfg, list(cfg.eval.methods), served_method(cfg), step)
            tb.flush()
            publish(run_dir, run_uri, [*changed, "tensorboard", "restores.jsonl"])  # a crash loses one epoch at most
            log.info("epoch %d step %d loss %.4f %.1f clips/s%s", epoch + 1, step, metrics["train/epoch_loss"],
                     metrics["train/clips_per_s"],
                     f" val t2v R@1 {metrics['val/served/t2v_R@1']:.1f}" if "val/served/t2v_R@1" in metrics else "")
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if rank == 0 and (last or (epoch + 1) % cfg.train.checkpoint_every_epochs == 0):
                save_checkpoint(d, unwrap(model), loss_fn, epoch, step, config["cfg"], optimizer, scheduler)
                ckpt = ray.train.Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=ckpt)  # a barrier: every rank calls it
    feeder.close()
    allreduce = allreduce_seconds(unwrap(model), device)
    if board is not None:  # per epoch: the trainer's wait for its first batch; the pipeline's start-up (overlapped)
        n = prof.pop("steps", 0)
        board.set.remote({**{f"profile/{k}_s_per_step": v / max(n, 1) for k, v in prof.items()},
                          "profile/steps": n, "profile/allreduce_s": allreduce,
                          "profile/epoch_start_s": [round(w, 3) for _, w in sorted(feeder.start_waits.items())],
                          "profile/epoch_pipeline_start_s": [round(w, 3) for _, w in sorted(feeder.startups.items())]})
    if meta.get("board") is not None:  # the replicated queues, for checking they agree across workers
        sums = {f"worker/{rank}/{name}_sum": float(getattr(loss_fn, name).queue.double().sum())
                for name in ("text_queue", "video_queue")}
        ray.get(meta["board"].set.remote(sums))
    tb.close()

