"""The search page's numbers for one hit, hand-checked: plain score and rank, bias, confidence, coverage."""

import numpy as np

from ncl_ray.serve.explain import Explainer, confidence_label
from ncl_ray.serve.index import GalleryIndex


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _index():
    g = np.random.default_rng(0)
    emb = _unit(g.normal(size=(50, 16)))
    emb[49] = _unit(np.r_[np.zeros(15), 1.0])  # a video unlike everything else: only its own direction
    bias = np.zeros(50, np.float32)
    bias[3] = 2.0  # a big NCL bias on row 3 (logit scale; x tau = 0.1 in similarity units)
    return GalleryIndex([f"v{i}" for i in range(50)], ["/x"] * 50, emb, bias, 0.05, {}, {}), emb


def test_plain_rank_bias_and_confidence_of_a_hit():
    index, emb = _index()
    bank = _unit(emb[:40] + 0.05)  # training captions near the first 40 videos
    ex = Explainer(index, bank)
    q = _unit(emb[3] + 0.3 * emb[7])
    plain = index.plain @ q
    [hit] = ex.hits(q, [3], "ncl")
    assert hit["plain_score"] == round(float(plain[3]), 6) and hit["bias"] == 0.1
    assert hit["plain_rank"] == 1 + int((plain > plain[3]).sum()) and hit["plain_rank_exact"]
    scores = plain + 0.05 * index.biases["ncl"]
    assert hit["confidence"] == round((scores[3] - scores.mean()) / scores.std(), 2)
    assert hit["confidence_label"] == "strong" and not hit["outside_training"]
    [none] = ex.hits(q, [3], "none")
    assert none["bias"] == 0.0
    # a query that matches nothing in particular: its best hit does not stand out
    flat = _unit(np.ones(16))
    best = int(np.argmax(index.plain @ flat))
    assert ex.hits(flat, [best], "none")[0]["confidence_label"] != "strong"


def test_videos_and_queries_unlike_the_training_captions_are_flagged():
    index, emb = _index()
    g = np.random.default_rng(1)
    bank = _unit(np.repeat(emb[:49], 2, axis=0) + 0.02 * g.normal(size=(98, 16)))  # two captions per video
    ex = Explainer(index, bank)
    assert ex.hits(emb[49], [49], "none")[0]["outside_training"]  # row 49: nothing like it in the bank
    assert ex.query(emb[49])["query_outside"] and not ex.query(emb[5])["query_outside"]
    assert Explainer(index, None).query(emb[0]) == {}  # no bank: nothing claimed
    assert [confidence_label(z) for z in (3.5, 2.5, 1.0)] == ["strong", "fair", "weak"]


def test_plain_rank_counts_a_video_cut_into_windows_once():
    emb = _unit(np.eye(4, dtype=np.float32)[[0, 0, 0, 1, 2]] + 0.01)
    index = GalleryIndex(["long", "long", "long", "b", "c"], ["/x"] * 5, emb, np.zeros(5), 0.05, {}, {},
                         spans=np.array([[0, 10], [5, 15], [10, 20], [0, 0], [0, 0]], np.float32))
    q = _unit(np.array([1.0, 0.5, 0.1, 0.0]))
    [b] = Explainer(index).hits(q, [3], "none")
    assert b["plain_rank"] == 2  # behind "long" (its three windows count as one video)


def test_a_large_gallery_is_explained_from_a_fixed_sample_for_either_index_kind(monkeypatch):
    """Past SAMPLE rows a request reads its hits and a fixed sample, not the gallery, and searches nothing more:
    a plain rank is the sample's share above the hit scaled to the gallery's videos, never better than the
    answer's other hits show, and says it is an estimate."""
    import ncl_ray.serve.explain as explain

    monkeypatch.setattr(explain, "SAMPLE", 20)
    _, emb = _index()
    bias = np.zeros(50, np.float32)
    bias[3] = 2.0
    for kind in ("exact", "hnsw"):
        index = GalleryIndex([f"v{i}" for i in range(50)], ["/x"] * 50, emb, bias, 0.05, {}, {}, kind)
        ex = Explainer(index, None)
        assert len(ex.sample) == 20
        q = _unit(emb[3] + 0.3 * emb[7])
        plain = index.plain @ q
        order = np.argsort(-plain)
        rows = [int(order[4]), int(order[40])]
        got = ex.hits(q, rows, "ncl")
        sampled = index.plain[ex.sample] @ q
        for hit, row in zip(got, rows):
            above = int((sampled > plain[row]).sum())  # of 20 sampled rows; 50 videos: 2.5 each
            others = sum(int(plain[r] > plain[row]) for r in rows)
            assert hit["plain_rank"] == max(others, round(above * 2.5)) + 1 and not hit["plain_rank_exact"]
        assert got[0]["plain_rank"] < got[1]["plain_rank"]
        reference = sampled + 0.05 * index.biases["ncl"][ex.sample]
        z = (plain[rows[0]] + 0.05 * index.biases["ncl"][rows[0]] - reference.mean()) / reference.std()
        assert got[0]["confidence"] == round(float(z), 2)


