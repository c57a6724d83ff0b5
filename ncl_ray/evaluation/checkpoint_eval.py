"""`ncl-ray eval CHECKPOINT_OR_RUN [key=value ...]`: a checkpoint on the test split with every normalisation.

Writes, per (checkpoint, split, bank), `CHECKPOINT/eval/<split>-bank-<bank>/`: metrics.json, retrieval_mass.png,
recall.png, TensorBoard scalars (tags `<split>_bank-<bank>/...`), histograms and projector, and an NCL-folded
export for `ncl-ray search`. Evaluations with another bank or split never overwrite each other. A checkpoint
named by its URI (s3://bucket/runs/NAME) is fetched once into the local cache and its evaluation is written
beside it on object storage (`.../checkpoint_N/eval/...`), through a scratch folder that is removed.
"""

import json
import logging
import shutil
import tempfile
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Dict, List

import torch

from ncl_ray.evaluation.evaluate import Banks, directions, embed_dataset, eval_settings, evaluate_embeddings
from ncl_ray.evaluation.leaks import check_leaks, subset
from ncl_ray.evaluation.query_file import embed_queries, read_queries
from ncl_ray.data.cache import check_data_locations
from ncl_ray.runtime import storage
from ncl_ray.runtime.checkpoint import checkpoint_uri, load_model, resolve_checkpoint

log = logging.getLogger("ncl_ray.eval")


@dataclass
class EvalPlan:
    """What one evaluation reads and where it writes: resolved before Ray starts."""
    checkpoint: str  # the local checkpoint folder (a URI's fetched copy)
    state: Dict[str, Any]
    cfg: Any  # the checkpoint's config with the overrides
    entries: list
    bank_tag: str  # bank-train, bank-test, bank-train-captions, ...
    target: str  # where the results end up: a folder, or a URI (written through `out`)
    out: Path
    diag: Dict[str, torch.Tensor] = field(default_factory=dict)
    leaks: Dict[str, Any] = field(default_factory=dict)  # the leak check's result (evaluation/leaks.py)


def evaluate_checkpoint(checkpoint: str, overrides: List[str]) -> int:
    """`ncl-ray eval CHECKPOINT [key=value ...]`: every normalisation on the test split, JSON, plots,
    TensorBoard scalars and projector, and an NCL-folded embedding export for `ncl-ray search`."""
    from ncl_ray.data.decode import clip_spec
    from ncl_ray.data.pipeline import build_clip_cache
    from ncl_ray.runtime.cluster import init_ray

    plan = plan_eval(checkpoint, overrides)
    d = plan.cfg.data
    init_ray(plan.cfg.run.ray_address, verbose=plan.cfg.run.verbose)
    cache = build_clip_cache(plan.entries, clip_spec(d), d.cache_dir, d.decode_concurrency)
    test, bank_text, bank_video = embed_splits(plan, cache)
    metrics, methods = score(plan, test, bank_text, bank_video)
    metrics["skipped_videos"] = float(len(cache.skipped))
    write_outputs(plan, cache, test, metrics, methods)
    shown = publish_outputs(plan)
    print_report(plan, cache, test, metrics, methods, shown)
    return 0


def plan_eval(checkpoint: str, overrides: List[str]) -> EvalPlan:
    """Resolve the checkpoint (fetching a URI's), its config with `overrides`, the dataset and the output folder;
    every check that can fail does so here, before Ray starts."""
    from ncl_ray.config.schema import load_config
    from ncl_ray.data.pipeline import load_entries
    from ncl_ray.runtime.checkpoint import load_checkpoint

    remote = checkpoint_uri(checkpoint) if storage.is_uri(checkpoint) else ""  # where it lives remotely
    checkpoint = resolve_checkpoint(checkpoint)
    state = load_checkpoint(checkpoint)
    cfg = load_config(str(Path(checkpoint) / "config.yaml"), list(overrides))
    d, e = cfg.data, cfg.eval
    entries = load_entries(d.dataset, d.root, d.manifest, d.synthetic_videos, d.synthetic_profile,
                           cfg.train.protocol != "published")
    bank_tag = f"bank-{e.bank}" + ({"captions": "-captions", "file": f"-file-{Path(e.bank_file).stem}"}.get(
        e.bank_source, "") if e.bank != "test" else "")
    if e.bank_source == "file":
        read_queries(e.bank_file, e.bank_size)  # a missing or unreadable file fails here, before Ray starts
    check_data_locations(cfg)
    # an evaluation of a checkpoint on object storage is written beside it there, through a scratch folder
    target = e.out_dir or (storage.join(remote, "eval", f"{d.test_split}-{bank_tag}") if remote else "")
    if storage.is_uri(target):
        storage.check_reachable(target, "eval.out_dir" if e.out_dir else "the checkpoint's URI")
    out = (Path(tempfile.mkdtemp(prefix="ncl-ray-eval-")) if storage.is_uri(target) else
           Path(target) if target else Path(checkpoint) / "eval" / f"{d.test_split}-{bank_tag}")
    return EvalPlan(checkpoint, state, cfg, entries, bank_tag, target, out)


