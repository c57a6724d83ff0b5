"""Evaluation: embed a split, score t2v and v2t with every test-time normalisation, report metrics.

    ncl-ray eval runs/NAME/checkpoint_.../ [eval.bank=test ...]

`embed_batches` and `evaluate_embeddings` are plain torch (the training loop calls them on rank 0);
`main` is the standalone command. Similarities are computed in blocks of `eval.chunk_size` queries.
Metric names: `<method>/t2v_R@1`, `<method>/v2t_R@1` (strict: each caption against the non-matching ones),
`<method>/v2t_lenient_R@1` (best caption per video, CLIP4Clip's protocol), `<method>/t2v_norm_error`,
`t2v_norm_error_before`.
"""

import logging
import time
from dataclasses import dataclass, replace
from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch

from ncl_ray.data.transforms import frame_mask, normalize_frames
from ncl_ray.ncl.methods import BANK_METHODS, GALLERY_BANK_METHODS
from ncl_ray.ncl.normalize import (MEMORY_MB, GalleryBank, MethodSettings, Sims, make_scorer, rows_per_block,
                                   settings_from)
from ncl_ray.evaluation.retrieval import direction_metrics, normalization_errors

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    video: torch.Tensor  # (V, D) unit norm, row i = video with index i of the split
    text: torch.Tensor  # (C, D) every caption of every video
    caption_to_video: torch.Tensor  # (C,) row of `video` each caption belongs to


