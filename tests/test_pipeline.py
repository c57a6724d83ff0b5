"""Ray Data decoding on a real local Ray instance: cache, skips, invalidation, per-split rows."""

import os

import numpy as np
import pytest

from ncl_ray.data.manifest import VideoEntry, read_manifest
from ncl_ray.data.synthetic import make_dataset

pytestmark = pytest.mark.ray


def test_cache_skips_bad_videos_and_is_reused(ray_local, tmp_path):
    from ncl_ray.data.pipeline import build_clip_cache, split_dataset, split_videos

    entries = read_manifest(make_dataset(str(tmp_path / "d"), 12, seed=3))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00" * 1000)
    entries += [VideoEntry("bad1", str(corrupt), "train", ["broken"]),
                VideoEntry("bad2", str(tmp_path / "missing.mp4"), "test", ["gone"])]
    cache = build_clip_cache(entries, 4, 16, str(tmp_path / "cache"))
    assert cache.total == 14 and cache.decoded == 12
    assert sorted(s["video_id"] for s in cache.skipped) == ["bad1", "bad2"]
    assert any("file not found" in s["error"] for s in cache.skipped)

    mtime = os.path.getmtime(os.path.join(cache.path, "summary.json"))
    again = build_clip_cache(entries, 4, 16, str(tmp_path / "cache"))
    assert again.path == cache.path and os.path.getmtime(os.path.join(again.path, "summary.json")) == mtime
    other = build_clip_cache(entries, 6, 16, str(tmp_path / "cache"))  # new settings: decoded again
    assert other.path != cache.path and other.num_frames == 6

    train = split_videos(cache, entries, "train")
    assert "bad1" not in [e.video_id for e in train]
    rows = split_dataset(cache, entries, "train", max_captions=4, max_words=16).take_all()
    assert len(rows) == len(train)
    r = rows[0]
    assert r["frames"].shape == (4, 16, 16, 3) and r["frames"].dtype == np.uint8 and r["frames"].max() > 0
    assert r["tokens"].shape == (4, 16) and r["n_captions"] == 3
    assert sorted(x["index"] for x in rows) == list(range(len(train)))


def test_contiguous_splits_get_exactly_their_rows_as_tensor_columns(ray_local, tmp_path):
    """Splits are contiguous in the manifest, so whole Parquet blocks hold none of the test split's videos."""
    import ray

    from ncl_ray.data.pipeline import build_clip_cache, split_dataset

    entries = read_manifest(make_dataset(str(tmp_path / "d"), 72, seed=1))
    cache = build_clip_cache(entries, 2, 8, str(tmp_path / "cache"))
    for split, n in (("train", 50), ("test", 15)):
        tables = ray.get(split_dataset(cache, entries, split, 2, 8).to_arrow_refs())
        kinds = {str(t.schema.field("frames").type) for t in tables}
        assert sum(t.num_rows for t in tables) == n
        assert all("tensor" in k.lower() and "pickled" not in k.lower() for k in kinds), kinds
