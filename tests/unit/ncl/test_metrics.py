import numpy as np
import pytest
import torch

from ncl_ray.metrics import correct_ranks, metrics_from_ranks, multi_correct_ranks, retrieval_metrics


def test_hand_computed_single_correct():
    scores = torch.tensor([
        [0.9, 0.1, 0.0],  # correct 0 -> rank 1
        [0.5, 0.4, 0.6],  # correct 1 -> rank 3
        [0.2, 0.8, 0.3],  # correct 2 -> rank 2
        [0.1, 0.7, 0.2],  # correct 0 -> rank 3
    ])
    target = torch.tensor([0, 1, 2, 0])
    assert correct_ranks(scores, target).tolist() == [1, 3, 2, 3]
    m = retrieval_metrics(scores, target)
    assert m["R@1"] == 25.0 and m["R@5"] == 100.0 and m["R@10"] == 100.0
    assert m["MdR"] == 2.5 and m["MnR"] == pytest.approx(9 / 4)


def test_ties_count_against_the_model():
    scores = torch.zeros(4, 4)  # a collapsed model
    ranks = correct_ranks(scores, torch.arange(4))
    assert ranks.tolist() == [4, 4, 4, 4]
    assert retrieval_metrics(scores, torch.arange(4))["R@1"] == 0.0


def test_multi_caption_v2t_strict_and_lenient():
    # 2 videos; captions 0,1 belong to video 0, caption 2 to video 1
    scores = torch.tensor([
        [0.5, 0.9, 0.7],  # video 0: caption 1 rank 1; caption 0 has negative 0.7 above -> rank 2
        [0.8, 0.1, 0.3],  # video 1: caption 2 (0.3) has negatives 0.8 above -> rank 2
    ])
    owner = torch.tensor([0, 0, 1])
    strict, lenient = multi_correct_ranks(scores, owner)
    assert sorted(strict.tolist()) == [1, 2, 2]
    assert lenient.tolist() == [1, 2]


def test_median_of_odd_count():
    assert metrics_from_ranks(torch.tensor([1, 7, 3]))["MdR"] == 3.0


def test_v2t_lenient_is_clip4clip_protocol_hand_computed():
    # 3 videos; captions 0,1 -> video 0, caption 2 -> video 1, captions 3,4 -> video 2
    owner = torch.tensor([0, 0, 1, 2, 2])
    scores = torch.tensor([
        [0.90, 0.20, 0.50, 0.95, 0.10],  # per video best: v0 .90, v1 .50, v2 .95 -> rank 2
        [0.80, 0.70, 0.60, 0.10, 0.65],  # v0 .80, v1 .60, v2 .65 -> rank 3 (each other video once)
        [0.10, 0.30, 0.20, 0.40, 0.35],  # v0 .30, v1 .20, v2 .40 -> rank 1
    ])
    strict, lenient = multi_correct_ranks(scores, owner)
    assert lenient.tolist() == [2, 3, 1]
    # strict: caption 0: .95 above -> 2; caption 1 (.2): .5, .95 above -> 3; caption 2 (.6): .8 .7 .65 -> 4;
    # caption 3 (.40): .30 above? no (.30 < .40) -> 1; caption 4 (.35): none of .10 .30 .20 above -> 1
    assert sorted(strict.tolist()) == [1, 1, 2, 3, 4]
    m = metrics_from_ranks(lenient)
    assert m["R@1"] == pytest.approx(100 / 3) and m["MdR"] == 2.0 and m["MnR"] == 2.0


def _clip4clip_v2t(sim: np.ndarray, owner: np.ndarray) -> dict:
    """CLIP4Clip's multi-sentence v2t, written from its main_task_retrieval.py / metrics.py: reshape the
    (captions x videos) matrix to (videos, max captions, videos) padded with -inf, max over captions,
    transpose, then compute_metrics (np.sort / np.where on the diagonal)."""
    n_vid = sim.shape[1]
    max_len = np.bincount(owner).max()
    cube = np.full((n_vid, max_len, n_vid), -np.inf)
    for v in range(n_vid):
        rows = sim[owner == v]
        cube[v, : len(rows)] = rows
    x = cube.max(axis=1).T  # (videos as queries, videos)
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)[:, None]
    ind = np.where(sx - d == 0)[1]
    return {"R@1": float(np.sum(ind == 0)) * 100 / len(ind), "R@5": float(np.sum(ind < 5)) * 100 / len(ind),
            "R@10": float(np.sum(ind < 10)) * 100 / len(ind), "MdR": float(np.median(ind) + 1),
            "MnR": float(np.mean(ind) + 1)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_v2t_lenient_equals_clip4clip_code_on_random_cases(seed):
    g = np.random.default_rng(seed)
    n_vid = 30
    owner = np.sort(np.concatenate([np.arange(n_vid), g.integers(0, n_vid, size=50)]))
    sim = g.normal(size=(len(owner), n_vid)) + 1.5 * (owner[:, None] == np.arange(n_vid)[None, :])
    expected = _clip4clip_v2t(sim, owner)
    scores = torch.from_numpy(sim.T.copy())  # (videos, captions): v2t
    _, lenient = multi_correct_ranks(scores, torch.from_numpy(owner))
    # row blocks give the same ranks
    _, part = multi_correct_ranks(scores[10:], torch.from_numpy(owner), first_query=10)
    assert part.tolist() == lenient[10:].tolist()
    got = metrics_from_ranks(lenient)
    for k, v in expected.items():
        assert got[k] == pytest.approx(v), k
