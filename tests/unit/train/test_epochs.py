"""EpochFeeder: exact epochs in order, the next epoch's pipeline started before the trainer asks for it,
errors raised where the trainer waits. The real Ray Data shard is exercised by tests/ray/test_train.py."""

import threading

import pytest

from ncl_ray.train.epochs import EpochFeeder


def test_epochs_are_exact_and_the_next_one_starts_ahead():
    started = {e: threading.Event() for e in range(3)}

    def make_iter(e):
        started[e].set()
        return iter([(e, i) for i in range(4)])

    feeder = EpochFeeder(make_iter, 0, 3)
    assert list(feeder.epoch(0)) == [(0, i) for i in range(4)]
    # epoch 1's iterator was opened while epoch 0 was still being consumed (or right after), not on request
    assert started[1].wait(timeout=30)
    assert list(feeder.epoch(1)) == [(1, i) for i in range(4)]
    assert list(feeder.epoch(2)) == [(2, i) for i in range(4)]
    assert sorted(feeder.start_waits) == [0, 1, 2]
    feeder.close()


def test_a_pipeline_error_reaches_the_trainer_and_close_stops_the_thread():
    def make_iter(e):
        yield "ok"
        raise ValueError(f"bad block in epoch {e}")

    feeder = EpochFeeder(make_iter, 0, 2)
    batches = feeder.epoch(0)
    assert next(batches) == "ok"
    with pytest.raises(ValueError, match="bad block in epoch 0"):
        next(batches)
    feeder.close()

    endless = EpochFeeder(lambda e: iter(range(10 ** 9)), 0, 1)
    assert next(endless.epoch(0)) == 0
    endless.close()
    endless._thread.join(timeout=30)
    assert not endless._thread.is_alive()