def embed_splits(plan: EvalPlan, cache):
    """(test embeddings, bank texts (Q, D), bank videos (Q, D)): the bank is the checkpoint's query queues, or
    a sample of training captions embedded with this model (eval.bank_source=captions)."""
    import ray

    from ncl_ray.data.pipeline import split_dataset

    cfg, d, e, state = plan.cfg, plan.cfg.data, plan.cfg.eval, plan.state
    use_gpu = cfg.train.use_gpu and ray.cluster_resources().get("GPU", 0) > 0
    log.info("embedding the '%s' split with %s", d.test_split, plan.checkpoint)
    test = embed_dataset(split_dataset(cache, plan.entries, d.test_split, d.max_captions, d.max_words),
                         plan.checkpoint, use_gpu)
    if e.bank_source == "captions":  # a sample of training queries embedded with this model
        train_ds = split_dataset(cache, plan.entries, d.train_split, d.max_captions, d.max_words).limit(e.bank_size)
        bank = embed_dataset(train_ds, plan.checkpoint, use_gpu)
        return test, bank.text, bank.video
    loss = state["loss"]  # the query queues saved with the checkpoint
    videos = loss["video_queue.queue"][: int(loss["video_queue.filled"])]
    if e.bank_source == "file":  # the user's own queries, embedded with this model's text tower
        model = load_model(plan.checkpoint, state)[0]
        return test, embed_queries(model, read_queries(e.bank_file, e.bank_size), d.max_words), videos
    return test, loss["text_queue.queue"][: int(loss["text_queue.filled"])], videos


def _tau(plan: EvalPlan) -> float:
    return float(1.0 / torch.tensor(float(plan.state["model"]["logit_scale"])).exp().clamp(max=100))


def score(plan: EvalPlan, test, bank_text, bank_video):
    """(metrics, methods): every method's t2v and v2t metrics; the per-item biases land in `plan.diag`."""
    e = plan.cfg.eval
    methods = list(dict.fromkeys(["none", "ncl", *e.methods]))  # ncl's biases are exported in any case
    log.info("scoring %d captions x %d videos with %s", len(test.text), len(test.video), ", ".join(methods))
    settings, compute = eval_settings(e)
    banks = Banks(bank_text, bank_video, e.bank, e.gallery_bank)
    metrics = evaluate_embeddings(test, _tau(plan), methods, banks, settings, plan.diag, compute)
    part = subset(test)
    leaks = check_leaks(directions(part, methods, banks, compute), methods, _tau(plan), settings)
    metrics["leak_check"] = 1.0  # check_leaks raised otherwise
    plan.leaks = {**leaks, "videos": len(part.video), "captions": len(part.text)}
    return metrics, methods


