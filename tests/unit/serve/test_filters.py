"""Search filters (serve/filters.py): parsing with errors that name the field, the rows each filter lets
through, and the search inside the index returning the best allowed rows, not the leftovers of a top k."""

from datetime import datetime, timezone

import numpy as np
import pytest

from ncl_ray.serve.filters import FilterError, Filters, parse_filters, parse_time
from ncl_ray.serve.index import GalleryIndex


def _parse(**values):
    return parse_filters(values.get)


def test_bad_filters_name_their_field():
    for values, field in (({"min_s": "abc"}, "min_s"), ({"max_s": "-1"}, "max_s"), ({"min_s": "inf"}, "min_s"),
                          ({"min_s": "9", "max_s": "3"}, "max_s"), ({"path": ""}, "path"), ({"path": 7}, "path"),
                          ({"added_after": "last week"}, "added_after"), ({"min_s": True}, "min_s")):
        with pytest.raises(FilterError) as e:
            _parse(**values)
        assert e.value.field == field, values
    assert not _parse().active() and _parse(min_s="0").active()


def test_times_are_iso_dates_utc_unless_zoned_or_unix_seconds():
    assert parse_time("2026-12-01") == datetime(2026, 12, 1, tzinfo=timezone.utc).timestamp()
    assert parse_time("2026-12-01T10:00:00+01:00") == datetime(2026, 12, 1, 9, tzinfo=timezone.utc).timestamp()
    assert parse_time("1700000000") == parse_time(1700000000) == 1700000000.0


def _index(kind="exact"):
    g = np.random.default_rng(0)
    emb = g.normal(size=(200, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    paths = [f"/lib/a/{i}.mp4" if i < 100 else f"/lib/ab/{i}.mp4" for i in range(200)]
    index = GalleryIndex([f"v{i}" for i in range(200)], paths, emb, np.zeros(200), 0.05, {}, {}, kind)
    index.durations = np.where(np.arange(200) % 2 == 0, 5.0, 40.0).astype(np.float32)
    index.durations[:10] = np.nan  # unknown (an evaluation's rows)
    index.added = np.where(np.arange(200) < 150, np.nan, 1000.0 + np.arange(200))
    return index, emb


def test_each_filter_lets_through_exactly_its_rows():
    index, _ = _index()
    assert Filters().rows(index) is None
    assert list(Filters(path="/lib/a").rows(index)) == list(range(100))  # not /lib/ab: a folder, not a prefix
    assert list(Filters(path="/lib/a/3.mp4").rows(index)) == [3]
    assert list(Filters(min_s=10).rows(index)) == list(range(11, 200, 2))  # unknown durations never pass
    assert list(Filters(max_s=10, path="/lib/ab/").rows(index)) == list(range(100, 200, 2))
    assert list(Filters(added_after=1000.0 + 180).rows(index)) == list(range(181, 200))


def test_a_folder_mask_is_built_once_per_index_version_and_bounded():
    from ncl_ray.serve import filters

    index, _ = _index()
    first = filters.folder_mask(index, "/lib/a")
    assert filters.folder_mask(index, "/lib/a") is first  # read, not rebuilt, on the next request
    newer, _ = _index()  # a reloaded version: its own masks
    assert filters.folder_mask(newer, "/lib/a") is not first
    for i in range(filters.FOLDERS_KEPT + 5):
        filters.folder_mask(index, f"/lib/a/{i}.mp4")
    assert len(filters._FOLDER_MASKS[index]) == filters.FOLDERS_KEPT and "/lib/a" not in filters._FOLDER_MASKS[index]
    import gc
    import weakref

    unloaded, kept = weakref.ref(index), len(filters._FOLDER_MASKS)
    del index, first  # an unloaded version is not kept alive by its masks, and they go with it
    gc.collect()
    assert unloaded() is None and len(filters._FOLDER_MASKS) == kept - 1


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_a_filtered_search_returns_the_best_allowed_rows_inside_the_index(kind):
    index, emb = _index(kind)
    q = emb[:1] + 0.01
    allowed = Filters(path="/lib/ab", min_s=10).rows(index)  # 50 rows, none of them near q
    found = index.hits(q, 10, "none", allowed=allowed)[0]
    expected = allowed[np.argsort(-(emb[allowed] @ q[0]))][:10]
    assert [h["row"] for h in found] == list(expected)
    few = Filters(added_after=1000.0 + 197).rows(index)  # 2 rows: k=10 gives those 2
    assert sorted(h["row"] for h in index.hits(q, 10, "ncl", allowed=few)[0]) == [198, 199]
    assert index.hits(q, 10, "none", allowed=np.zeros(0, np.int64)) == [[]]
