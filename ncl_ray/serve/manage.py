"""`ncl-ray index list | remove | rollback`: look after a served gallery without Ray.

    ncl-ray index list RUN [--videos]         # versions (CURRENT marked), each with its changelog line
    ncl-ray index remove RUN ID [ID ...]      # a new version without those videos
    ncl-ray index rollback RUN [VERSION]      # a new version equal to VERSION (default: the one before CURRENT)

Every change is a new version (versions.py), so a rollback can itself be rolled back and a running server picks
any of them up with POST /reload. Removing videos changes the gallery, so its NCL biases are recomputed from the
checkpoint's training-query bank over the videos that stay (Sinkhorn's biases depend on the whole gallery).
"""

import hashlib
import logging
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ncl_ray.evaluation.export import read_index
from ncl_ray.serve.versions import changelog, current, home_of, versions, write_files, write_version

log = logging.getLogger("ncl_ray.index")


def file_hash(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks: the same video under two names is found by it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def bank_biases(checkpoint: str, gallery: np.ndarray, temperature: float) -> np.ndarray:
    """NCL gallery biases (C,) of `gallery` (C, D) from the checkpoint's training-query bank (zeros, with a
    warning, when the checkpoint holds none)."""
    import torch

    from ncl_ray.config.schema import from_dict
    from ncl_ray.ncl.normalize import Sims, ncl_gallery_bias
    from ncl_ray.runtime.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    e = from_dict(state["config"]).eval
    loss = state["loss"]
    bank = loss["text_queue.queue"][: int(loss["text_queue.filled"])].float()  # (Q, D)
    if not len(bank) or not len(gallery):
        if not len(bank):
            log.warning("the checkpoint holds no training-query bank: NCL biases are zero")
        return np.zeros(len(gallery), np.float32)
    sims = Sims.embeddings(bank, torch.from_numpy(np.asarray(gallery, np.float32)), e.chunk_size, e.memory_mb,
                           e.workers)
    return ncl_gallery_bias(sims, temperature, e.n_iters).numpy()


def _home(checkpoint: str) -> Path:
    home = home_of(checkpoint)
    if current(home) is None:
        raise FileNotFoundError(f"{checkpoint}: no served index yet (ncl-ray serve or ncl-ray index add makes one)")
    return home


def list_index(checkpoint: str, show_videos: bool = False) -> List[str]:
    """Lines for the console: each version, CURRENT marked, with its changelog line; then the current videos."""
    home = _home(checkpoint)
    live = current(home).name
    logged = {line.split()[0]: line for line in changelog(home) if line.strip()}
    lines = [f"{'*' if v == live else ' '} {logged.get(v, v)}" for v in versions(home)]
    if show_videos:
        f = read_index(current(home))
        lines += [f"  {v}\t{p}\t{len(f.captions.get(v, []))} captions" for v, p in zip(f.video_ids, f.paths)]
    return lines


def remove_videos(checkpoint: str, ids: Sequence[str]) -> Path:
    """A new version without `ids` (every one must be in the current version), biases recomputed."""
    home = _home(checkpoint)
    f = read_index(current(home))
    missing = [v for v in ids if v not in set(f.video_ids)]
    if missing:
        raise ValueError(f"not in the current index ({current(home).name}): {', '.join(missing[:5])}")
    keep = [i for i, v in enumerate(f.video_ids) if v not in set(ids)]
    gallery = f.embeddings[keep]  # (C', D)
    meta = {k: v for k, v in f.meta.items() if k not in ("temperature", "dim", "videos", "version")}
    return write_version(home, [f.video_ids[i] for i in keep], [f.paths[i] for i in keep], gallery,
                         bank_biases(checkpoint, gallery, f.temperature), f.temperature,
                         {v: c for v, c in f.captions.items() if v not in set(ids)}, meta,
                         f"remove {len(ids)}: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}",
                         [f.hashes[i] for i in keep])


def rollback(checkpoint: str, version: Optional[str] = None) -> Path:
    """A new version equal to `version` (default: the one before CURRENT)."""
    home = _home(checkpoint)
    names = versions(home)
    live = current(home).name
    if version is None:
        older = [v for v in names if v < live]
        if not older:
            raise ValueError(f"{live} is the first version: nothing to roll back to")
        version = older[-1]
    if version not in names:
        raise ValueError(f"no version {version!r} (versions: {', '.join(names)})")
    return write_files(home, read_index(home / version), f"rollback to {version}")
