"""The tiny run the Ray tiers train: 40 built-in videos of 4 x 16 px frames, batch 4, a 24-clip queue. One
decoded corpus serves the whole session (conftest's `builtin_data`): the cache is keyed by these settings."""

from pathlib import Path
from typing import List

TINY = ["data.synthetic_videos=40", "data.num_frames=4", "data.frame_size=16", "data.max_words=16",
        "train.batch_size=4", "ncl.queue_size=24"]


def tiny(root: Path, runs: Path, *extra: str) -> List[str]:
    """The tiny run's overrides: the synthetic videos and their clip cache under `root` (shared by the session),
    its run folders under `runs`."""
    return [*TINY, f"data.root={root}/syn", f"data.cache_dir={root}/cache", f"run.storage_path={runs}", *extra]
