"""Why a hit ranks where it does, in numbers the search page shows. No Ray.

For one query and one method, each hit gets:
- `plain_score`: the cosine similarity s of query and video (or moment);
- `bias`: what the method adds to it, in the same units (tau * b_j for a folded bias; 0 for none);
- `plain_rank`: the rank of its video by s alone (a video cut into windows counts once, by its best window), so
  the page can say how far the method moved it; over every row for an exact index (whose own search reads
  every row anyway), and for an HNSW index among the PLAIN_TOP best rows of its plain search, None ("far
  down") for a hit beyond them;
- `confidence`: how far the hit's score stands above this query's scores over the gallery, in standard
  deviations (z = (score - mean) / std), the mean and spread taken over a fixed sample of SAMPLE rows (all of
  them in a smaller gallery): a query that matches nothing in particular has no hit far above the rest,
  whatever its raw score, so "weak" reads as weak;
A request on an HNSW index reads no more rows than its own searches do.
- `confidence_label`: with the checkpoint's paired bank (its caption and video queues, row i of one the caption
  of row i of the other), calibrated on training pairs: "strong" when the plain score reaches the median
  similarity of a caption and its own video, "fair" when it reaches their 10th percentile and beats 99 % of
  mismatched pairs, else "weak" (`match_percentile`: where the score sits among the true pairs). Without a
  paired bank, from z: >= 3 strong, >= 2 fair;
- `coverage`: the hit's largest similarity to the training captions (the checkpoint's query bank), and
  `outside_training` when it is below what nearly all training videos reach (their 5th percentile, each with its
  own caption left out; without the video queue, the gallery's own 5th percentile): the model has seen nothing
  like that video, so its score, and its bias, say little.
For the query itself, `query_coverage` is its largest similarity to the training captions and `query_outside`
says when that is below the 5th percentile of the training captions' own nearest-neighbour similarities.
"""

from typing import Dict, List, Optional

import numpy as np

STRONG, FAIR = 3.0, 2.0  # confidence labels: z >= 3 strong, >= 2 fair, else weak
SAMPLE = 2000  # gallery rows (and bank rows) sampled for the reference percentiles and a query's score spread
PLAIN_TOP = 1000  # rows of the plain ranking searched to place a hit in it


def confidence_label(z: float) -> str:
    return "strong" if z >= STRONG else "fair" if z >= FAIR else "weak"


