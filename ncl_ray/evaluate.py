"""Evaluation: embed a split, score t2v and v2t with every test-time normalisation, report metrics.

    ncl-ray eval runs/NAME/checkpoint_.../ [eval.bank=test ...]

`embed_batches` and `evaluate_embeddings` are plain torch (the training loop calls them on rank 0);
`main` is the standalone command. Similarities are computed in blocks of `eval.chunk_size` queries.
Metric names: `<method>/t2v_R@1`, `<method>/v2t_R@1` (strict: each caption against the non-matching ones),
`<method>/v2t_lenient_R@1` (best caption per video, CLIP4Clip's protocol), `<method>/t2v_norm_error`,
`t2v_norm_error_before`.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import torch

from ncl_ray.data.transforms import normalize_frames
from ncl_ray.ncl.normalize import Sims, make_scorer
from ncl_ray.retrieval import direction_metrics, normalization_errors

log = logging.getLogger(__name__)
KEYS = ("R@1", "R@5", "R@10", "MdR", "MnR")


@dataclass
class Embeddings:
    video: torch.Tensor  # (V, D) unit norm, row i = video with index i of the split
    text: torch.Tensor  # (C, D) every caption of every video
    caption_to_video: torch.Tensor  # (C,) row of `video` each caption belongs to


@torch.no_grad()
def embed_batches(model, batches: Iterable[Dict[str, torch.Tensor]], device: torch.device,
                  amp_dtype: Optional[torch.dtype] = None) -> Embeddings:
    """Embed batches of split rows (frames, tokens, n_captions, index) with a VideoCLIP."""
    model.eval()
    videos, texts, owners, indices = [], [], [], []
    for batch in batches:
        frames = normalize_frames(batch["frames"].to(device))  # (b, T, 3, H, W)
        tokens, n = batch["tokens"].to(device), batch["n_captions"].to(device)  # (b, K, L), (b,)
        valid = torch.arange(tokens.shape[1], device=device)[None, :] < n[:, None]  # (b, K)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            videos.append(model.encode_video(frames).float().cpu())
            texts.append(model.encode_text(tokens[valid]).float().cpu())  # (sum n, D)
        idx = batch["index"].cpu()
        indices.append(idx)
        owners.append(idx.repeat_interleave(n.cpu()))
    if not videos:
        raise ValueError("nothing to embed: the split is empty")
    index = torch.cat(indices)
    order = index.argsort()
    position = torch.empty(int(index.max()) + 1, dtype=torch.long)
    position[index[order]] = torch.arange(len(index))
    return Embeddings(torch.cat(videos)[order], torch.cat(texts), position[torch.cat(owners)])


def evaluate_embeddings(emb: Embeddings, temperature: float, methods: Sequence[str] = ("none", "ncl"),
                        bank_text: Optional[torch.Tensor] = None, bank_video: Optional[torch.Tensor] = None,
                        bank: str = "train", n_iters: int = 10, chunk_size: int = 4096,
                        qbnorm_beta: float = 20.0, qbnorm_k: int = 1) -> Dict[str, float]:
    """Flat metric dict for t2v and v2t under each method.

    Args:
        emb: test embeddings.
        temperature: tau of the model (logits = similarity / tau).
        bank_text, bank_video: (R, D) training queries (e.g. the loss's queues) for bank = train / train+test.
    """
    if bank != "test" and any(m in ("ncl", "qbnorm") for m in methods):
        if bank_text is None or len(bank_text) == 0 or bank_video is None or len(bank_video) == 0:
            log.warning("no training-query bank (queue empty): test-time biases use the test queries")
            bank = "test"
    directions = {
        "t2v": (emb.text, emb.video, bank_text, {"target": emb.caption_to_video}),
        "v2t": (emb.video, emb.text, bank_video, {"owner": emb.caption_to_video}),
    }
    out: Dict[str, float] = {}
    for name, (queries, gallery, train_queries, truth) in directions.items():
        test = Sims.embeddings(queries, gallery, chunk_size)
        parts = {"train": [train_queries], "test": [queries], "train+test": [train_queries, queries]}[bank]
        bank_sims = Sims.stack([Sims.embeddings(p, gallery, chunk_size) for p in parts]) \
            if any(m in ("ncl", "qbnorm") for m in methods) else None
        for method in methods:
            scorer = make_scorer(method, test, temperature, bank_sims, n_iters, qbnorm_beta, qbnorm_k)
            result = direction_metrics(test, scorer, **truth)
            for protocol, metrics in result.items():
                tag = name if protocol == "strict" else f"{name}_{protocol}"
                out.update({f"{method}/{tag}_{k}": v for k, v in metrics.items()})
            if name == "t2v":
                errors = normalization_errors(test, scorer, temperature)
                out["t2v_norm_error_before"] = errors["before"]
                out[f"{method}/t2v_norm_error"] = errors["after"]
    out["bank_is_test"] = float(bank != "train")
    return out


def format_results(metrics: Dict[str, float], methods: Sequence[str], prefix: str = "") -> str:
    """A table: one row per method, t2v and v2t R@1/5/10, MdR, MnR."""
    head = f"{'method':8s} | " + " ".join(f"{'t2v ' + k:>9s}" for k in KEYS) + " | " + \
        " ".join(f"{'v2t ' + k:>9s}" for k in KEYS)
    lines = [head, "-" * len(head)]
    for m in methods:
        t = [metrics.get(f"{prefix}{m}/t2v_{k}", float("nan")) for k in KEYS]
        v = [metrics.get(f"{prefix}{m}/v2t_{k}", float("nan")) for k in KEYS]
        lines.append(f"{m:8s} | " + " ".join(f"{x:9.2f}" for x in t) + " | " + " ".join(f"{x:9.2f}" for x in v))
    ne = metrics.get(f"{prefix}t2v_norm_error_before")
    if ne is not None:
        after = ", ".join(f"{m} {metrics.get(f'{prefix}{m}/t2v_norm_error', float('nan')):.3f}" for m in methods)
        lines.append(f"t2v normalisation error: before {ne:.3f}; after: {after}")
    return "\n".join(lines)


def main(checkpoint: str, overrides: List[str]) -> int:
    """`ncl-ray eval CHECKPOINT [key=value ...]`: evaluate a checkpoint on its config's test split."""
    import ray

    from ncl_ray.checkpoint import load_checkpoint
    from ncl_ray.config import from_dict, load_config, save_config
    from ncl_ray.data.pipeline import build_clip_cache, load_entries, split_dataset
    from ncl_ray.model.clip import build_model_from_config
    from ncl_ray.ncl.loss import NCLLoss
    from ncl_ray.tracking import MetricLogger

    state = load_checkpoint(checkpoint)
    base = from_dict(state["config"])
    tmp = Path(checkpoint) / "config.yaml"
    cfg = load_config(str(tmp), list(overrides)) if overrides else base
    model = build_model_from_config(cfg)
    model.load_state_dict(state["model"])
    loss_fn = NCLLoss(model.embed_dim, cfg.ncl.queue_size, cfg.ncl.n_iters)
    loss_fn.load_state_dict(state["loss"])
    if not ray.is_initialized():
        ray.init()
    d = cfg.data
    entries = load_entries(d.dataset, d.root, d.manifest, d.synthetic_videos)
    cache = build_clip_cache(entries, d.num_frames, d.frame_size, d.cache_dir, d.decode_threads,
                             d.decode_concurrency)
    ds = split_dataset(cache, entries, d.test_split, d.max_captions, d.max_words)
    emb = embed_batches(model, ds.iter_torch_batches(batch_size=64), torch.device("cpu"))
    e = cfg.eval
    metrics = evaluate_embeddings(emb, float(1.0 / model.logit_scale.exp().clamp(max=100)), list(e.methods),
                                  loss_fn.text_queue.embeddings, loss_fn.video_queue.embeddings, e.bank,
                                  e.n_iters, e.chunk_size, e.qbnorm_beta, e.qbnorm_k)
    metrics["skipped_videos"] = float(len(cache.skipped))
    out = Path(checkpoint) / "eval"
    out.mkdir(exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    save_config(cfg, str(out / "config.yaml"))
    tb = MetricLogger(str(out / "tensorboard"))
    tb.log_dict({f"test/{k}": v for k, v in metrics.items()}, state["step"])
    tb.close()
    bank_label = "test queries" if e.bank != "train" else "training-query bank"
    print(f"test split '{d.test_split}': {len(emb.video)} videos, {len(emb.text)} captions; "
          f"ncl/qbnorm biases from the {bank_label}; dsl uses test queries")
    print(format_results(metrics, list(e.methods)))
    print(f"wrote {out / 'metrics.json'}")
    return 0
