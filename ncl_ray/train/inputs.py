"""Inputs of a run, checked before Ray starts, then decoded once into the clip cache.

    run_dir, entries = open_run(cfg)                  # the start train, tune and compare share (below)
    datasets, meta, cache = prepare_data(cfg, run_dir, entries)   # Ray Data: decode, cache, per-split datasets
"""

import logging
from pathlib import Path
from typing import Dict


from ncl_ray.config.rules import decode_site
from ncl_ray.config.schema import ConfigError, to_dict
from ncl_ray.runtime.runs import run_uri_of

log = logging.getLogger("ncl_ray.train.inputs")
SMALL_TEST = 100  # fewer test videos than this: R@1 moves by >= 1 point per video


def open_run(cfg, config_name: str = "config.yaml", kind: str = "run"):
    """The one start of a Ray run (train, tune, compare): inputs checked before Ray starts and before the run
    folder exists, then the folder with its config, logs/driver.log, and Ray (quiet unless run.verbose).
    Returns (run_dir, entries)."""
    from ncl_ray.runtime.cluster import init_ray
    from ncl_ray.runtime.runs import open_run_dir, remove_orphan_checkpoints
    from ncl_ray.ui.console import attach_run_log

    entries = check_inputs(cfg)
    run_dir = open_run_dir(cfg, config_name, kind=kind)
    attach_run_log(run_dir)
    remove_orphan_checkpoints(run_dir)
    log.info("%s %s in %s", kind, cfg.run.name, run_dir)
    init_ray(cfg.run.ray_address, verbose=cfg.run.verbose)
    return run_dir, entries


def check_inputs(cfg):
    """Everything that can be checked before Ray starts: the manifest (read and grouped), split sizes against
    the global batch, and a `train.resume_from` checkpoint against this config's model. Returns the entries."""
    from ncl_ray.data.cache import check_data_locations
    from ncl_ray.data.pipeline import load_entries

    d, t = cfg.data, cfg.train
    check_data_locations(cfg)  # before anything is read
    entries = load_entries(d.dataset, d.root, d.manifest, d.synthetic_videos, d.synthetic_profile,
                           cfg.train.protocol != "published")
    counts: Dict[str, int] = {}
    for e in entries:
        counts[e.split] = counts.get(e.split, 0) + 1
    where = d.manifest if d.dataset == "manifest" else d.root
    global_batch = t.batch_size * t.num_workers
    if counts.get(d.train_split, 0) < global_batch:
        raise ConfigError(f"{where}: split '{d.train_split}' has {counts.get(d.train_split, 0)} videos, fewer than "
                          f"one global batch (train.batch_size x train.num_workers = {global_batch}); splits found: "
                          f"{counts}")
    if not counts.get(d.test_split):
        raise ConfigError(f"{where}: no videos in the test split '{d.test_split}' (data.test_split); splits "
                          f"found: {counts}")
    if counts[d.test_split] < SMALL_TEST:
        log.warning("the test split has %d videos: one video is %.2f points of R@1, so differences of a few "
                    "points are noise", counts[d.test_split], 100.0 / counts[d.test_split])
    check_pretrained(cfg.model.arch, cfg.model.pretrained)
    if t.resume_from:
        from ncl_ray.model.clip import build_model_from_config
        from ncl_ray.runtime.checkpoint import load_checkpoint, load_model_weights

        state = load_checkpoint(t.resume_from)
        load_model_weights(build_model_from_config(cfg), state["model"], t.resume_from, state["config"],
                           to_dict(cfg))
    return entries


