"""Ray Data on a real local Ray instance: decoding into the cache, skips, invalidation, per-split rows; the
index's embedder as an actor pool."""

import os

import numpy as np
import pytest

from ncl_ray.data.manifest import VideoEntry, read_manifest
from ncl_ray.data.synthetic import make_dataset

pytestmark = pytest.mark.ray


def test_cache_skips_bad_videos_and_is_reused(ray_local, tmp_path):
    from ncl_ray.data.pipeline import ClipSpec, build_clip_cache, split_dataset, split_videos

    entries = read_manifest(make_dataset(str(tmp_path / "d"), 12, seed=3))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00" * 1000)
    entries += [VideoEntry("bad1", str(corrupt), "train", ["broken"]),
                VideoEntry("bad2", str(tmp_path / "missing.mp4"), "test", ["gone"])]
    cache = build_clip_cache(entries, ClipSpec(4, 16), str(tmp_path / "cache"))
    assert cache.total == 14 and cache.decoded == 12
    assert sorted(s["video_id"] for s in cache.skipped) == ["bad1", "bad2"]
    assert any("file not found" in s["error"] for s in cache.skipped)

    mtime = os.path.getmtime(os.path.join(cache.path, "summary.json"))
    again = build_clip_cache(entries, ClipSpec(4, 16), str(tmp_path / "cache"))
    assert again.path == cache.path and os.path.getmtime(os.path.join(again.path, "summary.json")) == mtime
    other = build_clip_cache(entries, ClipSpec(6, 16), str(tmp_path / "cache"))  # new settings: decoded again
    assert other.path != cache.path and other.num_frames == 6

    train = split_videos(cache, entries, "train")
    assert "bad1" not in [e.video_id for e in train]
    rows = split_dataset(cache, entries, "train", max_captions=4, max_words=16).take_all()
    assert len(rows) == len(train)
    r = rows[0]
    assert r["frames"].shape == (4, 16, 16, 3) and r["frames"].dtype == np.uint8 and r["frames"].max() > 0
    assert r["tokens"].shape == (4, 16) and r["n_captions"] == 3
    assert sorted(x["index"] for x in rows) == list(range(len(train)))
    # each Parquet read of this private instance read its footers with one actor (Ray Data's default is 32
    # processes per read), and the tasks that attached the tokens did not import torch
    from ray.util.state import list_actors

    footers = list_actors(filters=[("class_name", "=", "FooterReader")], limit=1000)
    assert 1 <= len(footers) <= 2, [a.state for a in footers]  # this read and the cache check's


def test_contiguous_splits_get_exactly_their_rows_as_tensor_columns(ray_local, tmp_path):
    """Splits are contiguous in the manifest, so whole Parquet blocks hold none of the test split's videos."""
    import ray

    from ncl_ray.data.pipeline import ClipSpec, build_clip_cache, split_dataset

    entries = read_manifest(make_dataset(str(tmp_path / "d"), 72, seed=1))
    cache = build_clip_cache(entries, ClipSpec(2, 8), str(tmp_path / "cache"))
    for split, n in (("train", 50), ("test", 15)):
        tables = ray.get(split_dataset(cache, entries, split, 2, 8).to_arrow_refs())
        kinds = {str(t.schema.field("frames").type) for t in tables}
        assert sum(t.num_rows for t in tables) == n
        assert all("tensor" in k.lower() and "pickled" not in k.lower() for k in kinds), kinds


def test_jpeg_cache_is_smaller_and_streaming_gives_the_same_rows(ray_local, tmp_path):
    from ncl_ray.data.framecodec import decode_clip
    from ncl_ray.data.pipeline import ClipSpec, build_clip_cache, split_dataset, stream_dataset

    entries = read_manifest(make_dataset(str(tmp_path / "d"), 12, seed=4))
    raw = build_clip_cache(entries, ClipSpec(4, 96, encoding="raw"), str(tmp_path / "cache"))
    jpeg = build_clip_cache(entries, ClipSpec(4, 96, encoding="jpeg", quality=90), str(tmp_path / "cache"))
    assert raw.path != jpeg.path and jpeg.encoding == "jpeg" and raw.encoding == "raw"
    # at most 1/5 of the uncompressed frames (Parquet's own compression also shrinks raw flat-colour frames)
    assert jpeg.bytes_per_clip * 5 <= 4 * 96 * 96 * 3 and raw.bytes_per_clip > 0
    rows_raw = {r["index"]: r for r in split_dataset(raw, entries, "train", 3, 16).take_all()}
    rows_jpeg = {r["index"]: r for r in split_dataset(jpeg, entries, "train", 3, 16).take_all()}
    rows_stream = {r["index"]: r for r in stream_dataset(entries, "train", ClipSpec(4, 96), 3, 16).take_all()}
    assert set(rows_raw) == set(rows_jpeg) == set(rows_stream)
    for i, r in rows_raw.items():
        assert np.array_equal(r["frames"], rows_stream[i]["frames"])  # streaming decodes the same frames
        assert np.abs(r["frames"].astype(int) - rows_jpeg[i]["frames"]).mean() < 3
        assert np.array_equal(r["tokens"], rows_jpeg[i]["tokens"])
    jittered = {r["index"]: r for r in stream_dataset(entries, "train", ClipSpec(4, 96), 3, 16, jitter=True).take_all()}
    assert any(not np.array_equal(rows_raw[i]["frames"], jittered[i]["frames"]) for i in rows_raw)
    assert decode_clip is not None


def test_index_add_embeds_the_same_rows_in_the_actor_pool_as_in_its_own_process(ray_local, tiny_run, tmp_path):
    """`index add` embeds up to 8 videos in the command's process on a private instance, more (or any number on a
    cluster) in a Ray Data actor pool: the same rows either way, windows and per-file errors included."""
    from ncl_ray.data.synthetic import render, write_video
    from ncl_ray.runtime.checkpoint import resolve_checkpoint
    from ncl_ray.serve.add import VideoEmbedder, _embed_pool
    from ncl_ray.serve.add_here import embed_here

    scenes = [render(c, "circle", "large", "right", "navy", num_frames=30, side=64, rng=np.random.default_rng(9))
              for c in ("white", "green")]
    paths = [write_video(str(tmp_path / "long.mp4"), np.concatenate(scenes), fps=2),  # 30 s: five windows
             write_video(str(tmp_path / "short.mp4"), scenes[0][:16])]
    (tmp_path / "broken.mp4").write_bytes(b"\0" * 500)
    entries = [VideoEntry(os.path.basename(p)[:-4], p, "added") for p in [*paths, str(tmp_path / "broken.mp4")]]
    checkpoint = resolve_checkpoint(str(tiny_run))
    pool = _embed_pool(checkpoint, 10.0, 5.0, entries)
    here = embed_here(VideoEmbedder(checkpoint, 10.0, 5.0), entries)

    def key(r):
        return r["video_id"], float(r["start_s"])

    pool, here = sorted(pool, key=key), sorted(here, key=key)
    assert [key(r) for r in pool] == [key(r) for r in here] and len(here) == 5 + 1 + 1
    for a, b in zip(pool, here):
        assert a["error"] == b["error"] and a["end_s"] == b["end_s"]
        np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-5)
    assert [r["video_id"] for r in here if r["error"]] == ["broken"]
