"""Read one split of a clip cache through Ray Data (Parquet read + frame decode in CPU tasks) and time it.

    python -m bench.cache_read CACHE_FOLDER MANIFEST [split]    # prints one JSON line
"""

import json
import sys
import time


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cache_path, manifest = argv[0], argv[1]
    split = argv[2] if len(argv) > 2 else "train"
    from ncl_ray.runtime.cluster import init_ray
    from ncl_ray.data.manifest import read_manifest
    from ncl_ray.data.pipeline import ClipCache, split_dataset

    summary = json.loads(open(f"{cache_path}/summary.json").read())
    cache = ClipCache(**summary)
    entries = read_manifest(manifest)
    init_ray("", verbose=False)
    ds = split_dataset(cache, entries, split, 20, 32)
    t, clips, nbytes = time.perf_counter(), 0, 0
    for batch in ds.iter_batches(batch_size=16, batch_format="numpy"):
        clips += len(batch["frames"])
        nbytes += batch["frames"].nbytes
    wall = time.perf_counter() - t
    print(json.dumps({"split": split, "clips": clips, "wall_s": round(wall, 2), "clips_per_s": round(clips / wall, 2),
                      "decoded_mb_per_s": round(nbytes / wall / 2**20, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
