"""`ncl-ray index list | remove | rollback` and the add plan (--replace, content hashes, sidecar captions) on a
real checkpoint and real index versions, without Ray."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ncl_ray.cli import main as cli
from ncl_ray.config.schema import load_config, to_dict
from ncl_ray.evaluation.export import IndexFiles, read_index
from ncl_ray.model.clip import ModelSpec, build_model
from ncl_ray.ncl.loss import NCLLoss
from ncl_ray.ncl.sinkhorn import sinkhorn_biases
from ncl_ray.runtime.checkpoint import save_checkpoint
from ncl_ray.serve.index import GalleryIndex
from ncl_ray.serve.versions import changelog, current, home_of, write_version


@pytest.fixture
def served(tmp_path):
    """A checkpoint with a 16-query bank and a served index of 6 videos (v0001)."""
    torch.manual_seed(0)
    cfg = load_config(None, ["model.embed_dim=8", "data.frame_size=16", "data.max_words=16", "eval.n_iters=4",
                                "eval.nnn_k=8", "eval.csls_k=4"])
    model = build_model(ModelSpec("tiny", "", "meanP", 16, 16, embed_dim=8))
    loss = NCLLoss(8, 16, 3)
    loss.text_queue.enqueue(F.normalize(torch.randn(16, 8), dim=1))
    loss.video_queue.enqueue(F.normalize(torch.randn(12, 8), dim=1))  # dbnorm's and dbsn's gallery bank
    ckpt = Path(save_checkpoint(str(tmp_path / "ckpt"), model, loss, 0, 1, to_dict(cfg)))
    g = np.random.default_rng(1)
    emb = g.normal(size=(6, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"v{i}" for i in range(6)]
    write_version(home_of(str(ckpt)), IndexFiles.gallery(ids, [f"/videos/{v}.mp4" for v in ids], emb,
                                                         np.zeros(6, np.float32), 0.05, {"v1": ["a caption"]},
                                                         {"checkpoint": str(ckpt)}, hashes=[f"h{i}" for i in range(6)]),
                  "from a test gallery")
    return ckpt, loss.text_queue.embeddings.clone(), emb


def test_remove_recomputes_the_biases_over_the_videos_that_stay(served, capsys):
    ckpt, bank, emb = served
    assert cli(["index", "remove", str(ckpt), "v1", "v4"]) == 0
    home = home_of(str(ckpt))
    assert current(home).name == "v0002"
    f = read_index(current(home))
    assert f.video_ids == ["v0", "v2", "v3", "v5"] and f.hashes == ["h0", "h2", "h3", "h5"]
    assert "v1" not in f.captions
    # Sinkhorn over the bank's logits against the remaining gallery, 4 iterations (eval.n_iters), tau 0.05
    logits = bank @ torch.from_numpy(emb[[0, 2, 3, 5]]).T / 0.05  # (16, 4)
    _, expected = sinkhorn_biases(logits, 4)
    assert np.allclose(f.bias, expected.numpy(), atol=1e-5)
    assert cli(["index", "remove", str(ckpt), "v9"]) == 2
    assert "not in the current index (v0002): v9" in capsys.readouterr().err


def test_rollback_is_a_new_version_and_list_shows_the_changelog(served, capsys):
    ckpt, _, _ = served
    assert cli(["index", "remove", str(ckpt), "v0"]) == 0
    assert cli(["index", "rollback", str(ckpt)]) == 0  # to v0001, as v0003
    home = home_of(str(ckpt))
    assert current(home).name == "v0003"
    assert GalleryIndex.load(str(home)).video_ids == [f"v{i}" for i in range(6)]
    assert cli(["index", "rollback", str(ckpt), "v0002"]) == 0  # a rollback can be undone by another
    assert len(GalleryIndex.load(str(home))) == 5
    log = changelog(home)
    assert [line.split()[0] for line in log] == ["v0001", "v0002", "v0003", "v0004"]
    assert "remove 1: v0" in log[1] and "rollback to v0001" in log[2] and log[3].split()[3:5] == ["5", "videos,"]
    capsys.readouterr()
    assert cli(["index", "list", str(ckpt), "--videos"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[3].startswith("* v0004") and out[0].startswith("  v0001") and "from a test gallery" in out[0]
    assert any(line.strip().startswith("v1\t/videos/v1.mp4\t1 captions") for line in out)
    assert cli(["index", "rollback", str(ckpt), "v0042"]) == 2
    assert "no version 'v0042'" in capsys.readouterr().err


def test_list_of_a_run_without_an_index_is_one_line(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = load_config(None, ["model.embed_dim=8"])
    ckpt = save_checkpoint(str(tmp_path / "c"), build_model(ModelSpec("tiny", "", "meanP", 16, 16, embed_dim=8)),
                           NCLLoss(8, 4, 1), 0, 1, to_dict(cfg))
    assert cli(["index", "list", ckpt]) == 2
    assert "no served index yet" in capsys.readouterr().err


def test_the_add_plan_skips_known_ids_and_identical_files_and_reads_sidecars(tmp_path):
    from ncl_ray.serve.add import read_inputs
    from ncl_ray.serve.add_plan import plan_additions
    from ncl_ray.serve.manage import file_hash

    folder = tmp_path / "in"
    folder.mkdir()
    for name, data in (("a", b"AAAA"), ("b", b"BBBB"), ("b_copy", b"BBBB"), ("c", b"CCCC"), ("old", b"OLD!")):
        (folder / f"{name}.mp4").write_bytes(data)
    (folder / "a.txt").write_text("a dog runs\n\n  a brown dog  \n")
    entries, refused = read_inputs(str(folder))
    assert [e.video_id for e in entries] == ["a", "b", "b_copy", "c", "old"] and refused == []
    assert entries[0].captions == ["a dog runs", "a brown dog"] and entries[1].captions == []
    index = GalleryIndex(["c_indexed", "old"], ["/x/c.mp4", "/x/old.mp4"], np.eye(2, 4, dtype=np.float32),
                         np.zeros(2), 0.05, {}, {}, hashes=[file_hash(str(folder / "c.mp4")), "elsewhere"])
    todo, prints, notes = plan_additions(entries, index, replace=False)
    assert [e.video_id for e in todo] == ["a", "b"] and [h for h, _ in prints] == [file_hash(str(folder / "a.mp4")),
                                                                                  file_hash(str(folder / "b.mp4"))]
    st = (folder / "a.mp4").stat()
    assert prints[0][1] == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)  # the identity the server checks
    assert notes == ["b_copy: same file as b (" + str(folder / "b_copy.mp4") + ")",
                     "c: same file as c_indexed (" + str(folder / "c.mp4") + ")",
                     "old: already in the index (--replace re-embeds it)"]
    todo, _, _ = plan_additions(entries, index, replace=True)
    assert [e.video_id for e in todo] == ["a", "b", "old"]
    # a captioned file and its byte-identical copy: the one with captions is kept, whichever sorts first
    (folder / "bikes.mp4").write_bytes(b"BIKE")
    (folder / "bikes copy.mp4").write_bytes(b"BIKE")
    (folder / "bikes.txt").write_text("two bikes on a trail\n")
    entries, _ = read_inputs(str(folder))
    assert [e.video_id for e in entries].index("bikes copy") < [e.video_id for e in entries].index("bikes")
    todo, _, notes = plan_additions(entries, index, replace=False)
    kept = {e.video_id: e.captions for e in todo}
    assert kept.get("bikes") == ["two bikes on a trail"] and "bikes copy" not in kept
    assert "bikes copy: same file as bikes (" + str(folder / "bikes copy.mp4") + ")" in notes
    # both captioned: the first kept, with the captions of both (each once)
    (folder / "bikes copy.txt").write_text("bicycles in a forest\ntwo bikes on a trail\n")
    entries, _ = read_inputs(str(folder))
    todo, _, notes = plan_additions(entries, index, replace=False)
    kept = {e.video_id: e.captions for e in todo}
    assert kept.get("bikes copy") == ["bicycles in a forest", "two bikes on a trail"] and "bikes" not in kept


def test_adding_one_video_keeps_the_old_nnn_biases_and_recomputes_every_ncl_bias(served):
    """What `index add` recomputes, before the coverage rule: per-item methods (nnn, is, csls) give the new row
    its bias alone and the old rows theirs. NCL's Sinkhorn biases depend on the whole gallery: all change."""
    from ncl_ray.ncl.normalize import MethodSettings, Sims, item_bias
    from ncl_ray.runtime.checkpoint import load_checkpoint
    from ncl_ray.serve.manage import bank_biases, new_biases, training_bank

    ckpt, bank, emb = served
    source = training_bank(load_checkpoint(str(ckpt)))
    old = bank_biases(source, emb, 0.05, ["ncl", "nnn", "is", "csls"])
    extra = {m: old[m] for m in ("nnn", "is", "csls")}
    new = np.random.default_rng(3).normal(size=(1, 8)).astype(np.float32)
    new /= np.linalg.norm(new)
    ncl, got = new_biases(source, emb, extra, list(range(6)), new, 0.05)
    for m in ("nnn", "is", "csls"):
        assert np.array_equal(got[m][:6], extra[m])  # untouched
        alone = item_bias(m, Sims.embeddings(bank, torch.from_numpy(new)), 0.05,
                          MethodSettings(nnn_k=8, csls_k=4))
        assert np.allclose(got[m][6], alone.numpy()[0], atol=1e-6)
    assert len(ncl) == 7 and not np.allclose(ncl[:6], old["ncl"], atol=1e-4)
    # and a removal keeps the per-item biases of the videos that stay
    write_version(home_of(str(ckpt)), IndexFiles.gallery([f"v{i}" for i in range(6)],
                                                         [f"/videos/v{i}.mp4" for i in range(6)], emb, old["ncl"],
                                                         0.05, {}, {"checkpoint": str(ckpt)}, extra=extra),
                  "with nnn, is and csls")
    assert cli(["index", "remove", str(ckpt), "v2"]) == 0
    f = read_index(current(home_of(str(ckpt))))
    assert set(f.extra) == {"nnn", "is", "csls"}
    assert all(np.array_equal(f.extra[m], np.delete(extra[m], 2)) for m in f.extra)
    served_index = GalleryIndex.load(str(home_of(str(ckpt))))
    assert served_index.methods == ["ncl", "none", "nnn", "is", "csls"]
    with pytest.raises(ValueError, match="not in this index"):
        GalleryIndex(["a"], ["/a.mp4"], emb[:1], np.zeros(1), 0.05, {}, {}).search(emb[:1], 1, "nnn")


