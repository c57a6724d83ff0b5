import torch

from ncl_ray.ncl.queue import FeatureQueue


def test_fifo_wraps_around():
    q = FeatureQueue(5, 2)
    assert q.embeddings.shape == (0, 2)
    q.enqueue(torch.tensor([[1.0, 1], [2, 2], [3, 3]]))
    assert q.embeddings[:, 0].tolist() == [1, 2, 3] and int(q.ptr) == 3
    q.enqueue(torch.tensor([[4.0, 4], [5, 5], [6, 6]]))  # 6 overwrites the oldest (1)
    assert int(q.filled) == 5 and int(q.ptr) == 1
    assert sorted(q.embeddings[:, 0].tolist()) == [2, 3, 4, 5, 6]
    assert q.queue[0, 0] == 6


def test_batch_larger_than_queue_keeps_latest():
    q = FeatureQueue(3, 1)
    q.enqueue(torch.arange(7.0)[:, None])
    assert sorted(q.embeddings[:, 0].tolist()) == [4, 5, 6]


def test_zero_size_queue_is_empty():
    q = FeatureQueue(0, 4)
    q.enqueue(torch.randn(3, 4))
    assert q.embeddings.shape == (0, 4)


def test_state_dict_round_trip_and_detached():
    q = FeatureQueue(4, 3)
    x = torch.randn(3, 3, requires_grad=True)
    q.enqueue(x * 2)
    assert not q.queue.requires_grad
    r = FeatureQueue(4, 3)
    r.load_state_dict(q.state_dict())
    assert torch.equal(r.embeddings, q.embeddings) and int(r.ptr) == 3 and int(r.filled) == 3
    assert set(q.state_dict()) == {"queue", "ptr", "filled"}


def test_a_loaded_queue_goes_on_writing_where_the_saved_one_stopped():
    """The write position and fill count live on the host too (no GPU read per step); a load restores them."""
    q = FeatureQueue(4, 2)
    q.enqueue(torch.arange(6.0).view(3, 2))
    r = FeatureQueue(4, 2)
    r.load_state_dict(q.state_dict())
    for queue in (q, r):
        queue.enqueue(torch.full((2, 2), 9.0))
    assert torch.equal(q.queue, r.queue) and int(r.ptr) == 1 and int(r.filled) == 4
    assert r.embeddings.shape == (4, 2)
