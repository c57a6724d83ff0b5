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
from typing import Dict, List

import torch

from ncl_ray.evaluation.evaluate import embed_dataset, evaluate_embeddings
from ncl_ray.data.cache import check_data_locations
from ncl_ray.runtime import storage
from ncl_ray.runtime.checkpoint import checkpoint_uri, resolve_checkpoint

log = logging.getLogger("ncl_ray.eval")


def evaluate_checkpoint(checkpoint: str, overrides: List[str]) -> int:
    """`ncl-ray eval CHECKPOINT [key=value ...]`: every normalisation on the test split, JSON, plots,
    TensorBoard scalars and projector, and an NCL-folded embedding export for `ncl-ray search`."""
    import ray

    from ncl_ray.runtime.checkpoint import load_checkpoint
    from ncl_ray.config.schema import load_config, save_config
    from ncl_ray.data.pipeline import build_clip_cache, load_entries, split_dataset, split_videos
    from ncl_ray.evaluation.export import write_index
    from ncl_ray.ncl.methods import PER_ITEM_METHODS
    from ncl_ray.runtime.cluster import init_ray
    from ncl_ray.ui.plots import mass_histogram, recall_bars
    from ncl_ray.ui.tracking import MetricLogger

    remote = checkpoint_uri(checkpoint) if storage.is_uri(checkpoint) else ""  # where it lives remotely
    checkpoint = resolve_checkpoint(checkpoint)
    state = load_checkpoint(checkpoint)
    cfg = load_config(str(Path(checkpoint) / "config.yaml"), list(overrides))
    d, e = cfg.data, cfg.eval
    entries = load_entries(d.dataset, d.root, d.manifest, d.synthetic_videos, d.synthetic_profile,
                           cfg.train.protocol != "published")
    bank_tag = f"bank-{e.bank}" + ("-captions" if e.bank_source == "captions" and e.bank != "test" else "")
    check_data_locations(cfg)
    # an evaluation of a checkpoint on object storage is written beside it there, through a scratch folder
    target = e.out_dir or (storage.join(remote, "eval", f"{d.test_split}-{bank_tag}") if remote else "")
    if storage.is_uri(target):
        storage.check_reachable(target, "eval.out_dir" if e.out_dir else "the checkpoint's URI")
    out = (Path(tempfile.mkdtemp(prefix="ncl-ray-eval-")) if storage.is_uri(target) else
           Path(target) if target else Path(checkpoint) / "eval" / f"{d.test_split}-{bank_tag}")
    init_ray(cfg.run.ray_address, verbose=cfg.run.verbose)
    cache = build_clip_cache(entries, d.num_frames, d.frame_size, d.cache_dir, d.decode_threads,
                             d.decode_concurrency, d.cache_encoding, d.jpeg_quality, d.sampler, d.resize)
    use_gpu = cfg.train.use_gpu and ray.cluster_resources().get("GPU", 0) > 0
    log.info("embedding the '%s' split with %s", d.test_split, checkpoint)
    test = embed_dataset(split_dataset(cache, entries, d.test_split, d.max_captions, d.max_words),
                         checkpoint, use_gpu)
    if e.bank_source == "captions":  # a sample of training queries embedded with this model
        train_ds = split_dataset(cache, entries, d.train_split, d.max_captions, d.max_words).limit(e.bank_size)
        bank = embed_dataset(train_ds, checkpoint, use_gpu)
        bank_text, bank_video = bank.text, bank.video
    else:  # the query queues saved with the checkpoint
        bank_text, bank_video = state["loss"]["text_queue.queue"][: int(state["loss"]["text_queue.filled"])], \
            state["loss"]["video_queue.queue"][: int(state["loss"]["video_queue.filled"])]
    tau = float(1.0 / torch.tensor(float(state["model"]["logit_scale"])).exp().clamp(max=100))
    methods = list(dict.fromkeys(["none", "ncl", *e.methods]))  # ncl's biases are exported in any case
    diag: Dict[str, torch.Tensor] = {}
    log.info("scoring %d captions x %d videos with %s", len(test.text), len(test.video), ", ".join(methods))
    metrics = evaluate_embeddings(test, tau, methods, bank_text, bank_video, e.bank, e.n_iters,
                                  e.chunk_size, e.qbnorm_beta, e.qbnorm_k, e.nnn_k, e.nnn_alpha, e.is_beta, e.csls_k,
                                  store=diag,
                                  memory_mb=e.memory_mb, workers=e.workers)
    metrics["skipped_videos"] = float(len(cache.skipped))

    out.mkdir(parents=True, exist_ok=True)  # one folder per (checkpoint, split, bank), replaced by a re-run
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    save_config(cfg, str(out / "config.yaml"))
    bias, before, after = diag["t2v_ncl_bias"], diag["t2v_mass_before"], diag["ncl/t2v_mass"]
    title = f"run {cfg.run.name}, split '{d.test_split}' ({len(test.video)} videos), {bank_tag}"
    mass_histogram(before.numpy(), after.numpy(), len(test.text), str(out / "retrieval_mass.png"), title)
    recall_bars(metrics, methods, str(out / "recall.png"), len(test.video), title)
    shutil.rmtree(out / "tensorboard", ignore_errors=True)  # a re-evaluation replaces its events (same step)
    tb = MetricLogger(str(out / "tensorboard"))
    tag = f"{d.test_split}_{bank_tag}"
    tb.log_dict({f"{tag}/{k}": v for k, v in metrics.items()}, state["step"])
    tb.histogram(f"{tag}/t2v_retrieval_mass_none", before, state["step"])
    tb.histogram(f"{tag}/t2v_retrieval_mass_ncl", after, state["step"])
    videos = split_videos(cache, entries, d.test_split)
    captions = [c for v in videos for c in v.captions[: d.max_captions]]
    if tb.writer is not None:  # TensorBoard projector: both modalities in one space
        n_v, n_t = min(len(videos), 1000), min(len(captions), 1000)
        tb.writer.add_embedding(torch.cat([test.video[:n_v], test.text[:n_t]]),
                                metadata=[f"video {v.video_id}" for v in videos[:n_v]] + captions[:n_t],
                                global_step=state["step"], tag=f"{d.test_split}_embeddings")
    tb.close()
    write_index(out / "export", [v.video_id for v in videos], [v.path for v in videos], test.video.float().numpy(),
                bias.float().numpy(), tau, captions, [videos[int(i)].video_id for i in test.caption_to_video],
                {"checkpoint": checkpoint, "bank": e.bank, "bank_source": e.bank_source, "n_iters": e.n_iters,
                 "split": d.test_split}, text_embeddings=test.text.float().numpy(),
                extra={m: diag[f"t2v_{m}_bias"].float().numpy() for m in PER_ITEM_METHODS if f"t2v_{m}_bias" in diag})
    from ncl_ray.ui.summary import report

    bank_label = "test queries (transductive)" if e.bank != "train" else f"training-query bank ({e.bank_source})"
    shown = out
    if storage.is_uri(target):
        storage.upload(str(out), target)
        shutil.rmtree(out, ignore_errors=True)
        shown = target
    print(report(cfg.run.name, {f"test/{k}": v for k, v in metrics.items()}, methods, split=d.test_split,
                 bank=e.bank, n_iters=int(state["config"]["ncl"]["n_iters"]), queue=cfg.ncl.queue_size,
                 n_videos=len(test.video), n_captions=len(test.text), tested=checkpoint,
                 why=f"ncl-ray eval; ncl/qbnorm biases from the {bank_label}", decoded=cache.decoded,
                 skipped=len(cache.skipped), results=f"{shown}/metrics.json", run_dir=str(shown),
                 protocol=cfg.train.protocol))
    print(f"wrote {shown}/metrics.json, retrieval_mass.png, recall.png, tensorboard/, export/ "
          f"(ncl-ray search --index {shown}/export \"your query\")")
    return 0
