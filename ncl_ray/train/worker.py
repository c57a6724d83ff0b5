"""What every Ray Train worker runs, as named steps over one `Worker` (the step itself is loop.train_step):

    w = Worker(config)          # config, device, model, NCL loss (its replicated queues), optimizer, schedule
    w.restore()                 # Ray's latest checkpoint after a restart, else train.resume_from
    feeder = w.feeder()         # this rank's batches, the next epoch prepared while one ends
    for epoch in w.epochs():
        metrics = w.train_epoch(epoch, feeder)
        w.evaluate(epoch, metrics)     # rank 0: validation, best/, the test split at the end, TensorBoard
        w.report(epoch, metrics)       # every rank: ray.train.report, with rank 0's checkpoint
    w.finish(feeder)            # the profile and the queues' checksums for the driver

Epochs are counted from 1 in what a user reads (the console, results.json, restores.jsonl), from 0 inside
checkpoints.
"""

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import torch

from ncl_ray.config.schema import from_dict, select_metric, served_method
from ncl_ray.model.clip import build_model_from_config
from ncl_ray.model.compile import compile_mode, compile_model
from ncl_ray.runtime.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from ncl_ray.runtime.runs import BEST, best_info, publish, pull_best, record_restore, restore_source, save_best
from ncl_ray.train.builders import BertAdamSchedule, build_loss, build_optimizer, build_scheduler
from ncl_ray.train.epochs import EpochFeeder
from ncl_ray.train.loop import (FAULT_ENV, StepOptions, evaluate_split, load_for_eval, maybe_fail,
                                quiet_report_logs, train_step, unwrap)
from ncl_ray.train.profiling import allreduce_seconds
from ncl_ray.train.threads import set_worker_threads
from ncl_ray.train.transfer import Ahead, worker_decoder
from ncl_ray.ui.tracking import MetricLogger

log = logging.getLogger("ncl_ray.train.loop")


