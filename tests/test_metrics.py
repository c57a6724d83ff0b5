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
