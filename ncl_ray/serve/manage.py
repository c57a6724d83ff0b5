"""`ncl-ray index list | remove | rollback`: look after a served gallery without Ray.

    ncl-ray index list RUN [--videos]         # versions (CURRENT marked), each with its changelog line
    ncl-ray index remove RUN ID [ID ...]      # a new version without those videos
    ncl-ray index rollback RUN [VERSION]      # a new version equal to VERSION (default: the one before CURRENT)

Every change is a new version (versions.py), so a rollback can itself be rolled back and a running server picks
any of them up with POST /reload. Removing videos changes the gallery, so its NCL biases are recomputed from the
checkpoint's training-query bank over the videos that stay (Sinkhorn's biases depend on the whole gallery, dbsn's
too); the other per-item methods' biases depend on each video alone and are kept as they were.
"""

import hashlib
import logging
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ncl_ray.evaluation.export import IndexFiles, read_index
from ncl_ray.serve.versions import (carried_meta, changelog, current, home_of, refresh, versions, write_files,
                                    write_version, writer)

log = logging.getLogger("ncl_ray.index")


def file_hash(path: str) -> str:
    """SHA-256 of a file's bytes (fingerprint's first half)."""
    return fingerprint(path)[0]


def fingerprint(path: str, chunk: int = 1 << 20) -> Tuple[str, Tuple[int, int, int, int]]:
    """(SHA-256 of a file's bytes, read in 1 MiB chunks, the file's identity) from one descriptor, opened without
    following a final link: the same video under two names is found by the hash, and the server opens only
    a file that still has the identity."""
    import os

    from ncl_ray.serve.files import identity_of

    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        before = os.fstat(fd)
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
        return h.hexdigest(), identity_of(before)


class Bank(NamedTuple):
    """A checkpoint's training-query bank (Q, D), its training videos (G, D: dbnorm's and dbsn's gallery bank) and
    its eval settings: what every served bias comes from."""
    queries: object  # torch.Tensor (Q, D)
    eval: object  # the checkpoint's EvalConfig
    videos: object = None  # torch.Tensor (G, D)


def training_bank(state: dict) -> Bank:
    """The bank of a loaded checkpoint state (load it once: a checkpoint with optimizer state is large)."""
    from ncl_ray.config.schema import from_dict

    loss = state["loss"]
    return Bank(loss["text_queue.queue"][: int(loss["text_queue.filled"])].float(), from_dict(state["config"]).eval,
                loss["video_queue.queue"][: int(loss["video_queue.filled"])].float())


def held_out_rows(hashes: Sequence[str]) -> np.ndarray:
    """(C,) bool: the rows an evaluation exported (the test split: no file hash), not added by a user."""
    return np.array([not h for h in hashes], bool)