class Worker:
    """One rank's run. `config` = {"cfg": the resolved config dict, "meta": the driver's data facts}."""

    def __init__(self, config: Dict[str, Any]):
        import ray.train
        import ray.train.torch

        self.cfg_dict, self.cfg, self.meta = config["cfg"], from_dict(config["cfg"]), config["meta"]
        cfg, meta = self.cfg, self.meta
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.run_dir, self.run_uri = Path(meta["run_dir"]), meta.get("run_uri", "")
        if self.run_uri and self.rank == 0:  # object storage: this node's scratch, with the best epoch so far
            pull_best(self.run_dir, self.run_uri)
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        self.device = ray.train.torch.get_device()
        self.threads = set_worker_threads(cfg, ctx.get_local_world_size(), meta.get("in_memory", "true"))
        # clip_fp16 runs as CLIP4Clip does: fp16 backbone, fp32 heads, no autocast
        self.amp_dtype = torch.bfloat16 if (self.device.type == "cuda" and cfg.train.amp
                                            and not cfg.model.clip_fp16) else None
        model = build_model_from_config(cfg)
        self.compiled = compile_mode(cfg.train.compile, self.device)  # None = eager
        if self.compiled:
            compile_model(model, mode=self.compiled)
        self.loss_fn = build_loss(cfg, model.embed_dim).to(self.device)
        self.model = ray.train.torch.prepare_model(model)
        o, total = cfg.optim, meta["steps_per_epoch"] * cfg.train.epochs
        self.optimizer = build_optimizer(unwrap(self.model), o.lr, o.backbone_lr, o.weight_decay, o.name,
                                         BertAdamSchedule(total, o.warmup_ratio, o.grad_clip))
        self.scheduler = build_scheduler(self.optimizer, total, o.warmup_ratio)
        self.start_epoch, self.step = 0, 0
        self.tb = MetricLogger(str(self.run_dir / "tensorboard"), enabled=self.rank == 0)
        self.board = meta.get("board") if self.rank == 0 else None  # the driver's progress line
        self.selector = select_metric(cfg)
        self.best = None
        self.prof: Dict[str, float] = {}  # seconds per stage over the steady-state steps (rank 0 reports them)

    def restore(self) -> None:
        """Continue from Ray's latest checkpoint (a restarted worker group), else from train.resume_from."""
        import ray.train

        with tempfile.TemporaryDirectory(prefix="ncl-ray-restore-") as scratch:
            source = restore_source(ray.train.get_checkpoint(), self.run_dir, scratch, self.run_uri)
            path = source or self.cfg.train.resume_from
            state = load_checkpoint(path) if path else None
        if state is not None:
            load_model_weights(unwrap(self.model), state["model"], str(path), state["config"], self.cfg_dict)
            self.loss_fn.load_state_dict(state["loss"])
            if state["optimizer"] is not None:
                self.optimizer.load_state_dict(state["optimizer"])
                self.scheduler.load_state_dict(state["scheduler"])
            self.start_epoch, self.step = state["epoch"] + 1, state["step"]
            if self.rank == 0:
                q = self.loss_fn.text_queue
                record = {"epoch": state["epoch"] + 1, "step": self.step, "queue_filled": int(q.filled),
                          "queue_sum": float(q.queue.sum()), "time": time.time()}
                record_restore(self.run_dir, self.run_uri, record)
                log.info("restored after epoch %d, step %d, queue %d/%d", state["epoch"] + 1, self.step,
                         record["queue_filled"], self.cfg.ncl.queue_size)
        self.best = best_info(self.run_dir) if self.rank == 0 else None
        self.start_step = self.step
        self._announce()

    def _announce(self) -> None:
        """Every rank says where it runs (results.json records it); rank 0 starts the progress line."""
        import ray

        r, meta = self.rank, self.meta
        if meta.get("board") is not None:
            decode = worker_decoder(self.device) if meta.get("decode_on") == "worker" else \
                "the pair feeder's thread, CPU" if meta.get("pair_store") is not None else "Ray Data tasks, CPU"
            meta["board"].set.remote({f"worker/{r}/node_id": ray.get_runtime_context().get_node_id(),
                                      f"worker/{r}/torch_threads": self.threads, f"worker/{r}/compiled": self.compiled,
                                      f"worker/{r}/device": str(self.device), f"worker/{r}/frame_decode": decode})
        E = self.cfg.train.epochs
        self.post(phase="train", step=self.step, total=self.meta["steps_per_epoch"] * E,
                  epoch=self.start_epoch + 1, epochs=E)

    def post(self, **values) -> None:
        """Progress for the driver's console (fire and forget)."""
        if self.board is not None:
            self.board.set.remote(values)

    def epochs(self) -> range:
        return range(self.start_epoch, self.cfg.train.epochs)

    def feeder(self) -> EpochFeeder:
        """This rank's batches per epoch, copied (and JPEG blobs decoded) ahead on a GPU's side stream."""
        import ray.train

        B, seed, rank = self.cfg.train.batch_size, self.cfg.train.seed, self.rank
        self.ahead = ahead = Ahead(self.device, frame_shape=self.meta.get("frame_shape"))
        pairs, on_worker = self.meta.get("pair_store"), self.meta.get("decode_on") == "worker"
        shard = ray.train.get_dataset_shard("train") if pairs is None else None
        shuffle = dict(batch_size=B, drop_last=True, local_shuffle_buffer_size=2 * B)

        def make_iter(e: int) -> Iterator:
            if pairs is not None:  # data.samples=pairs: a global permutation of all pairs per epoch (pairstore.py)
                return (ahead.send({k: v if k == "jpeg" else torch.from_numpy(v) for k, v in b.items()})
                        for b in pairs.batches(seed, e, rank, B, self.world, decode=not on_worker))
            if on_worker:  # rows carry JPEG blobs: numpy batches, decoded by `ahead`
                return (ahead.send({k: list(v) if k == "jpeg" else torch.from_numpy(v) for k, v in b.items()})
                        for b in shard.iter_batches(**shuffle, local_shuffle_seed=seed * 1000 + e,
                                                    batch_format="numpy"))
            return (ahead.send(b) for b in shard.iter_torch_batches(
                **shuffle, local_shuffle_seed=seed * 1000 + e, device="cpu", pin_memory=ahead.pins))

        # the next epoch starts while this one ends
        return EpochFeeder(make_iter, self.start_epoch, self.cfg.train.epochs, buffered=4)

    def train_epoch(self, epoch: int, feeder: EpochFeeder) -> Dict[str, float]:
        """One epoch of steps; its `epoch`, `step`, clips/s and mean loss."""
        cfg, rank, E = self.cfg, self.rank, self.cfg.train.epochs
        self.model.train()
        self.loss_fn.train()
        generator = torch.Generator().manual_seed(cfg.train.seed * 100003 + epoch * 1009 + rank)
        fail_at = int(os.environ.get(FAULT_ENV, cfg.train.fail_at_step))
        warmup = 2 if self.meta["steps_per_epoch"] * (E - self.start_epoch) > 4 else 1
        t0, clips, loss_sum, n_steps = time.time(), 0, 0.0, 0
        waited = time.perf_counter()
        for batch in feeder.epoch(epoch):
            batch = self.ahead.receive(batch)
            maybe_fail(fail_at, self.step, rank, self.run_dir)
            logged = rank == 0 and (self.step + 1) % cfg.train.log_every_steps == 0
            # the profile samples the logged steps past warm-up: its clock waits for the GPU at every phase
            timed = logged and self.step - self.start_step >= warmup
            if timed:
                self.prof["input"] = self.prof.get("input", 0.0) + time.perf_counter() - waited
            # on a GPU, scalars are read on logged steps only: reading one waits for the whole step
            options = StepOptions(self.amp_dtype, cfg.optim.grad_clip, diagnostics=logged,
                                  as_floats=logged or self.device.type != "cuda", timings=self.prof if timed else None)
            m = train_step(self.model, self.loss_fn, batch, self.optimizer, self.scheduler, generator, self.device,
                           options)
            self.prof["steps"] = self.prof.get("steps", 0) + (1 if timed else 0)
            waited = time.perf_counter()
            self.step, n_steps, clips = self.step + 1, n_steps + 1, clips + cfg.train.batch_size * self.world
            loss_sum = loss_sum + m["train/contrastive_loss"]  # a device tensor on GPUs
            if logged:
                self.tb.log_dict(m, self.step)
            loss = m["train/contrastive_loss"]
            self.post(phase="train", step=self.step, epoch=epoch + 1, clips_per_s=clips / max(time.time() - t0, 1e-9),
                      **({"loss": loss} if isinstance(loss, float) else {}))
        return {"epoch": epoch + 1, "step": self.step, "train/clips_per_s": clips / max(time.time() - t0, 1e-9),
                "train/epoch_loss": float(loss_sum) / max(1, n_steps)}

    def evaluate(self, epoch: int, metrics: Dict[str, float]) -> None:
        """Rank 0: validation on its schedule (best/ kept when it improves), the test split after the last epoch
        (with the best epoch's weights), TensorBoard, and the run's files published."""
        if self.rank != 0:
            return
        cfg, last = self.cfg, epoch == self.cfg.train.epochs - 1
        every = cfg.train.eval_every_epochs
        changed: List[str] = []  # best/ when this epoch replaced it: uploaded only then
        if last or (every > 0 and (epoch + 1) % every == 0):
            changed = self._validate(epoch, metrics)
        if last:
            self._test(epoch, metrics)
        self.tb.log_dict({k: v for k, v in metrics.items() if "/" in k and not k.startswith("test/")}, self.step)
        if last:  # the test table as text, headline metrics and settings in HParams: not one chart per number
            self.tb.log_final(metrics, cfg, list(cfg.eval.methods), served_method(cfg), self.step)
        self.tb.flush()
        publish(self.run_dir, self.run_uri, [*changed, "tensorboard"])  # a crash loses an epoch
        val = metrics.get("val/served/t2v_R@1")
        log.info("epoch %d step %d loss %.4f %.1f clips/s%s", epoch + 1, self.step, metrics["train/epoch_loss"],
                 metrics["train/clips_per_s"], f" val t2v R@1 {val:.1f}" if val is not None else "")

    def _validate(self, epoch: int, metrics: Dict[str, float]) -> List[str]:
        import ray.train

        self.post(phase="evaluating val")
        metrics.update(evaluate_split(self.model, self.loss_fn, ray.train.get_dataset_shard("val"), self.cfg,
                                      self.device, ["none", "ncl"], "val"))
        served = served_method(self.cfg)  # the ranking this model is served with, under one name for sweeps
        metrics.update({k.replace(f"val/{served}/", "val/served/"): v for k, v in list(metrics.items())
                        if k.startswith(f"val/{served}/")})
        score = metrics.get(self.selector)
        self.post(val=f"{self.selector.split('/', 1)[1]} {score:.1f}" if score is not None else "")
        lower = self.selector.endswith(("MdR", "MnR"))
        better = self.best is None or (score < self.best["score"] if lower else score > self.best["score"])
        if self.cfg.train.keep_best and score is not None and better:
            save_best(self.run_dir, unwrap(self.model), self.loss_fn, epoch, self.step, self.cfg_dict, self.selector,
                      score)
            self.best = best_info(self.run_dir)
            return [BEST]
        return []

    def _test(self, epoch: int, metrics: Dict[str, float]) -> None:
        import ray.train

        self.post(phase="evaluating test")
        keep = self.cfg.train.keep_best and self.best is not None
        model, loss_fn = self.model, self.loss_fn
        if keep and self.best["epoch"] != epoch:
            model, loss_fn = load_for_eval(self.cfg, self.run_dir / BEST, self.device)
        metrics.update(evaluate_split(model, loss_fn, ray.train.get_dataset_shard("test"), self.cfg, self.device,
                                      list(self.cfg.eval.methods), "test"))
        metrics["test_epoch"] = 1 + (self.best["epoch"] if keep else epoch)

    def report(self, epoch: int, metrics: Dict[str, float]) -> None:
        """Every rank reports (a barrier); rank 0 attaches the checkpoint on its schedule and after the last epoch."""
        import ray.train

        last = epoch == self.cfg.train.epochs - 1
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if self.rank == 0 and (last or (epoch + 1) % self.cfg.train.checkpoint_every_epochs == 0):
                save_checkpoint(d, unwrap(self.model), self.loss_fn, epoch, self.step, self.cfg_dict, self.optimizer,
                                self.scheduler)
                ckpt = ray.train.Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=ckpt)

    def finish(self, feeder: EpochFeeder) -> None:
        """The profile (per epoch: the first batch's wait; the pipeline's overlapped start-up) and the replicated
        queues' checksums, for the driver."""
        import ray

        feeder.close()
        allreduce = allreduce_seconds(unwrap(self.model), self.device)
        if self.board is not None:
            n = self.prof.pop("steps", 0)
            waits, startups = sorted(feeder.start_waits.items()), sorted(feeder.startups.items())
            self.board.set.remote({**{f"profile/{k}_s_per_step": v / max(n, 1) for k, v in self.prof.items()},
                                   "profile/steps": n, "profile/allreduce_s": allreduce,
                                   "profile/epoch_start_s": [round(w, 3) for _, w in waits],
                                   "profile/epoch_pipeline_start_s": [round(w, 3) for _, w in startups]})
        if self.meta.get("board") is not None:
            sums = {f"worker/{self.rank}/{name}_sum": float(getattr(self.loss_fn, name).queue.double().sum())
                    for name in ("text_queue", "video_queue")}
            ray.get(self.meta["board"].set.remote(sums))
        self.tb.close()


def train_loop_per_worker(config: Dict[str, Any]) -> None:
    """Runs on every Ray Train worker. `config` = {"cfg": resolved config dict, "meta": data facts}."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_report_logs()
    w = Worker(config)
    w.restore()
    feeder = w.feeder()
    for epoch in w.epochs():
        metrics = w.train_epoch(epoch, feeder)
        w.evaluate(epoch, metrics)
        w.report(epoch, metrics)
    w.finish(feeder)
