import json
import subprocess
import sys

import numpy as np
import pytest

from ncl_ray.cli import main


def hub_problem(n=200, d=32, hubs=5, seed=0):
    """Queries near their own item, plus a few hub items close to everything (the NCL failure mode)."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=d)
    items = rng.normal(size=(n, d))
    items[:hubs] += 2.0 * common  # hubs lean towards the common direction shared by all queries
    def queries(noise):
        q = items + noise * rng.normal(size=items.shape) + 1.0 * common
        return q / np.linalg.norm(q, axis=1, keepdims=True)
    g = items / np.linalg.norm(items, axis=1, keepdims=True)
    return (queries(1.4) @ g.T).astype(np.float32), (queries(1.4) @ g.T).astype(np.float32)


def test_ncl_beats_none_on_hubs(tmp_path, capsys):
    sims, bank = hub_problem()
    np.save(tmp_path / "s.npy", sims)
    np.save(tmp_path / "b.npy", bank)
    res = {}
    for method in ("none", "ncl", "dsl", "qbnorm"):
        out = tmp_path / f"{method}.json"
        rc = main(["rerank", "--sims", str(tmp_path / "s.npy"), "--bank-sims", str(tmp_path / "b.npy"),
                   "--method", method, "--json", str(out)])
        assert rc == 0
        res[method] = json.loads(out.read_text())
    assert set(res["ncl"]["t2v"]) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
    assert res["ncl"]["t2v"]["R@1"] > res["none"]["t2v"]["R@1"]
    ne = res["ncl"]["normalization_error"]
    assert ne["after"] < 0.8 * ne["before"]  # biases from other queries than the ones scored
    assert res["qbnorm"]["t2v"]["R@1"] >= res["none"]["t2v"]["R@1"]
    assert main(["rerank", "--sims", str(tmp_path / "s.npy"), "--bank", "test", "--iters", "100",
                 "--method", "ncl", "--json", str(tmp_path / "t.json")]) == 0
    transductive = json.loads((tmp_path / "t.json").read_text())["normalization_error"]
    assert transductive["after"] < 0.05 < transductive["before"]
    assert "R@1" in capsys.readouterr().out


def test_query_to_item_and_transpose(tmp_path):
    # 3 videos, 6 captions (2 each); caption c belongs to video c // 2
    rng = np.random.default_rng(0)
    sims = rng.normal(size=(6, 3)).astype(np.float32)
    sims[np.arange(6), np.arange(6) // 2] += 3
    np.save(tmp_path / "s.npy", sims)
    np.save(tmp_path / "m.npy", np.arange(6) // 2)
    out = tmp_path / "v2t.json"
    assert main(["rerank", "--sims", str(tmp_path / "s.npy"), "--query-to-item", str(tmp_path / "m.npy"),
                 "--method", "none", "--transpose", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["v2t"]["R@1"] == 100.0 and "v2t_lenient" in res


@pytest.mark.parametrize("case", ["missing", "nan", "shape", "text"])
def test_bad_files_exit_2_and_name_the_file(tmp_path, case):
    path = tmp_path / "s.npy"
    if case == "nan":
        np.save(path, np.array([[0.1, np.nan], [0.2, 0.3]]))
    elif case == "shape":
        np.save(path, np.zeros(3))
    elif case == "text":
        path.write_text("not an array")
    proc = subprocess.run([sys.executable, "-m", "ncl_ray", "rerank", "--sims", str(path), "--method", "none"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "s.npy" in proc.stderr and "Traceback" not in proc.stderr


def test_non_square_without_mapping_is_an_error(tmp_path):
    np.save(tmp_path / "s.npy", np.zeros((3, 4)))
    assert main(["rerank", "--sims", str(tmp_path / "s.npy"), "--method", "none"]) == 2


def test_blockwise_normalisation_equals_dense():
    import torch

    from ncl_ray.ncl.normalize import Sims, make_scorer, ncl_gallery_bias
    from ncl_ray.ncl.sinkhorn import sinkhorn_biases

    g = torch.Generator().manual_seed(0)
    q, gal, bank = torch.randn(50, 8, generator=g), torch.randn(30, 8, generator=g), torch.randn(70, 8, generator=g)
    dense_bias = sinkhorn_biases(bank @ gal.T / 0.5, 7)[1]
    for chunk in (1, 16, 1000):
        streamed = ncl_gallery_bias(Sims.embeddings(bank, gal, chunk), 0.5, 7)
        assert torch.allclose(streamed, dense_bias, atol=1e-5)
    for method in ("none", "ncl", "dsl", "qbnorm"):
        outs = []
        for chunk in (7, 1000):
            test, bk = Sims.embeddings(q, gal, chunk), Sims.embeddings(bank, gal, chunk)
            scorer = make_scorer(method, test, 0.5, bk, n_iters=5)
            outs.append(torch.cat([scorer(rows, s) for rows, s in test.blocks()]))
        assert torch.equal(outs[0], outs[1]) or torch.allclose(outs[0], outs[1], atol=1e-5), method


def test_the_league_methods_through_the_command(tmp_path):
    """dn with a query bank alone; dbnorm and dbsn also read a gallery bank (items x gallery, bank x items);
    `--method all` without the gallery bank scores the others and says nothing breaks."""
    sims, bank = hub_problem(n=60)
    g = np.random.default_rng(1)
    items = np.clip(bank[:20] + 0.05 * g.normal(size=(20, 60)), -1, 1).astype(np.float32)  # 20 bank videos
    cross = np.clip(bank[:, :20] + 0.05 * g.normal(size=(60, 20)), -1, 1).astype(np.float32)
    for name, a in (("s", sims), ("b", bank), ("i", items), ("x", cross)):
        np.save(tmp_path / f"{name}.npy", a)
    base = ["rerank", "--sims", str(tmp_path / "s.npy"), "--bank-sims", str(tmp_path / "b.npy")]
    res = {}
    for method in ("none", "dn", "dbnorm", "dbsn"):
        out = tmp_path / f"{method}.json"
        extra = ["--gallery-bank-sims", str(tmp_path / "i.npy"), "--cross-sims", str(tmp_path / "x.npy")] \
            if method.startswith("db") else []
        assert main(base + extra + ["--method", method, "--dn-lambda", "0.5", "--json", str(out)]) == 0
        res[method] = json.loads(out.read_text())
    assert res["dbsn"]["t2v"]["R@1"] > res["none"]["t2v"]["R@1"]  # hubs lose their pull
    assert res["dn"]["t2v"] != res["none"]["t2v"]
    assert main(base + ["--method", "dbsn"]) == 2  # needs the gallery bank: named, exit 2
    assert main(base + ["--method", "all", "--nnn-k", "8", "--json", str(tmp_path / "all.json")]) == 0
    assert "dn" in json.loads((tmp_path / "all.json").read_text())