def test_the_league_methods_fold_into_the_index_as_eval_scores_them(served):
    """dn and dbnorm (own column) and dbsn (whole gallery, with the training videos as its gallery bank): before
    the coverage rule, the served biases are eval's fold biases;
    adding a video keeps dn's and dbnorm's old rows and recomputes dbsn's."""
    from ncl_ray.ncl.normalize import GalleryBank, MethodSettings, Sims, make_scorer
    from ncl_ray.runtime.checkpoint import load_checkpoint
    from ncl_ray.serve.manage import bank_biases, new_biases, training_bank

    ckpt, bank, emb = served
    source = training_bank(load_checkpoint(str(ckpt)))
    videos = source.videos
    assert videos.shape == (12, 8)
    league = ["dn", "dbnorm", "dbsn"]
    served_biases = bank_biases(source, emb, 0.05, league)

    def eval_bias(method, gallery):
        g = torch.from_numpy(gallery)
        bank_sims = Sims.embeddings(bank, g)
        queries = Sims.embeddings(F.normalize(torch.randn(5, 8), dim=1), g)  # any test queries: not read
        return make_scorer(method, queries, 0.05, bank_sims, MethodSettings(nnn_k=8, csls_k=4),
                           GalleryBank(Sims.embeddings(videos, g), Sims.embeddings(bank, videos))).fold_bias.numpy()

    for m in league:
        assert np.allclose(served_biases[m], eval_bias(m, emb), atol=1e-5)
    new = np.random.default_rng(4).normal(size=(1, 8)).astype(np.float32)
    new /= np.linalg.norm(new)
    _, got = new_biases(source, emb, served_biases, list(range(6)), new, 0.05)
    for m in ("dn", "dbnorm"):
        assert np.array_equal(got[m][:6], served_biases[m])
    assert np.allclose(got["dbsn"], eval_bias("dbsn", np.concatenate([emb, new])), atol=1e-5)
    assert not np.allclose(got["dbsn"][:6], served_biases["dbsn"], atol=1e-6)  # its Sinkhorn saw a new column
    index = GalleryIndex([f"v{i}" for i in range(6)], [""] * 6, emb, np.zeros(6), 0.05, {}, {},
                         extra=served_biases)
    assert set(league) <= set(index.methods)
    q = F.normalize(torch.randn(1, 8), dim=1).numpy()
    _, rows = index.search(q, 6, "dbsn")
    assert list(rows[0]) == list(np.argsort(-(q @ emb.T / 0.05 + served_biases["dbsn"])[0], kind="stable"))


