"""Training batches epoch after epoch without a start-up gap between them.

Every epoch of a Ray Data shard is a new streaming execution: the split coordinator waits for every rank,
then read and decode tasks start and the first blocks travel to the worker, which costs seconds per epoch
(more on the streaming Parquet path). `EpochFeeder` iterates the shard in a background thread that starts epoch
e + 1 as soon as epoch e's last batch is buffered, so that start-up overlaps with the tail of epoch e, the
evaluation and the checkpoint instead of following them. Epochs stay exact: each is its own pass over the
shard, in order, with its own shuffle seed; at most `buffered` batches wait per epoch.

    feeder = EpochFeeder(lambda e: shard.iter_torch_batches(..., local_shuffle_seed=e), start, epochs)
    for epoch in range(start, epochs):
        for batch in feeder.epoch(epoch): ...
    feeder.close()
    feeder.start_waits  # {epoch: seconds the trainer waited for that epoch's first batch}
    feeder.startups     # {epoch: seconds from opening that epoch's iterator to its first batch (hidden or not)}
"""

import queue
import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator

_END = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class EpochFeeder:
    """Batches of epochs `first` .. `last - 1`, produced ahead by one thread (see the module docstring)."""

    def __init__(self, make_iter: Callable[[int], Iterable[Any]], first: int, last: int, buffered: int = 1):
        self._make_iter = make_iter
        self._queues = {e: queue.Queue(maxsize=max(1, buffered)) for e in range(first, last)}
        self._stop = threading.Event()
        self.start_waits: Dict[int, float] = {}
        self.startups: Dict[int, float] = {}
        self._thread = threading.Thread(target=self._produce, args=(first, last), name="epoch-feeder", daemon=True)
        self._thread.start()

    def _put(self, q: "queue.Queue", item: Any) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, first: int, last: int) -> None:
        for epoch in range(first, last):
            q = self._queues[epoch]
            try:
                opened = time.perf_counter()
                for batch in self._make_iter(epoch):
                    self.startups.setdefault(epoch, time.perf_counter() - opened)
                    if not self._put(q, batch):
                        return
            except BaseException as e:  # handed to the trainer, which raises it where it waits
                self._put(q, _Failure(e))
                return
            if not self._put(q, _END):
                return

    def epoch(self, epoch: int) -> Iterator[Any]:
        """The batches of one epoch, in order; raises what the data pipeline raised."""
        q = self._queues[epoch]
        asked = time.perf_counter()
        while True:
            item = q.get()
            if epoch not in self.start_waits:
                self.start_waits[epoch] = time.perf_counter() - asked
            if item is _END:
                del self._queues[epoch]
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def close(self) -> None:
        """Stop producing (the thread ends at its next batch); safe to call twice."""
        self._stop.set()
        for q in list(self._queues.values()):
            while not q.empty():
                q.get_nowait()
