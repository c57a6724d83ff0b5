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


def train_progress(bar_holder: list):
    """A renderer for the board's training state: one Progress line (created when the total is known)."""
    from ncl_ray.ui.console import Progress

    def render(st: Dict[str, Any]) -> None:
        if "total" not in st:
            return
        if not bar_holder:
            bar_holder.append(Progress("train", st["total"], "steps"))
        extra = f"epoch {st.get('epoch', 0)}/{st.get('epochs', 0)}"
        if "loss" in st:
            cps = st.get("clips_per_s", 0)
            extra += f"  loss {st['loss']:.3f}  {cps:.0f} clips/s" if cps >= 10 else \
                f"  loss {st['loss']:.3f}  {cps:.2f} clips/s"
        if st.get("val"):
            extra += f"  val {st['val']}"
        if st.get("phase", "train") != "train":
            extra += f"  {st['phase']}"
        phase = st.get("phase", "train")
        bar_holder[0].update(st.get("step", 0), extra, force=phase != last_phase[0])
        last_phase[0] = phase

    last_phase = ["train"]
    return render


def with_store_peak(render):
    """Wrap a board renderer so that it also samples the object store's use; returns (render, [peak bytes])."""
    import ray

    peak = [0.0]

    def wrapped(st):
        render(st)
        total, free = ray.cluster_resources(), ray.available_resources()
        peak[0] = max(peak[0], total.get("object_store_memory", 0) - free.get("object_store_memory", 0))

    return wrapped, peak


def board_report(board, n: int):
    """(workers [{rank, node_id, text_queue_sum, video_queue_sum}], profile) from one read of the board."""
    import ray

    st = ray.get(board.get.remote(), timeout=30)
    workers = [{"rank": r, **{k.split("/", 2)[2]: v for k, v in st.items() if k.startswith(f"worker/{r}/")}}
               for r in range(n)]
    return workers, {k.split("/", 1)[1]: v for k, v in st.items() if k.startswith("profile/")}