def test_a_paired_bank_calibrates_the_labels_and_the_outside_flag_on_training_pairs():
    """Caption i and video i of the checkpoint's queues are a true pair: a hit as close as a typical true pair
    is strong, one no closer than mismatched pairs is weak; a gallery made mostly of videos unlike every training
    caption has them flagged (the reference is the training videos, not the gallery itself)."""
    g = np.random.default_rng(7)
    videos = _unit(np.c_[g.normal(size=(300, 10)), np.zeros((300, 6))])  # the training data: 10 of 16 directions
    captions = _unit(videos + 0.1 * np.c_[g.normal(size=(300, 10)), np.zeros((300, 6))])  # each near its video
    true = np.einsum("ij,ij->i", captions, videos)
    strange = _unit(np.c_[0.2 * g.normal(size=(40, 10)), g.normal(size=(40, 6))])  # mostly in the other six
    best = int(np.argmax(true))  # the training pair closest of all
    gallery = np.concatenate([strange, videos[[best] + list(range(9))]])
    index = GalleryIndex([f"v{i}" for i in range(50)], ["/x"] * 50, gallery, np.zeros(50), 0.05, {}, {})
    ex = Explainer(index, captions, bank_videos=videos)
    assert abs(ex.pairs[0] - float(np.median(true))) < 1e-6  # 300 pairs: all of them calibrate
    q = captions[best]
    [own, other] = ex.hits(q, [40, 41], "none")  # its own video, and another training video
    assert own["confidence_label"] == "strong" and own["match_percentile"] >= 99
    assert other["confidence_label"] == "weak" and other["match_percentile"] < 5
    flagged = [h["outside_training"] for h in ex.hits(q, list(range(50)), "none")]
    assert sum(flagged[:40]) >= 36 and sum(flagged[40:]) <= 1  # most strange videos; hardly any training one


def test_labels_from_the_held_out_calibration_the_index_carries():
    """An index exported by `ncl-ray eval` carries its held-out calibration: a hit's label is the range its plain
    score falls in, with the share of right first hits that range held; a malformed one is ignored."""
    _, emb = _index()
    cal = {"strong": {"from": 0.5, "right": 0.9, "captions": 20}, "fair": {"from": 0.2, "right": 0.6, "captions": 30},
           "weak": {"from": -1.0, "right": 0.1, "captions": 50}}
    index = GalleryIndex([f"v{i}" for i in range(50)], ["/x"] * 50, emb, np.zeros(50), 0.05, {}, {"confidence": cal})
    ex = Explainer(index, _unit(emb[:40] + 0.05), bank_videos=emb[:40])
    q = emb[3]
    plain = index.plain @ q
    rows = [3, int(np.argmin(np.abs(plain - 0.3))), int(np.argmin(plain))]
    got = ex.hits(q, rows, "none")
    expected = ["strong" if plain[r] >= 0.5 else "fair" if plain[r] >= 0.2 else "weak" for r in rows]
    assert [h["confidence_label"] for h in got] == expected and expected[0] == "strong" and expected[2] == "weak"
    assert [(h["label_right"], h["label_captions"]) for h in got] == [(cal[e]["right"], cal[e]["captions"])
                                                                      for e in expected]
    assert "match_percentile" not in got[0]
    bad = GalleryIndex(["a", "b"], ["/x"] * 2, emb[:2], np.zeros(2), 0.05, {}, {"confidence": {"weak": {"from": "x"}}})
    assert "label_right" not in Explainer(bad).hits(emb[0], [0], "none")[0]
