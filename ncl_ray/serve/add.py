"""`ncl-ray index add RUN_OR_CHECKPOINT PATH_OR_MANIFEST`: embed new videos with the trained model and add them
to the served gallery.

PATH_OR_MANIFEST is a video file, a folder of videos (ids = file names) or a manifest (CSV/JSONL: captions are
kept for display). Videos are decoded with the training decoder and embedded by a pool of model actors (Ray Data
batch inference); missing or corrupt ones are reported and skipped. The NCL gallery biases depend on the whole
gallery, so they are recomputed over old + new videos from the checkpoint's training-query bank; the result is
written as a new index version (atomically); a running server picks it up with POST /reload.
"""

import logging
from pathlib import Path
from typing import Dict, List

import numpy as np

from ncl_ray.data.manifest import VIDEO_EXTENSIONS, VideoEntry, read_manifest
from ncl_ray.serve.guard import valid_video_id

log = logging.getLogger("ncl_ray.index")


def read_inputs(path: str) -> List[VideoEntry]:
    """The videos to add, with ids (file names without extension, or the manifest's) checked: the ids are shown
    on the search page and in URLs, so only letters, digits, spaces and . , ( ) + - _ are accepted, <= 128."""
    p = Path(path)
    if p.suffix in (".csv", ".jsonl", ".json"):
        entries = read_manifest(str(p))
    elif p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_EXTENSIONS)
        if not files:
            raise FileNotFoundError(f"{path}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
        entries = [VideoEntry(f.stem, str(f.absolute()), "added", []) for f in files]
    elif p.is_file():
        entries = [VideoEntry(p.stem, str(p.absolute()), "added", [])]
    else:
        raise FileNotFoundError(f"no such video, folder or manifest: {path}")
    bad = [e for e in entries if not valid_video_id(e.video_id)]
    if bad:
        raise ValueError(f"{path}: video id {bad[0].video_id[:80]!r} ({bad[0].path}) is not allowed: ids may hold "
                         f"letters, digits, spaces and . , ( ) + - _ only, at most 128 characters"
                         + (f" ({len(bad)} such ids)" if len(bad) > 1 else ""))
    return entries


class VideoEmbedder:
    """Ray Data actor: decode each video like training did and embed it; failures come back as errors."""

    def __init__(self, checkpoint: str):
        import torch

        from ncl_ray.runtime.checkpoint import load_model

        self.model, self.cfg, _ = load_model(checkpoint)
        self.torch = torch

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        from ncl_ray.data.decode import DecodeError, decode_video
        from ncl_ray.data.transforms import normalize_frames

        d = self.cfg.data
        emb, errors = [], []
        for path in batch["path"]:
            try:  # the frames and resize the model was trained with (data.sampler, data.resize)
                frames, n = decode_video(str(path), d.num_frames, d.frame_size, 1, d.sampler, d.resize)
                with self.torch.no_grad():
                    x = normalize_frames(self.torch.from_numpy(frames[None]))  # (1, T, 3, S, S)
                    mask = self.torch.arange(d.num_frames)[None] < n  # (1, T)
                    emb.append(self.model.encode_video(x, mask)[0].float().numpy())
                errors.append("")
            except DecodeError as e:
                emb.append(np.zeros(self.model.embed_dim, np.float32))
                errors.append(e.reason)
        return {"video_id": batch["video_id"], "path": batch["path"], "embedding": np.stack(emb),
                "error": np.array(errors, dtype=object)}


def add_videos(target: str, inputs: str, overrides: List[str]) -> int:
    import ray.data
    import torch

    from ncl_ray.runtime.checkpoint import load_checkpoint
    from ncl_ray.runtime.cluster import actor_pool, init_ray
    from ncl_ray.config.schema import from_dict
    from ncl_ray.runtime.checkpoint import resolve_checkpoint
    from ncl_ray.ncl.normalize import Sims, ncl_gallery_bias
    from ncl_ray.serve.launch import ensure_index
    from ncl_ray.serve.index import GalleryIndex
    from ncl_ray.serve.versions import write_version

    checkpoint = resolve_checkpoint(target)
    entries = read_inputs(inputs)  # before Ray starts
    state = load_checkpoint(checkpoint)
    cfg = from_dict(state["config"])
    init_ray(cfg.run.ray_address, verbose=cfg.run.verbose)
    home = ensure_index(checkpoint, overrides)
    old = GalleryIndex.load(str(home))
    fresh = [e for e in entries if e.video_id not in old.row_of]
    if len(fresh) < len(entries):
        log.warning("%d video(s) already in the index, left as they are", len(entries) - len(fresh))
    if not fresh:
        print(f"nothing to add: every video is already in {home}")
        return 0
    actors, cpus = actor_pool(False)
    ds = ray.data.from_items([{"video_id": e.video_id, "path": e.path} for e in fresh])
    out = ds.map_batches(VideoEmbedder, fn_constructor_kwargs={"checkpoint": checkpoint}, batch_size=4,
                         compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors, initial_size=1),
                         num_cpus=cpus).take_all()
    good = [r for r in out if not r["error"]]
    for r in out:
        if r["error"]:
            log.warning("skipped %s: %s: %s", r["video_id"], r["path"], r["error"])
    if not good:
        print(f"error: none of the {len(out)} videos could be decoded", flush=True)
        return 2
    ids = old.video_ids + [r["video_id"] for r in good]
    paths = old.paths + [r["path"] for r in good]
    gallery = np.concatenate([old.plain, np.stack([r["embedding"] for r in good])]).astype(np.float32)
    loss = state["loss"]
    bank = loss["text_queue.queue"][: int(loss["text_queue.filled"])].float()
    tau = old.temperature
    if len(bank):
        bias = ncl_gallery_bias(Sims.embeddings(bank, torch.from_numpy(gallery), cfg.eval.chunk_size,
                                                cfg.eval.memory_mb, cfg.eval.workers), tau, cfg.eval.n_iters).numpy()
    else:
        log.warning("the checkpoint holds no training-query bank: NCL biases are zero")
        bias = np.zeros(len(ids), np.float32)
    captions = dict(old.captions)
    for e in fresh:
        if e.captions:
            captions[e.video_id] = e.captions
    version = write_version(home, ids, paths, gallery, bias, tau, captions,
                            {**{k: v for k, v in old.meta.items() if k not in ("temperature", "dim", "videos",
                                                                            "version")},
                             "bank": "train", "added": len(good)})
    print(f"added {len(good)} video(s), skipped {len(out) - len(good)}; {len(ids)} videos in {version} "
          f"(NCL biases recomputed over the whole gallery); a running server loads it on POST /reload")
    return 0
