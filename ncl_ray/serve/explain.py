"""Why a hit ranks where it does, in numbers the search page shows. No Ray.

For one query and one method, each hit gets:
- `plain_score`: the cosine similarity s of query and video (or moment);
- `bias`: what the method adds to it, in the same units (tau * b_j for a folded bias; 0 for none);
- `plain_rank`: the rank of its video by s alone (a video cut into windows counts once, by its best window), so
  the page can say how far the method moved it;
- `confidence`: how far the hit's score stands above this query's scores over the whole gallery, in standard
  deviations (z = (score - mean) / std): a query that matches nothing in particular has no hit far above the
  rest, whatever its raw score, so "weak" reads as weak;
- `coverage`: the hit's largest similarity to the training captions (the checkpoint's query bank), and
  `outside_training` when it is below what nearly all of the gallery reaches (its 5th percentile): the model has
  seen nothing like that video, so its score, and its bias, say little.
For the query itself, `query_coverage` is its largest similarity to the training captions and `query_outside`
says when that is below the 5th percentile of the training captions' own nearest-neighbour similarities.
"""

from typing import Dict, List, Optional

import numpy as np

STRONG, FAIR = 3.0, 2.0  # confidence labels: z >= 3 strong, >= 2 fair, else weak
SAMPLE = 2000  # gallery rows (and bank rows) sampled for the reference percentiles


def confidence_label(z: float) -> str:
    return "strong" if z >= STRONG else "fair" if z >= FAIR else "weak"


class Explainer:
    """Per-hit numbers for a GalleryIndex; `bank` (Q, D) unit rows: the training captions, or None."""

    def __init__(self, index, bank: Optional[np.ndarray] = None, seed: int = 0):
        self.index = index
        self.video_of = np.empty(len(index), np.int64)  # (C,) row -> its video's number
        for j, rows in enumerate(index.rows_of.values()):
            self.video_of[rows] = j
        self.bank = None if bank is None or not len(bank) else np.asarray(bank, np.float32)
        self.gallery_p5 = self.bank_p5 = None
        if self.bank is not None:
            g = np.random.default_rng(seed)
            rows = g.choice(len(index), size=min(SAMPLE, len(index)), replace=False)
            self.gallery_p5 = float(np.percentile(self._coverage(index.plain[rows]), 5))
            sample = self.bank[g.choice(len(self.bank), size=min(SAMPLE, len(self.bank)), replace=False)]
            sims = sample @ self.bank.T  # (n, Q)
            sims[np.arange(len(sample)), np.argmax(sims, axis=1)] = -np.inf  # itself (or its twin) left out
            self.bank_p5 = float(np.percentile(sims.max(axis=1), 5))

    def _coverage(self, vectors: np.ndarray) -> np.ndarray:
        return (vectors @ self.bank.T).max(axis=1)  # (n,) nearest training caption

    def query(self, q: np.ndarray) -> Dict:
        """Query-level numbers: its nearest training caption, and whether that is unusually far."""
        if self.bank is None:
            return {}
        cov = float(self._coverage(q[None])[0])
        return {"query_coverage": round(cov, 4), "query_outside": bool(cov < self.bank_p5)}

    def hits(self, q: np.ndarray, rows: List[int], method: str) -> List[Dict]:
        """Numbers for the hits at gallery `rows` under `method`, for the query q (D,)."""
        plain = self.index.plain @ q  # (C,)
        bias = np.zeros_like(plain) if method == "none" else \
            self.index.temperature * self.index.biases[method]  # (C,) in similarity units
        scores = plain + bias  # the method's ranking scores (the folded inner product)
        mean, std = float(scores.mean()), float(scores.std()) or 1.0
        cover = self._coverage(self.index.plain[rows]) if self.bank is not None else None
        best = np.full(len(self.index.rows_of), -np.inf, np.float32)
        np.maximum.at(best, self.video_of, plain)  # (V,) each video's best plain score
        out = []
        for i, r in enumerate(rows):
            z = (float(scores[r]) - mean) / std
            item = {"plain_score": round(float(plain[r]), 6), "bias": round(float(bias[r]), 6),
                    "plain_rank": int((best > plain[r]).sum()) + 1, "confidence": round(z, 2),
                    "confidence_label": confidence_label(z)}
            if cover is not None:
                item.update(coverage=round(float(cover[i]), 4), outside_training=bool(cover[i] < self.gallery_p5))
            out.append(item)
        return out
