"""Progress from Ray tasks and training workers to the driver's console.

A tiny actor (`ProgressBoard`, no CPU) holds counters that decode tasks and rank 0 post to (fire-and-forget);
`watch(board, render)` polls it from a driver thread while the driver blocks in Ray Data or Ray Train.
Worker output itself is not forwarded to the console (it is in the Ray logs copied to the run folder).
"""

import threading
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator

import ray


@ray.remote(num_cpus=0)
class ProgressBoard:
    def __init__(self) -> None:
        self.state: Dict[str, Any] = {}

    def add(self, key: str, n: int = 1) -> None:
        self.state[key] = self.state.get(key, 0) + n

    def set(self, values: Dict[str, Any]) -> None:
        self.state.update(values)

    def get(self) -> Dict[str, Any]:
        return dict(self.state)


def new_board():
    return ProgressBoard.remote()


@contextmanager
def watch(board, render: Callable[[Dict[str, Any]], None], interval_s: float = 1.0) -> Iterator[None]:
    """Call `render(state)` every `interval_s` in a thread while the body runs, and once at the end."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                render(ray.get(board.get.remote(), timeout=10))
            except Exception:  # a slow or gone board must never break the run
                pass

    t = threading.Thread(target=loop, daemon=True, name="ncl-ray-progress")
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=5)
        try:
            render(ray.get(board.get.remote(), timeout=10))
        except Exception:
            pass
