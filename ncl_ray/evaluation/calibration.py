"""The search page's confidence labels, calibrated at eval time on held-out captions. No Ray.

Each test caption is a query whose right answer is known. Its first hit, ranked as the server ranks by default
(NCL: plain similarity plus the item's bias), is right or wrong, and has a plain similarity. Thresholds on that
similarity are chosen from the top down: "strong" starts at the lowest similarity above which at least
SHARES["strong"] of the first hits were right, "fair" where at least SHARES["fair"] were; "weak" is the rest.
Each label keeps the share of right first hits it actually held and how many captions it held, so the page can
say what "strong" means for this model ("83 % of such first hits were right on 240 held-out captions"). Fewer
than MIN_CAPTIONS above a threshold never make a label.
"""

from typing import Dict, Optional

import numpy as np

SHARES = {"strong": 0.8, "fair": 0.5}  # least share of right first hits at or above each label's threshold
MIN_CAPTIONS = 5


def _lowest(plain: np.ndarray, right: np.ndarray, share: float) -> Optional[float]:
    """The lowest similarity t such that the first hits with plain >= t (at least MIN_CAPTIONS) were right in at
    least `share` of cases; plain and right sorted from the highest similarity down."""
    counts = np.arange(1, len(plain) + 1)
    ok = (np.cumsum(right) / counts >= share) & (counts >= MIN_CAPTIONS)
    ok[:-1] &= plain[:-1] > plain[1:]  # a threshold between distinct similarities only
    return float(plain[np.nonzero(ok)[0][-1]]) if ok.any() else None


def calibrate(text: np.ndarray, video: np.ndarray, caption_video: np.ndarray, bias: np.ndarray,
              tau: float) -> Dict:
    """text (R, D) held-out captions, video (C, D) the test gallery, caption_video (R,) each caption's video row,
    bias (C,) the served default's biases (logit scale) -> {"strong": {"from", "right", "captions"}, "fair": ...,
    "weak": ...}; strong or fair is left out when no threshold reaches its share, weak is always there (from -1;
    right None when no caption fell below fair)."""
    first, plain = np.zeros(len(text), np.int64), np.zeros(len(text), np.float32)
    for i in range(0, len(text), 1024):  # row blocks: (1024, C) at a time
        sims = text[i:i + 1024] @ video.T
        first[i:i + 1024] = np.argmax(sims / tau + bias[None], axis=1)  # each caption's first hit
        plain[i:i + 1024] = sims[np.arange(len(sims)), first[i:i + 1024]]
    right = (first == np.asarray(caption_video)).astype(np.float64)
    order = np.argsort(-plain, kind="stable")
    plain, right = plain[order], right[order]
    out, upper = {}, np.inf
    for label in ("strong", "fair"):
        t = _lowest(plain, right, SHARES[label])
        if t is None or t >= upper:
            continue
        held = (plain >= t) & (plain < upper)
        out[label] = {"from": round(t, 6), "right": round(float(right[held].mean()), 4), "captions": int(held.sum())}
        upper = t
    held = plain < upper
    out["weak"] = {"from": -1.0, "right": round(float(right[held].mean()), 4) if held.any() else None,
                   "captions": int(held.sum())}
    return out


def label_of(calibration: Dict, plain: float) -> str:
    """The label whose range holds a plain score: the highest whose threshold it reaches, else weak (a query
    lowered by a negative phrase is not a unit vector, so its score can fall below -1)."""
    for label in ("strong", "fair"):
        if label in calibration and plain >= calibration[label]["from"]:
            return label
    return "weak"
