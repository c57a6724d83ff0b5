import torch
import torch.nn.functional as F

from ncl_ray.evaluation.evaluate import Banks, Compute, Embeddings, assemble, evaluate_embeddings
from ncl_ray.ncl.fold import fold_gallery, fold_queries
from ncl_ray.ncl.methods import METHODS
from ncl_ray.ncl.normalize import Sims, make_scorer, ncl_gallery_bias


def random_embeddings(V=30, per=3, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    video = F.normalize(torch.randn(V, D, generator=g), dim=1)
    owner = torch.arange(V).repeat_interleave(per)
    text = F.normalize(video[owner] + 0.8 * torch.randn(V * per, D, generator=g), dim=1)
    return Embeddings(video, text, owner)


def test_chunked_and_unchunked_evaluation_agree_exactly():
    emb = random_embeddings()
    # seeded: BLAS may round a block's product differently from the whole one's in the last bit, which swaps
    # two scores that nearly tie (about one unseeded draw in a hundred); a wrong block offset changes far more
    g = torch.Generator().manual_seed(1)
    bank_t = F.normalize(torch.randn(50, 16, generator=g), dim=1)
    bank_v = F.normalize(torch.randn(40, 16, generator=g), dim=1)
    kwargs = dict(methods=list(METHODS), banks=Banks(bank_t, bank_v),
                  n_iters=5, nnn_k=8)
    whole = evaluate_embeddings(emb, 0.05, compute=Compute(chunk_size=100000), **kwargs)
    for chunk in (1, 7):
        part = evaluate_embeddings(emb, 0.05, compute=Compute(chunk_size=chunk), **kwargs)
        assert {k: v for k, v in part.items() if "norm_error" not in k and "time_s" not in k} == \
            {k: v for k, v in whole.items() if "norm_error" not in k and "time_s" not in k}
        for k in whole:
            if "norm_error" in k:
                assert abs(part[k] - whole[k]) < 1e-5
    assert set(whole) >= {"ncl/t2v_R@1", "ncl/v2t_R@1", "ncl/v2t_lenient_R@1", "dsl/t2v_MnR", "t2v_norm_error_before",
                          "csls/t2v_R@1", "is/v2t_R@5", "ncl/time_s"}
    assert all(whole[f"{m}/time_s"] > 0 for m in kwargs["methods"])  # each method's cost, reported beside it
    # a byte budget instead of a row count: 30 videos x 4 bytes x 5 temporaries x 3 workers = 1800 bytes a row
    budget = evaluate_embeddings(emb, 0.05, compute=Compute(memory_mb=2 * 4 * 1800 / 2 ** 20, workers=3), **kwargs)
    assert {k: v for k, v in budget.items() if "norm_error" not in k and "time_s" not in k} == \
        {k: v for k, v in whole.items() if "norm_error" not in k and "time_s" not in k}


def test_block_height_follows_the_byte_budget_and_threads_do_not_change_the_biases():
    from ncl_ray.ncl.normalize import rows_per_block

    assert rows_per_block(1_000_000, 2048, 1) == 53  # half of 2 GiB / (5 x 4 B x 1M columns)
    assert rows_per_block(1_000_000, 2048, 4) == 13 and rows_per_block(1000, 2048, 1) == 53687
    assert rows_per_block(10 ** 9, 1, 1) == 1
    emb = random_embeddings(V=50)
    bank = F.normalize(torch.randn(300, 16), dim=1)
    one = ncl_gallery_bias(Sims.embeddings(bank, emb.video, chunk=7, workers=1), 0.05, 6)
    four = ncl_gallery_bias(Sims.embeddings(bank, emb.video, chunk=7, workers=4), 0.05, 6)
    assert torch.equal(one, four)  # blocks merged in a fixed order
    whole = ncl_gallery_bias(Sims.embeddings(bank, emb.video, chunk=300), 0.05, 6)
    assert torch.allclose(one, whole, atol=1e-5)
    # no room to keep bank logits between iterations (recomputed each time): the same biases
    tight = ncl_gallery_bias(Sims.embeddings(bank, emb.video, chunk=7, memory_mb=1e-6, workers=2), 0.05, 6)
    assert torch.equal(tight, one)


def test_folded_inner_product_ranks_exactly_like_ncl():
    emb = random_embeddings(V=40)
    tau = 0.02
    bank = F.normalize(torch.randn(200, 16), dim=1)
    bias = ncl_gallery_bias(Sims.embeddings(bank, emb.video), tau, 10)
    assert bias.abs().max() > 0.1  # the biases matter for this gallery
    ncl = make_scorer("ncl", Sims.embeddings(emb.text, emb.video), tau, Sims.embeddings(bank, emb.video), n_iters=10)
    ncl_scores = ncl(slice(0, len(emb.text)), emb.text @ emb.video.T)
    folded = torch.from_numpy(fold_queries(emb.text) @ fold_gallery(emb.video, bias, tau).T)
    assert torch.equal(ncl_scores.argsort(dim=1, descending=True), folded.argsort(dim=1, descending=True))
    plain = (emb.text @ emb.video.T).argsort(dim=1, descending=True)
    assert not torch.equal(plain, folded.argsort(dim=1, descending=True))


def test_assemble_orders_videos_and_captions_by_split_index():
    rows = {"video": torch.tensor([[2.0], [0.0], [1.0]]), "index": torch.tensor([2, 0, 1]),
            "n_captions": torch.tensor([1, 2, 1]),
            "text": torch.tensor([[[20.0], [0.0]], [[0.0], [1.0]], [[10.0], [0.0]]])}
    emb = assemble(rows)
    assert emb.video[:, 0].tolist() == [0.0, 1.0, 2.0]
    assert emb.text[:, 0].tolist() == [0.0, 1.0, 10.0, 20.0]
    assert emb.caption_to_video.tolist() == [0, 0, 1, 2]


def test_the_report_table_shows_each_methods_cost_beside_its_recall():
    from ncl_ray.ui.summary import format_results

    metrics = {"none/t2v_R@1": 10.0, "nnn/t2v_R@1": 12.5, "none/time_s": 0.01, "nnn/time_s": 0.25}
    lines = format_results(metrics, ["none", "nnn"]).splitlines()
    assert lines[0].endswith("| cost s") and lines[3].startswith("nnn") and lines[3].endswith("|  0.250")
    assert "cost" not in format_results({"none/t2v_R@1": 1.0}, ["none"])


def test_the_league_names_each_methods_banks_and_whether_it_reads_the_test_queries():
    from ncl_ray.ncl.methods import METHODS
    from ncl_ray.ui.summary import league_table

    emb = random_embeddings()
    metrics = evaluate_embeddings(emb, 0.05, list(METHODS), Banks(*(F.normalize(torch.randn(50, 16), dim=1)
                                                                    for _ in range(2))), nnn_k=8)
    rows = {line.split()[0]: line for line in league_table(metrics, METHODS, "train").splitlines()[2:]}
    assert list(rows) == list(METHODS)
    assert "| yes " in rows["dsl"] and "| no " in rows["ncl"] and rows["none"].endswith("| -")
    assert rows["dbsn"].endswith("training queries + training items") and rows["dn"].endswith("training queries")
    test_bank = league_table(metrics, METHODS, "test").splitlines()
    assert "| yes " in test_bank[3] and test_bank[3].startswith("ncl")