def test_six_concurrent_rollbacks_each_make_a_version_without_a_traceback(served):
    """One writer at a time (versions.writer): the six wait for each other and each writes its own version."""
    import os
    import subprocess
    import sys

    ckpt, _, _ = served
    assert cli(["index", "remove", str(ckpt), "v0"]) == 0  # v0002: something to roll back
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    procs = [subprocess.Popen([sys.executable, "-m", "ncl_ray", "index", "rollback", str(ckpt)], env=env,
                              cwd=Path(__file__).resolve().parents[3], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-1500:] for _, e in outs]
    assert not any("Traceback" in e for _, e in outs)
    home = home_of(str(ckpt))
    assert current(home).name == "v0008" and len([line for line in changelog(home) if "rollback" in line]) == 6
    assert not list(home.glob(".v*.tmp-*"))


def test_counts_say_videos_and_rows_apart(tmp_path, capsys):
    """A long video cut into 3 windows beside 2 plain videos: 3 videos, 5 moments, in the CHANGELOG (what `index
    list` shows) and the index (what /healthz and `ncl-ray search` count), not 5 videos."""
    ids = ["long", "long", "long", "a", "b"]
    emb = np.eye(5, 8, dtype=np.float32)
    spans = np.array([[0, 10], [10, 20], [20, 30], [0, 0], [0, 0]], np.float32)
    home = tmp_path / "index"
    write_version(home, IndexFiles.gallery(ids, ["/v/long.mp4"] * 3 + ["/v/a.mp4", "/v/b.mp4"], emb,
                                           np.zeros(5, np.float32), 0.05, {}, {"checkpoint": "c", "split": "test"},
                                           spans=spans), "three videos")
    assert "3 videos, 5 moments" in changelog(home)[0]
    index = GalleryIndex.load(str(home))
    assert len(index) == 5 and index.n_videos == 3