def write_outputs(plan: EvalPlan, cache, test, metrics: Dict[str, float], methods: List[str]) -> None:
    """metrics.json, config.yaml, the two plots, TensorBoard (scalars, histograms, projector) and the export."""
    from ncl_ray.config.schema import save_config
    from ncl_ray.data.pipeline import split_videos
    from ncl_ray.evaluation.export import IndexFiles, write_index
    from ncl_ray.evaluation.calibration import calibrate
    from ncl_ray.ncl.methods import SERVED_BIASES
    from ncl_ray.ui.plots import mass_histogram, recall_bars
    from ncl_ray.ui.tracking import MetricLogger

    cfg, d, e, out, diag, step = plan.cfg, plan.cfg.data, plan.cfg.eval, plan.out, plan.diag, plan.state["step"]
    out.mkdir(parents=True, exist_ok=True)  # one folder per (checkpoint, split, bank), replaced by a re-run
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    save_config(cfg, str(out / "config.yaml"))
    bias, before, after = diag["t2v_ncl_bias"], diag["t2v_mass_before"], diag["ncl/t2v_mass"]
    title = f"run {cfg.run.name}, split '{d.test_split}' ({len(test.video)} videos), {plan.bank_tag}"
    mass_histogram(before.numpy(), after.numpy(), len(test.text), str(out / "retrieval_mass.png"), title)
    recall_bars(metrics, methods, str(out / "recall.png"), len(test.video), title)
    shutil.rmtree(out / "tensorboard", ignore_errors=True)  # a re-evaluation replaces its events (same step)
    tb = MetricLogger(str(out / "tensorboard"))
    tag = f"{d.test_split}_{plan.bank_tag}"
    tb.log_dict({f"{tag}/{k}": v for k, v in metrics.items()}, step)
    tb.histogram(f"{tag}/t2v_retrieval_mass_none", before, step)
    tb.histogram(f"{tag}/t2v_retrieval_mass_ncl", after, step)
    videos = split_videos(cache, plan.entries, d.test_split)
    captions = [c for v in videos for c in v.captions[: d.max_captions]]
    if tb.writer is not None:  # TensorBoard projector: both modalities in one space
        n_v, n_t = min(len(videos), 1000), min(len(captions), 1000)
        tb.writer.add_embedding(torch.cat([test.video[:n_v], test.text[:n_t]]),
                                metadata=[f"video {v.video_id}" for v in videos[:n_v]] + captions[:n_t],
                                global_step=step, tag=f"{d.test_split}_embeddings")
    tb.close()
    confidence = calibrate(test.text.float().numpy(), test.video.float().numpy(),
                           test.caption_to_video.numpy(), bias.float().numpy(), _tau(plan))
    files = IndexFiles.gallery(
        [v.video_id for v in videos], [v.path for v in videos], test.video.float().numpy(), bias.float().numpy(),
        _tau(plan), meta={"checkpoint": plan.checkpoint, "bank": e.bank, "bank_source": e.bank_source,
                          "n_iters": e.n_iters, "split": d.test_split, "confidence": confidence},
        extra={m: diag[f"t2v_{m}_bias"].float().numpy() for m in SERVED_BIASES if f"t2v_{m}_bias" in diag})
    write_index(out / "export", files, ([videos[int(i)].video_id for i in test.caption_to_video], captions,
                                        test.text.float().numpy()))


def publish_outputs(plan: EvalPlan) -> str:
    """Where the results are now: the output folder, or (uploaded, the scratch folder removed) its URI."""
    if not storage.is_uri(plan.target):
        return str(plan.out)
    storage.upload(str(plan.out), plan.target)
    shutil.rmtree(plan.out, ignore_errors=True)
    return plan.target


def print_report(plan: EvalPlan, cache, test, metrics: Dict[str, float], methods: List[str], shown: str) -> None:
    from ncl_ray.ui.summary import Tested, report

    cfg, e = plan.cfg, plan.cfg.eval
    bank_label = "test queries (transductive)" if e.bank != "train" else f"training-query bank ({e.bank_source})"
    print(report(cfg.run.name, {f"test/{k}": v for k, v in metrics.items()}, methods, Tested(
        split=cfg.data.test_split, bank=e.bank, n_iters=int(plan.state["config"]["ncl"]["n_iters"]),
        queue=cfg.ncl.queue_size, n_videos=len(test.video), n_captions=len(test.text), tested=plan.checkpoint,
        why=f"ncl-ray eval; ncl/qbnorm biases from the {bank_label}", decoded=cache.decoded,
        skipped=len(cache.skipped), results=f"{shown}/metrics.json", run_dir=shown, protocol=cfg.train.protocol,
        gallery_bank=e.gallery_bank)))
    transductive = ", ".join(plan.leaks.get("transductive", [])) or "none"
    print(f"leak check: passed ({len(plan.leaks.get('checked', []))} methods score a query alone as in the batch, "
          f"and a gallery of {plan.leaks.get('videos', 0) - 1} videos for {plan.leaks.get('captions', 0)} captions); "
          f"transductive, not held to it: {transductive}")
    print(f"wrote {shown}/metrics.json, retrieval_mass.png, recall.png, tensorboard/, export/ "
          f"(ncl-ray search --index {shown}/export \"your query\")")
