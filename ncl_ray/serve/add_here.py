"""A few videos added to an index are embedded in the command's own process: on a private instance, Ray's start
and its actor pool (about 20 s on 2 cores) cost more than decoding and embedding a handful of short videos. The
same embedder runs (serve.add.VideoEmbedder: the training decoder, windows, per-file errors); a configured
cluster ($RAY_ADDRESS or run.ray_address) always gets the work, and so does an add of more than HERE_MAX videos."""

from typing import Callable, Dict, List, Sequence

from ncl_ray.data.manifest import VideoEntry

HERE_MAX = 8  # videos; above, the Ray Data actor pool (one model per CPU) is worth its start
BATCH = 4  # videos per embedder call, as the pool's batches


def embeds_here(n_videos: int, address: str) -> bool:
    """Whether an add of `n_videos` to a checkpoint whose run names `address` runs in this process."""
    from ncl_ray.runtime.cluster import resolve_address

    return n_videos <= HERE_MAX and resolve_address(address) == "local"


def embed_here(embedder: Callable[[Dict], Dict], fresh: Sequence[VideoEntry]) -> List[Dict]:
    """The rows the actor pool's take_all() returns (one per window: video_id, path, embedding (D,), error,
    start_s, end_s, duration_s), from `embedder` (serve.add.VideoEmbedder) called here, BATCH videos at a time."""
    rows: List[Dict] = []
    for a in range(0, len(fresh), BATCH):
        part = fresh[a: a + BATCH]
        out = embedder({"video_id": [e.video_id for e in part], "path": [e.path for e in part]})
        rows += [{k: v[i] for k, v in out.items()} for i in range(len(out["video_id"]))]
    return rows