class Explainer:
    """Per-hit numbers for a GalleryIndex; `bank` (Q, D) unit rows: the training captions, or None."""

    def __init__(self, index, bank: Optional[np.ndarray] = None, seed: int = 0,
                 bank_videos: Optional[np.ndarray] = None):
        self.index = index
        self.video_of = np.empty(len(index), np.int64)  # (C,) row -> its video's number
        for j, rows in enumerate(index.rows_of.values()):
            self.video_of[rows] = j
        self.bank = None if bank is None or not len(bank) else np.asarray(bank, np.float32)
        self.gallery_p5 = self.bank_p5 = None
        g = np.random.default_rng(seed)
        self.sample = np.sort(g.choice(len(index), size=min(SAMPLE, len(index)), replace=False))  # (n,) rows
        self.pairs = None  # (median, 10th percentile) of true-pair similarities, 99th of mismatched
        if self.bank is not None and bank_videos is not None and len(bank_videos) == len(self.bank) > 2:
            self._calibrate(np.asarray(bank_videos, np.float32), g)
        elif self.bank is not None:
            rows = self.sample
            self.gallery_p5 = float(np.percentile(self._coverage(index.plain[rows]), 5))
        if self.bank is not None:
            sample = self.bank[g.choice(len(self.bank), size=min(SAMPLE, len(self.bank)), replace=False)]
            sims = sample @ self.bank.T  # (n, Q)
            sims[np.arange(len(sample)), np.argmax(sims, axis=1)] = -np.inf  # itself (or its twin) left out
            self.bank_p5 = float(np.percentile(sims.max(axis=1), 5))

    def _calibrate(self, videos: np.ndarray, g: np.random.Generator) -> None:
        """True pairs (caption i, video i) against mismatched ones, and the training videos' coverage."""
        n = len(videos)
        pick = g.choice(n, size=min(SAMPLE, n), replace=False)
        true = np.einsum("ij,ij->i", self.bank[pick], videos[pick])  # (n,)
        shift = pick[(np.arange(len(pick)) + 1) % len(pick)]  # another row's video: a mismatched pair
        wrong = np.einsum("ij,ij->i", self.bank[pick], videos[shift])
        self.true_pairs = np.sort(true)
        self.pairs = (float(np.median(true)), float(np.percentile(true, 10)), float(np.percentile(wrong, 99)))
        sims = videos[pick] @ self.bank.T  # (n, Q)
        sims[np.arange(len(pick)), pick] = -np.inf  # each video's own caption left out
        self.gallery_p5 = float(np.percentile(sims.max(axis=1), 5))

    def label(self, plain: float, z: float) -> Dict:
        """The confidence label of a hit: calibrated on training pairs when the bank is paired, else by z."""
        if self.pairs is None:
            return {"confidence_label": confidence_label(z)}
        median, p10, wrong99 = self.pairs
        percentile = 100.0 * float(np.searchsorted(self.true_pairs, plain, side="right")) / len(self.true_pairs)
        name = "strong" if plain >= median else "fair" if plain >= max(p10, wrong99) else "weak"
        return {"confidence_label": name, "match_percentile": round(percentile, 1)}

    def _coverage(self, vectors: np.ndarray) -> np.ndarray:
        return (vectors @ self.bank.T).max(axis=1)  # (n,) nearest training caption

    def query(self, q: np.ndarray) -> Dict:
        """Query-level numbers: its nearest training caption, and whether that is unusually far."""
        if self.bank is None:
            return {}
        cov = float(self._coverage(q[None])[0])
        return {"query_coverage": round(cov, 4), "query_outside": bool(cov < self.bank_p5)}

    def _bias(self, method: str, rows) -> np.ndarray:
        if method == "none":
            return np.zeros(len(rows), np.float32)
        return self.index.temperature * self.index.biases[method][rows]  # (n,) in similarity units

    def _plain_ranks(self, q: np.ndarray, plain: np.ndarray) -> List[Optional[int]]:
        """Each hit's video's rank by plain score: over every row for an exact index (what its own search
        reads anyway), from the plain HNSW index's PLAIN_TOP best rows otherwise (None: beyond them)."""
        index = self.index
        if index.kind == "exact" or len(index) <= PLAIN_TOP:
            scores, of, n = index.plain @ q, self.video_of, len(index.rows_of)  # (C,) every row
        else:
            _, found = index.indexes["none"].search(np.ascontiguousarray(q[None], np.float32), PLAIN_TOP)
            top = found[0][found[0] >= 0]  # (k,) rows, best first
            scores = index.plain[top] @ q  # (k,) the same arithmetic as the hits' own plain scores
            videos, of = np.unique(self.video_of[top], return_inverse=True)
            n = len(videos)
        if n == len(scores):  # one row per video: its score is its best
            best = scores
        else:
            best = np.full(n, -np.inf, np.float32)
            np.maximum.at(best, of, scores)  # each video's best row
        whole = len(scores) == len(index)
        floor = float(scores.min()) if len(scores) else np.inf
        return [int((best > p).sum()) + 1 if whole or p >= floor else None for p in plain]

    def hits(self, q: np.ndarray, rows: List[int], method: str) -> List[Dict]:
        """Numbers for the hits at gallery `rows` under `method`, for the query q (D,)."""
        plain = self.index.plain[rows] @ q  # (n,)
        bias = self._bias(method, rows)
        reference = self.index.plain[self.sample] @ q + self._bias(method, self.sample)  # (SAMPLE,) scores
        mean, std = float(reference.mean()), float(reference.std()) or 1.0
        cover = self._coverage(self.index.plain[rows]) if self.bank is not None else None
        ranks = self._plain_ranks(q, plain)
        out = []
        for i in range(len(rows)):
            z = (float(plain[i] + bias[i]) - mean) / std
            item = {"plain_score": round(float(plain[i]), 6), "bias": round(float(bias[i]), 6),
                    "plain_rank": ranks[i], "confidence": round(z, 2), **self.label(float(plain[i]), z)}
            if cover is not None:
                item.update(coverage=round(float(cover[i]), 4), outside_training=bool(cover[i] < self.gallery_p5))
            out.append(item)
        return out