@torch.no_grad()
def embed_rows(model, batch: Dict[str, torch.Tensor], device: torch.device,
               amp_dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
    """One batch of split rows -> video (b, D), text (b, K, D) (zero rows past n_captions), n_captions, index."""
    frames = normalize_frames(batch["frames"].to(device, non_blocking=True), amp_dtype)  # (b, T, 3, H, W)
    tokens, n = batch["tokens"].to(device), batch["n_captions"].to(device)  # (b, K, L), (b,)
    b, K = tokens.shape[:2]
    valid = torch.arange(K, device=device)[None, :] < n[:, None]  # (b, K)
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        video = model.encode_video(frames, frame_mask(batch, device)).float()  # (b, D)
        text_valid = model.encode_text(tokens[valid]).float()  # (sum n, D)
    text = torch.zeros(b, K, video.shape[1], device=device)
    text[valid] = text_valid
    return {"video": video.cpu(), "text": text.cpu(), "n_captions": n.cpu(), "index": batch["index"].cpu()}


def assemble(rows: Dict[str, torch.Tensor]) -> Embeddings:
    """Concatenated `embed_rows` outputs -> Embeddings in split order (video i = split index i)."""
    index = rows["index"].long()
    if index.numel() == 0:
        raise ValueError("nothing to embed: the split is empty")
    order = index.argsort()
    n = rows["n_captions"].long()[order]  # (V,)
    text = rows["text"][order]  # (V, K, D)
    valid = torch.arange(text.shape[1])[None, :] < n[:, None]  # (V, K)
    owner = torch.arange(len(order)).repeat_interleave(n)  # (C,) row of the caption's video
    return Embeddings(rows["video"][order], text[valid], owner)


def embed_batches(model, batches: Iterable[Dict[str, torch.Tensor]], device: torch.device,
                  amp_dtype: Optional[torch.dtype] = None) -> Embeddings:
    """Embed batches of split rows (frames, tokens, n_captions, index) with a VideoCLIP, in one process."""
    model.eval()
    parts = [embed_rows(model, b, device, amp_dtype) for b in batches]
    if not parts:
        raise ValueError("nothing to embed: the split is empty")
    return assemble({k: torch.cat([p[k] for p in parts]) for k in parts[0]})


def bank_similarities(bank: str, train_queries: Optional[torch.Tensor], test_queries: torch.Tensor,
                      gallery: torch.Tensor, chunk_size: int = 0, memory_mb: float = MEMORY_MB,
                      workers: int = 0) -> Sims:
    """Similarities of the bank's queries (training, test or both) with the gallery, in blocks."""
    parts = {"train": [train_queries], "test": [test_queries], "train+test": [train_queries, test_queries]}[bank]
    return Sims.stack([Sims.embeddings(p, gallery, chunk_size, memory_mb, workers) for p in parts])


@dataclass(frozen=True)
class Compute:
    """How similarities are computed: rows per block (0 = from the byte budget), the budget, Sinkhorn threads."""
    chunk_size: int = 0
    memory_mb: float = MEMORY_MB
    workers: int = 0


def eval_settings(e) -> Tuple[MethodSettings, Compute]:
    """The config's `eval` section as the methods' settings and the compute budget (the builder: below it, plain
    values)."""
    return settings_from(e), Compute(e.chunk_size, e.memory_mb, e.workers)


@dataclass(frozen=True)
class Banks:
    """Where the methods' statistics come from: training embeddings (`text` (R, D), `video` (R, D): the loss's
    queues or embedded captions), the query bank's source (eval.bank: train | test | train+test) and the gallery
    bank's (eval.gallery_bank: train = the other modality's training items | gallery = the test gallery)."""
    text: Optional[torch.Tensor] = None
    video: Optional[torch.Tensor] = None
    queries: str = "train"
    gallery: str = "train"


@dataclass
class Direction:
    """One retrieval direction's inputs: test similarities, the bank's, the gallery bank and the ground truth."""
    test: Sims
    bank: Optional[Sims]
    gallery_bank: Optional[GalleryBank]
    truth: Dict[str, torch.Tensor]


def query_bank_source(methods: Sequence[str], banks: Banks) -> str:
    """eval.bank, or test (with a warning) when a method needs a training bank and there is none."""
    empty = any(b is None or not len(b) for b in (banks.text, banks.video))
    if banks.queries != "test" and empty and any(m in BANK_METHODS for m in methods):
        log.warning("no training-query bank (queue empty): test-time biases use the test queries")
        return "test"
    return banks.queries


def directions(emb: Embeddings, methods: Sequence[str], banks: Banks, c: Compute) -> Dict[str, Direction]:
    """t2v (captions against videos) and v2t (videos against captions), with the banks `methods` need."""
    source, need_bank = query_bank_source(methods, banks), any(m in BANK_METHODS for m in methods)
    sims = lambda q, g: Sims.embeddings(q, g, c.chunk_size, c.memory_mb, c.workers)  # noqa: E731
    out = {}
    for name, queries, gallery, own, other, truth in (
            ("t2v", emb.text, emb.video, banks.text, banks.video, {"target": emb.caption_to_video}),
            ("v2t", emb.video, emb.text, banks.video, banks.text, {"owner": emb.caption_to_video})):
        bank = bank_similarities(source, own, queries, gallery, c.chunk_size, c.memory_mb, c.workers) \
            if need_bank else None
        gallery_bank = None
        if any(m in GALLERY_BANK_METHODS for m in methods):
            items = gallery if banks.gallery == "gallery" or other is None or not len(other) else other
            gallery_bank = GalleryBank(sims(items, gallery),
                                       bank_similarities(source, own, queries, items, c.chunk_size, c.memory_mb,
                                                         c.workers))
        out[name] = Direction(sims(queries, gallery), bank, gallery_bank, truth)
    return out


def evaluate_embeddings(emb: Embeddings, temperature: float, methods: Sequence[str] = ("none", "ncl"),
                        banks: Optional[Banks] = None, settings: Optional[MethodSettings] = None,
                        store: Optional[Dict[str, torch.Tensor]] = None, compute: Optional[Compute] = None,
                        **fields) -> Dict[str, float]:
    """Flat metric dict for t2v and v2t under each method.

    Args:
        emb: test embeddings.
        temperature: tau of the model (logits = similarity / tau).
        banks: the training embeddings the banks are drawn from and the banks' sources.
        settings: the methods' settings; `fields` replace single ones by name (n_iters=5).
        compute: rows per similarity block (0 = derived from memory_mb for each gallery), the byte budget of
            the blocks in flight, and threads for the bank's Sinkhorn pass.
        store: if given, receives t2v diagnostics: `t2v_mass_before`, `<method>/t2v_mass` (C,) and
            `t2v_<method>_bias` (C,) of each per-item method (logit scale), for plots and the export.
    """
    settings = replace(settings or MethodSettings(), **fields)
    banks, c = banks or Banks(), compute or Compute()
    out: Dict[str, float] = {}
    parts = directions(emb, methods, banks, c)
    for name, d in parts.items():
        for method in methods:
            started = time.perf_counter()
            scorer = make_scorer(method, d.test, temperature, d.bank, settings, d.gallery_bank)
            result = direction_metrics(d.test, scorer, **d.truth)
            spent = time.perf_counter() - started  # the method's statistics, scoring and ranking, both directions
            out[f"{method}/time_s"] = out.get(f"{method}/time_s", 0.0) + spent
            for protocol, metrics in result.items():
                tag = name if protocol == "strict" else f"{name}_{protocol}"
                out.update({f"{method}/{tag}_{k}": v for k, v in metrics.items()})
            if name == "t2v":
                masses: Dict[str, torch.Tensor] = {}
                errors = normalization_errors(d.test, scorer, temperature, masses)
                out["t2v_norm_error_before"] = errors["before"]
                out[f"{method}/t2v_norm_error"] = errors["after"]
                if store is not None:
                    store["t2v_mass_before"], store[f"{method}/t2v_mass"] = masses["before"], masses["after"]
                    if hasattr(scorer, "fold_bias"):  # per-item methods: what a served index folds in
                        store[f"t2v_{method}_bias"] = scorer.fold_bias
    out["bank_is_test"] = float(query_bank_source(methods, banks) != "train")
    out["t2v_hub_share"] = hub_share(emb.text, emb.video, c.chunk_size or rows_per_block(len(emb.video), c.memory_mb))
    return out


@torch.no_grad()
def hub_share(text: torch.Tensor, video: torch.Tensor, chunk_size: int = 4096) -> float:
    """Share of gallery videos (percent) that are the plain top-1 of more than twice their fair number of
    captions (2 R / C): how hub-dominated the plain ranking is."""
    counts = torch.zeros(len(video))
    for start in range(0, len(text), chunk_size):
        top = (text[start: start + chunk_size].float() @ video.float().T).argmax(dim=1)  # (r,)
        counts += torch.bincount(top, minlength=len(video)).float()
    return 100.0 * float((counts > 2.0 * len(text) / len(video)).float().mean())


class Embedder:
    """Ray Data batch-inference actor: a checkpoint's model on a CPU or GPU, embedding split rows."""

    def __init__(self, checkpoint: str, use_gpu: bool = False):
        from ncl_ray.runtime.checkpoint import load_model

        from ncl_ray.model.compile import compile_mode, compile_model

        self.model, cfg, _ = load_model(checkpoint)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        mode = compile_mode(cfg.train.compile, self.device)  # as training runs it: compiled on GPUs by default
        if mode:
            compile_model(self.model, mode=mode)
        self.amp = torch.float16 if self.device.type == "cuda" else None

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        rows = embed_rows(self.model, {k: torch.from_numpy(np.array(v)) for k, v in batch.items()},
                          self.device, self.amp)
        return {k: v.numpy() for k, v in rows.items()}


def embed_dataset(ds, checkpoint: str, use_gpu: bool, batch_size: int = 64) -> Embeddings:
    """Embed a split with a pool of model actors (Ray Data batch inference); gather to the driver.

    The pool is sized from the resources free now, leaving one CPU for the read tasks that feed it
    (`cluster.actor_pool`); it starts full and may shrink to one, so a small split in one block does not warn.
    """
    import ray.data

    from ncl_ray.runtime.cluster import actor_pool, map_with_pool

    actors, cpus = actor_pool(use_gpu)
    out = map_with_pool(ds, Embedder, fn_constructor_kwargs={"checkpoint": checkpoint, "use_gpu": use_gpu},
                         batch_size=batch_size,
                         compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors, initial_size=actors),
                         num_gpus=1 if use_gpu else 0, num_cpus=cpus)
    parts = list(out.iter_torch_batches(batch_size=None))
    return assemble({k: torch.cat([p[k] for p in parts]) for k in ("video", "text", "n_captions", "index")})
