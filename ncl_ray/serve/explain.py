"""Why a hit ranks where it does, in numbers the search page shows. No Ray.

For one query and one method, each hit gets:
- `plain_score`: the cosine similarity s of query and video (or moment);
- `bias`: what the method adds to it, in the same units (tau * b_j for a folded bias; 0 for none);
- `plain_rank`: the rank of its video by s alone (a video cut into windows counts once, by its best window), so
  the page can say how far the method moved it. Exact (`plain_rank_exact`) in a gallery of at most SAMPLE
  rows; in a larger one estimated from the fixed sample (the share of sampled rows above s, scaled to the
  gallery's videos), and never better than the other hits of the same answer show: no second search and no scan
  of the gallery per request, whatever the index;
- `confidence`: how far the hit's score stands above this query's scores over the gallery, in standard
  deviations (z = (score - mean) / std), the mean and spread taken over a fixed sample of SAMPLE rows (all of
  them in a smaller gallery): a query that matches nothing in particular has no hit far above the rest,
  whatever its raw score, so "weak" reads as weak;
A request reads the hits' rows and the sample (kept contiguous, with its biases, per loaded version); each
row's coverage (below) is computed once per version where that costs at most COVERAGE_ONCE multiply-adds, per
hit otherwise.
- `confidence_label`: where `ncl-ray eval` calibrated the index on its held-out captions
  (evaluation/calibration.py), the label whose similarity range holds the hit's plain score, with the share of
  right first hits it held there (`label_right`, of `label_captions`); otherwise, with the checkpoint's paired
  bank (its caption and video queues, row i of one the caption of row i of the other), calibrated on training
  pairs: "strong" when the plain score reaches the median similarity of a caption and its own video, "fair"
  when it reaches their 10th percentile and beats 99 % of mismatched pairs, else "weak" (`match_percentile`:
  where the score sits among the true pairs). Without a paired bank, from z: >= 3 strong, >= 2 fair;
- `coverage`: the hit's largest similarity to the training captions (the checkpoint's query bank), and
  `outside_training` when it is below what nearly all training videos reach (their 5th percentile, each with its
  own caption left out; without the video queue, the gallery's own 5th percentile): the model has seen nothing
  like that video, so its score, and its bias, say little.
For the query itself, `query_coverage` is its largest similarity to the training captions and `query_outside`
says when that is below the 5th percentile of the training captions' own nearest-neighbour similarities.
"""

from typing import Dict, List, Optional, Tuple

import numpy as np

from ncl_ray.evaluation.calibration import label_of

STRONG, FAIR = 3.0, 2.0  # confidence labels: z >= 3 strong, >= 2 fair, else weak
SAMPLE = 2000  # gallery rows (and bank rows) sampled for the reference percentiles and a query's score spread
COVERAGE_ONCE = 5e11  # rows x bank captions x dim: below it, every row's coverage is computed when a version loads


def _calibration(found) -> Optional[Dict]:
    """The index's held-out calibration (evaluation/calibration.py) when it is well formed, else None."""
    try:
        ok = isinstance(found, dict) and "weak" in found and all(
            isinstance(v["from"], (int, float)) and np.isfinite(v["from"]) and isinstance(v["captions"], int)
            and (v["right"] is None or 0 <= v["right"] <= 1) for k, v in found.items()) and \
            set(found) <= {"strong", "fair", "weak"}
    except (TypeError, KeyError):
        ok = False
    return found if ok else None


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
        self.sample_plain = np.ascontiguousarray(index.plain[self.sample])  # (n, D)
        self.sample_bias = {m: self._bias(m, self.sample) for m in index.methods}  # method -> (n,)
        self.coverage = None  # (C,) every row's nearest training caption, when computed once
        if self.bank is not None and len(index) * len(self.bank) * index.plain.shape[1] <= COVERAGE_ONCE:
            step = max(1, (1 << 24) // len(self.bank))  # rows per block: at most 16M similarities at once
            self.coverage = np.concatenate([self._coverage(index.plain[i:i + step])
                                            for i in range(0, len(index), step)]) if len(index) else np.zeros(0)
        self.calibration = _calibration(index.meta.get("confidence"))  # from `ncl-ray eval`'s held-out captions
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
        """The confidence label of a hit: calibrated on the evaluation's held-out captions when the index holds
        that calibration, else on training pairs when the bank is paired, else by z."""
        if self.calibration is not None:
            name = label_of(self.calibration, plain)
            held = self.calibration[name]
            return {"confidence_label": name, "label_right": held["right"], "label_captions": held["captions"]}
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

    def _plain_ranks(self, sampled: np.ndarray, plain: np.ndarray) -> Tuple[List[int], bool]:
        """Each hit's video's rank by plain score (hits: one row per video) from the sample's plain scores
        `sampled` (n,): exact when the sample is the whole gallery, else estimated; and whether exact."""
        of = self.video_of[self.sample]
        if len(self.sample) == len(self.index):
            best = np.full(len(self.index.rows_of), -np.inf, np.float32)
            np.maximum.at(best, of, sampled)  # each video's best row
            return [int((best > p).sum()) + 1 for p in plain], True
        scale = len(self.index.rows_of) / len(self.sample)  # videos per sampled row
        above = (sampled[None, :] > plain[:, None]).sum(axis=1)  # (k,) sampled rows above each hit
        return [max(int((plain > p).sum()), int(round(a * scale))) + 1 for p, a in zip(plain, above)], False

    def hits(self, q: np.ndarray, rows: List[int], method: str) -> List[Dict]:
        """Numbers for the hits at gallery `rows` under `method`, for the query q (D,)."""
        plain = self.index.plain[rows] @ q  # (k,)
        bias = self._bias(method, rows)
        sampled = self.sample_plain @ q  # (n,) the sample's plain scores
        reference = sampled + self.sample_bias[method]  # (n,) and under the method
        mean, std = float(reference.mean()), float(reference.std()) or 1.0
        cover = None if self.bank is None else self.coverage[rows] if self.coverage is not None else \
            self._coverage(self.index.plain[rows])
        ranks, exact = self._plain_ranks(sampled, plain)
        out = []
        for i in range(len(rows)):
            z = (float(plain[i] + bias[i]) - mean) / std
            item = {"plain_score": round(float(plain[i]), 6), "bias": round(float(bias[i]), 6),
                    "plain_rank": ranks[i], "plain_rank_exact": exact, "confidence": round(z, 2),
                    **self.label(float(plain[i]), z)}
            if cover is not None:
                item.update(coverage=round(float(cover[i]), 4), outside_training=bool(cover[i] < self.gallery_p5))
            out.append(item)
        return out