def test_more_like_this_puts_the_video_first_and_picks_the_moment(tmp_path, capsys):
    """--like / ?like=: the indexed video's embedding is the query, itself first; with a start time, the window
    holding it; unknown ids and times are refused by name."""
    g = np.random.default_rng(5)
    emb = g.normal(size=(6, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb[4] = emb[0] * 0.9 + emb[4] * 0.1  # b looks like the long video's first window
    emb[4] /= np.linalg.norm(emb[4])
    ids = ["long", "long", "long", "a", "b", "c"]
    spans = np.array([[0, 10], [10, 20], [20, 30], [0, 0], [0, 0], [0, 0]], np.float32)
    bias = np.full(6, -5.0, np.float32)
    bias[4] = 5.0  # a strong pull toward b: the reference still leads
    home = tmp_path / "index"
    write_version(home, IndexFiles.gallery(ids, ["/v/long.mp4"] * 3 + ["/v/a.mp4", "/v/b.mp4", "/v/c.mp4"], emb,
                                           bias, 0.05, {}, {"checkpoint": "c"}, spans=spans), "like")
    index = GalleryIndex.load(str(home))
    assert np.allclose(index.like_vector("long", 12.0), emb[1])  # the window holding second 12
    whole = emb[:3].mean(axis=0)
    assert np.allclose(index.like_vector("long"), whole / np.linalg.norm(whole))
    hits = index.like("long", 3, "ncl", start=3.0)
    assert [h["video_id"] for h in hits][:2] == ["long", "b"] and len(hits) == 3
    assert [h["video_id"] for h in index.like("a", 6, "none")][0] == "a"
    with pytest.raises(KeyError):
        index.like_vector("nosuch")
    with pytest.raises(ValueError, match="no indexed moment of long holds 45"):
        index.like_vector("long", 45.0)
    assert cli(["search", "--index", str(home), "--like", "long", "--start", "3", "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "query: 'like long'" in out and out.splitlines()[2].split()[2] == "long"
    assert cli(["search", "--index", str(home), "--like", "nosuch"]) == 2
    assert "--like nosuch: no such video" in capsys.readouterr().err
    assert cli(["search", "--index", str(home)]) == 2
    assert cli(["search", "--index", str(home), "red", "--added-after", "yesterday"]) == 2
    assert "--added-after: a date (2026-12-01)" in capsys.readouterr().err
    assert cli(["search", "--index", str(home), "red", "--min-s", "9", "--max-s", "3"]) == 2
    assert "--max-s: must not be below min_s" in capsys.readouterr().err
    assert cli(["search", "--index", str(home), "--like", "long", "--not", "red"]) == 2
    assert "--not PHRASE goes with a text query" in capsys.readouterr().err


def test_a_negative_phrase_lowers_each_row_by_its_similarity_to_it_inside_the_index_search():
    from ncl_ray.serve.index import NOT_WEIGHT, without

    assert NOT_WEIGHT == 0.5
    assert np.allclose(without(np.array([[1.0, 0.0]]), np.array([0.6, 0.8])), [[0.7, -0.4]])
    g = np.random.default_rng(5)
    emb = g.normal(size=(30, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    bias = g.normal(size=30).astype(np.float32)
    q, n = emb[0] + 0.1, emb[1]
    for kind in ("exact", "hnsw"):
        index = GalleryIndex([f"v{i}" for i in range(30)], ["/x"] * 30, emb, bias, 0.05, {}, {}, kind)
        for method, b in (("none", 0.0), ("ncl", 0.05 * bias)):
            scores, rows = index.search(without(q[None], n), 30, method)
            expected = emb @ q - 0.5 * (emb @ n) + b  # every row's score, minus half its similarity to the phrase
            assert np.allclose(scores[0], expected[rows[0]], atol=1e-5)
            assert list(rows[0][:5]) == list(np.argsort(-expected)[:5])


def test_near_copies_fold_into_the_hit_above_them():
    from ncl_ray.serve.copies import COPY_SHARE, collapse

    e = np.eye(4, dtype=np.float32)
    plain = np.stack([e[0], _unit_row(e[0] + 0.01 * e[1]), e[1], e[0], e[2]])  # rows 1 and 3: copies of row 0
    hits = [{"video_id": f"v{r}", "row": r} for r in range(5)]
    got = collapse([dict(h) for h in hits], plain, 2, 0.999)
    assert [h["video_id"] for h in got] == ["v0", "v2"] and got[0]["also_in"] == ["v1", "v3"]
    # in an index, "copy" is relative to how close its distinct videos lie: 5 copies of one clip, 20 others
    g = np.random.default_rng(2)
    emb = np.concatenate([np.repeat(e[:1], 5, axis=0) + 1e-4 * g.normal(size=(5, 4)), g.normal(size=(20, 4))])
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    index = GalleryIndex([f"v{i}" for i in range(25)], ["/x"] * 25, emb, np.zeros(25), 0.05, {}, {})
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    assert index.copy_cosine() == pytest.approx(1 - COPY_SHARE * float(np.median(1 - sims.max(axis=1))), abs=1e-6)
    assert GalleryIndex(["a", "b"], ["/x"] * 2, emb[:2], np.zeros(2), 0.05, {}, {}).copy_cosine() <= 1 - 1e-6
    found = index.hits(e[:1], 3, "none", folded=True)[0]
    assert len(found) == 3 and sorted([found[0]["video_id"], *found[0]["also_in"]]) == [f"v{i}" for i in range(5)]
    assert not any("also_in" in h for h in found[1:])  # the distinct videos stay apart
    unfolded = {h["video_id"] for h in index.hits(e[:1], 3, "none")[0]}
    assert unfolded < {f"v{i}" for i in range(5)}  # unfolded, eval's ranking: three of the five copies
    # a gallery whose distinct videos all lie close (a briefly trained model): they are not copies of each other
    tight = _unit_row(np.ones(4)) + 1e-3 * g.normal(size=(30, 4))
    tight = (tight / np.linalg.norm(tight, axis=1, keepdims=True)).astype(np.float32)
    close = GalleryIndex([f"t{i}" for i in range(30)], ["/x"] * 30, tight, np.zeros(30), 0.05, {}, {})
    assert len(close.hits(tight[:1], 10, "none", folded=True)[0]) == 10


def _unit_row(x):
    return x / np.linalg.norm(x)