def bank_biases(bank: Bank, gallery: np.ndarray, temperature: float, methods: Sequence[str] = ("ncl",),
                held_out: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """Per-item biases (C,) on the logit scale of `gallery` (C, D) for each method, from the training-query bank
    (and for dbnorm and dbsn the gallery bank eval.gallery_bank names) and its eval settings: each method's fold
    bias, as `ncl-ray eval` computes it (zeros, with a warning, when the checkpoint holds no bank). With
    `held_out` (C,) bool, the rows not held out (added by a user) keep at most a typical held-out row's lift
    (ncl/added_cap.py)."""
    import torch

    from ncl_ray.ncl import added_cap
    from ncl_ray.ncl.normalize import GalleryBank, Sims, make_scorer, settings_from

    e = bank.eval
    if not len(bank.queries) or not len(gallery):
        if not len(bank.queries):
            log.warning("the checkpoint holds no training-query bank: the served biases are zero")
        return {m: np.zeros(len(gallery), np.float32) for m in methods}
    g = torch.from_numpy(np.asarray(gallery, np.float32))  # (C, D)
    sims = lambda a, b: Sims.embeddings(a, b, e.chunk_size, e.memory_mb, e.workers)  # noqa: E731
    items = g if bank.videos is None or not len(bank.videos) or e.gallery_bank == "gallery" else bank.videos
    gallery_bank = GalleryBank(sims(items, g), sims(bank.queries, items))
    test = sims(bank.queries, g)  # the per-item biases do not read the test queries: the bank stands in
    out = {}
    for m in methods:
        scorer = make_scorer(m, test, temperature, test, settings_from(e), gallery_bank)
        if not hasattr(scorer, "fold_bias"):
            raise ValueError(f"{m} with these settings has no per-item bias to serve "
                             f"(dbnorm: eval.dbnorm_variant=static)")
        bias = scorer.fold_bias.float()  # (C,)
        out[m] = (bias if held_out is None else added_cap.cap_added(bias, torch.from_numpy(held_out))).numpy()
    return out


def new_biases(bank: Bank, old_gallery: np.ndarray, old_extra: Dict[str, np.ndarray], keep: List[int],
               added: np.ndarray, temperature: float,
               held_out: Optional[np.ndarray] = None) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """Biases of a changed gallery (the `keep` rows of the old one, then `added` (A, D)): ncl's and every method's
    of `old_extra` recomputed over all of it. Sinkhorn's (ncl, dbsn) depend on the whole gallery; the others on
    each item's own column, so an old row's bias does not change, but the cap on added rows (`held_out`: (C,)
    bool over the old rows; the added are not) is the new gallery's."""
    gallery = np.concatenate([old_gallery[keep], added]) if len(added) else old_gallery[keep]
    mask = None if held_out is None else np.concatenate([np.asarray(held_out, bool)[keep], np.zeros(len(added), bool)])
    out = bank_biases(bank, gallery, temperature, ["ncl", *old_extra], mask)
    return out.pop("ncl"), out


def _home(checkpoint: str) -> Path:
    home = home_of(checkpoint)
    refresh(home)
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
        windows: Dict[str, int] = {}
        for v in f.video_ids:
            windows[v] = windows.get(v, 0) + 1
        paths = dict(zip(f.video_ids, f.paths))
        lines += [f"  {v}\t{paths[v]}\t{len(f.captions.get(v, []))} captions"
                  + (f"\t{n} windows" if n > 1 else "") for v, n in windows.items()]
    return lines


def remove_videos(checkpoint: str, ids: Sequence[str]) -> Path:
    """A new version without `ids` (every one must be in the current version), biases recomputed."""
    home = _home(checkpoint)
    from ncl_ray.runtime.checkpoint import load_checkpoint

    bank = training_bank(load_checkpoint(checkpoint))
    with writer(home, f"index remove {' '.join(ids)[:80]}"):
        f = read_index(current(home))
        missing = [v for v in ids if v not in f.video_ids]
        if missing:
            raise ValueError(f"not in the current index ({current(home).name}): {', '.join(missing[:5])}")
        gone = set(ids)
        keep = [i for i, v in enumerate(f.video_ids) if v not in gone]  # every window of a removed video goes
        ncl, extra = new_biases(bank, f.embeddings, f.extra, keep, np.zeros((0, f.embeddings.shape[1])),
                                f.temperature, held_out_rows(f.hashes))
        kept = IndexFiles.gallery([f.video_ids[i] for i in keep], [f.paths[i] for i in keep], f.embeddings[keep],
                                  ncl, f.temperature, {v: c for v, c in f.captions.items() if v not in gone},
                                  carried_meta(f.meta), hashes=[f.hashes[i] for i in keep], extra=extra,
                                  spans=f.spans[keep], identities=f.identities[keep],
                                  durations=f.durations[keep], added=f.added[keep])
        return write_version(home, kept, f"remove {len(ids)}: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}")


def rollback(checkpoint: str, version: Optional[str] = None) -> Path:
    """A new version equal to `version` (default: the one before CURRENT)."""
    home = _home(checkpoint)
    with writer(home, f"index rollback {version or ''}"):
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