def check_pretrained(arch: str, pretrained: str) -> None:
    """Resolve `model.pretrained` once on the driver: a local file must exist; an open_clip tag must be known
    and its weights in the local cache or downloadable now (each worker would otherwise fail on its own)."""
    if not pretrained or arch == "tiny":
        return
    if Path(pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors") or "/" in pretrained:
        if not Path(pretrained).is_file():
            raise ConfigError(f"model.pretrained: weights file not found: {pretrained}")
        return
    import open_clip

    pcfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not pcfg:
        tags = ", ".join(t for a, t in open_clip.list_pretrained() if a == arch) or "none"
        raise ConfigError(f"model.pretrained: open_clip has no '{pretrained}' weights for {arch} (known: {tags})")
    try:
        path = open_clip.download_pretrained(pcfg)
    except Exception as e:
        raise ConfigError(f"model.pretrained={pretrained}: the {arch} weights are not in the local cache and "
                          f"cannot be downloaded ({type(e).__name__}); pre-fetch them on a machine with network "
                          f"(python -c \"import open_clip; open_clip.create_model('{arch}', pretrained="
                          f"'{pretrained}')\") and copy ~/.cache/huggingface to every node, or pass a local file: "
                          f"model.pretrained=/path/to/weights.pt") from None
    log.info("pretrained weights: %s", path)


def prepare_data(cfg, run_dir: Path, entries=None):
    """Decode once into the clip cache; return (datasets, meta, cache)."""
    from ncl_ray.data.decode import clip_spec
    from ncl_ray.data.pipeline import build_clip_cache, cache_rows, load_entries, split_dataset, split_videos

    d = cfg.data
    if entries is None:
        entries = load_entries(d.dataset, d.root, d.manifest, d.synthetic_videos, d.synthetic_profile,
                           cfg.train.protocol != "published")
    if d.streaming:
        return _streaming_data(cfg, run_dir, entries)
    cache = build_clip_cache(entries, clip_spec(d), d.cache_dir, d.decode_concurrency)
    n_train = len(split_videos(cache, entries, d.train_split))
    val_split = d.val_split if split_videos(cache, entries, d.val_split) else d.test_split
    if val_split != d.val_split:
        log.warning("no '%s' videos: validating on '%s'", d.val_split, d.test_split)
    global_batch = cfg.train.batch_size * cfg.train.num_workers
    store = None
    if d.samples == "pairs":  # every (video, caption) pair once per epoch, in one global permutation
        from ncl_ray.data.pairstore import build_pair_store

        store = build_pair_store(cache, split_videos(cache, entries, d.train_split), d.max_captions, d.max_words)
        steps = store.steps(global_batch)
        log.info("data.samples=pairs: %d (video, caption) pairs of %d videos: %d steps of %d per epoch",
                 int(store.n_captions.sum()), n_train, steps, global_batch)
    else:
        steps = n_train // global_batch
    if steps == 0:
        raise ConfigError(f"train split has {n_train} videos, fewer than one global batch "
                          f"(train.batch_size x train.num_workers = {global_batch})")
    mode = data_mode(cfg, cache)
    splits = (("train", d.train_split), ("val", val_split), ("test", d.test_split))
    site = decode_site(cfg)  # training clips decoded in Ray Data's tasks, or by the worker (nvJPEG on its GPU)
    # decoded in memory: the cache is read once (one Parquet read, one footer reader process) and every split
    # filters those rows; its encoded bytes are freed once the decoded splits are materialized
    rows = cache_rows(cache).materialize() if mode == "true" else None
    datasets = {name: split_dataset(cache, entries, split, d.max_captions, d.max_words, mode == "encoded",
                                    decode=not (name == "train" and site == "worker"), rows=rows)
                for name, split in splits if not (name == "train" and store is not None)}
    if mode == "true":  # decoded splits stay in the object store: later epochs skip the Parquet read
        datasets = {k: v.materialize() for k, v in datasets.items()}
    meta = {"run_dir": str(run_dir), "run_uri": run_uri_of(cfg), "steps_per_epoch": steps, "train_videos": n_train,
            "skipped_videos": len(cache.skipped), "in_memory": mode, "decode_on": site,
            "frame_shape": [cache.num_frames, cache.size, cache.size, 3]}
    if store is not None:
        meta["pair_store"] = store
        meta["train_pairs"] = int(store.n_captions.sum())
    return datasets, meta, cache


def data_mode(cfg, cache) -> str:
    """`data.in_memory`, with auto resolved by size: decoded frames when they fit in a third of the cluster's
    object store, else the cache's encoded bytes when they fit, else streaming the Parquet cache from disk."""
    import ray

    d = cfg.data
    if d.in_memory != "auto":
        return d.in_memory
    store = ray.cluster_resources().get("object_store_memory", 0) / 3
    decoded = cache.decoded * cache.num_frames * cache.size ** 2 * 3
    encoded = cache.decoded * cache.bytes_per_clip
    mode = "true" if decoded <= store else "encoded" if encoded <= store else "false"
    what = {"true": "decoded clips", "encoded": "encoded clips (decoded each epoch)", "false": "none"}[mode]
    log.info("data.in_memory=auto: %s in the object store (decoded %.1f GB, encoded %.2f GB, a third of the store "
             "%.1f GB)", what, decoded / 1e9, encoded / 1e9, store / 1e9)
    return mode


def _streaming_data(cfg, run_dir: Path, entries):
    """Datasets that decode the videos every epoch (no cache); videos that fail are dropped per batch."""
    from ncl_ray.data.decode import clip_spec
    from ncl_ray.data.pipeline import ClipCache, stream_dataset

    d = cfg.data
    counts: Dict[str, int] = {}
    for e in entries:
        counts[e.split] = counts.get(e.split, 0) + 1
    val_split = d.val_split if counts.get(d.val_split) else d.test_split
    splits = (("train", d.train_split, d.jitter), ("val", val_split, False), ("test", d.test_split, False))
    datasets = {name: stream_dataset(entries, split, clip_spec(d), d.max_captions, d.max_words, jitter)
                for name, split, jitter in splits}
    n_train = counts[d.train_split]
    steps = n_train // (cfg.train.batch_size * cfg.train.num_workers)
    log.info("streaming: decoding %d videos every epoch%s (no clip cache)", len(entries),
             " with temporal jitter" if d.jitter else "")
    cache = ClipCache("(streaming)", d.num_frames, d.frame_size, len(entries), [], "streaming")
    meta = {"run_dir": str(run_dir), "run_uri": run_uri_of(cfg), "steps_per_epoch": steps, "train_videos": n_train,
            "skipped_videos": 0}
    return datasets, meta, cache
