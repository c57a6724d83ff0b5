"""Near-copies in search results: another file, or a re-encoded copy, of the same clip shown once, the others
named under it ("also in ..."). No Ray.

How close two distinct videos lie depends on the model (a briefly trained one puts many within a cosine
distance of 0.002), so a copy is defined relative to the index: closer than COPY_SHARE of the typical distance
from a row to the nearest row of another video.
"""

from typing import Dict, List

import numpy as np

COPY_SHARE = 0.05  # two rows are copies when their distance is under this share of the typical neighbour distance
NN_SAMPLE = 200  # rows sampled to measure that typical distance (once per loaded index)


def collapse(hits: List[Dict], plain: np.ndarray, k: int, copy_cosine: float) -> List[Dict]:
    """Ranked hits -> at most k, a hit whose best row is a copy of a higher-ranked kept hit's (cosine >=
    `copy_cosine`: another file, or a re-encoded copy, of the same clip) folded into that one's `also_in`."""
    kept: List[Dict] = []
    for h in hits:
        twin = next((o for o in kept if float(plain[o["row"]] @ plain[h["row"]]) >= copy_cosine), None)
        if twin is not None:
            twin.setdefault("also_in", []).append(h["video_id"])
        elif len(kept) < k:
            kept.append(h)
    return kept


def copy_cosine(plain: np.ndarray, rows_of: Dict[str, List[int]]) -> float:
    """plain (C, D) unit rows, rows_of video -> its rows: 1 - COPY_SHARE x the median distance (1 - cosine) of
    NN_SAMPLE rows to their nearest row of another video."""
    number = np.empty(len(plain), np.int64)  # (C,) each row's video
    for j, rows in enumerate(rows_of.values()):
        number[rows] = j
    pick = np.random.default_rng(0).choice(len(plain), size=min(NN_SAMPLE, len(plain)), replace=False)
    best = np.full(len(pick), -np.inf, np.float32)
    for a in range(0, len(plain), 1 << 16):  # column blocks: (sample, 65536) at a time
        sims = plain[pick] @ plain[a:a + (1 << 16)].T
        sims[number[pick][:, None] == number[None, a:a + (1 << 16)]] = -np.inf  # its own video's rows
        best = np.maximum(best, sims.max(axis=1))
    near = best[np.isfinite(best)]
    typical = float(np.median(1.0 - near)) if len(near) else 1.0
    return 1.0 - max(COPY_SHARE * typical, 1e-6)  # identical rows (cosine 1 up to float32 rounding) always fold
