"""`ncl-ray prepare CONFIG [key=value ...]`: build the clip cache alone, e.g. on CPU nodes before a GPU job.

Decodes every video of the dataset with Ray Data (progress on the console), writes the cache the training run
with the same data settings will reuse, and prints videos decoded and skipped, bytes per clip, total size and
time. The cache's summary.json records the encoding and bytes per clip.
"""

import logging
import time

log = logging.getLogger("ncl_ray.data.prepare")


def prepare_cache(cfg) -> int:
    from ncl_ray.runtime.cluster import init_ray
    from ncl_ray.data.cache import parquet_files
    from ncl_ray.data.decode import clip_spec
    from ncl_ray.data.pipeline import build_clip_cache, load_entries

    d = cfg.data
    entries = load_entries(d.dataset, d.root, d.manifest, d.synthetic_videos, d.synthetic_profile,
                           cfg.train.protocol != "published")  # before Ray
    init_ray(cfg.run.ray_address, verbose=cfg.run.verbose)
    start = time.time()
    cache = build_clip_cache(entries, clip_spec(d), d.cache_dir, d.decode_concurrency)
    total = parquet_files(cache.path)[2]
    raw = d.num_frames * d.frame_size * d.frame_size * 3
    print(f"clip cache: {cache.path}")
    print(f"videos: {cache.decoded} decoded, {len(cache.skipped)} skipped"
          + (" (listed in the cache's summary.json)" if cache.skipped else ""))
    print(f"encoding: {cache.encoding}, {cache.bytes_per_clip / 1e3:.1f} kB per clip "
          f"({raw / max(cache.bytes_per_clip, 1):.1f}x smaller than raw {raw / 1e6:.2f} MB), "
          f"total {total / 1e6:.1f} MB, {time.time() - start:.1f} s")
    return 0
