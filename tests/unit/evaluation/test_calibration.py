"""Confidence labels calibrated on held-out captions (evaluation/calibration.py), on a gallery built by hand."""

import numpy as np

from ncl_ray.evaluation.calibration import calibrate, label_of


def _captions(plain, right):
    """Ten videos e_0..e_9 in 11 dimensions; caption i's first hit is its own video (right) or the next one,
    with the plain similarity given: the rest of the caption lies along e_10, no video's direction."""
    video = np.eye(11, dtype=np.float32)[:10]
    text = np.zeros((len(plain), 11), np.float32)
    for i, (p, r) in enumerate(zip(plain, right)):
        text[i, i if r else (i + 1) % 10] = p
        text[i, 10] = np.sqrt(1 - p * p)
    return text, video


def test_labels_hold_their_stated_share_of_right_first_hits():
    plain = [0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    right = [1, 1, 1, 1, 0, 1, 0, 0, 1, 0]
    text, video = _captions(plain, right)
    # precision from the top down: 1 1 1 1 .8 .83 .71 .63 .67 .6 -> strong from 0.6 (the lowest at or above 0.8,
    # counting at least 5 captions), fair from 0.2 (the lowest at or above 0.5)
    cal = calibrate(text, video, np.arange(10), np.zeros(10, np.float32), 0.05)
    assert cal["strong"] == {"from": 0.6, "right": round(5 / 6, 4), "captions": 6}
    assert cal["fair"] == {"from": 0.2, "right": 0.25, "captions": 4}
    assert cal["weak"] == {"from": -1.0, "right": None, "captions": 0}
    assert [label_of(cal, p) for p in (0.65, 0.6, 0.3, 0.1, -1.4)] == ["strong", "strong", "fair", "weak", "weak"]


def test_a_model_that_is_rarely_right_has_no_strong_label_and_the_bias_picks_the_first_hit():
    plain = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    text, video = _captions(plain, [1, 0, 0, 0, 1, 0])
    cal = calibrate(text, video, np.arange(6), np.zeros(10, np.float32), 0.05)
    assert "strong" not in cal and "fair" not in cal  # 2 of 6 right: no threshold holds half
    assert cal["weak"] == {"from": -1.0, "right": round(2 / 6, 4), "captions": 6}
    # the first hit is the served ranking's: a bias of +17 (logits) on row 1 beats caption 1's wrong hit (0.8 / 0.05
    # = 16) but not caption 0's own (0.9 / 0.05 = 18): both right; fewer than 5 captions make no strong or fair label
    bias = np.zeros(10, np.float32)
    bias[1] = 17.0
    assert calibrate(text[:2], video, np.arange(2), bias, 0.05) == {"weak": {"from": -1.0, "right": 1.0, "captions": 2}}
