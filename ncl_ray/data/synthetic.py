"""The built-in dataset: small videos of moving coloured shapes, encoded with PyAV, with templated captions.

    ncl-ray make-data --out data/synthetic --videos 160

Each video shows one shape (colour, shape, size) moving in one direction over a background, with a few
random distractor dots; captions describe it in three phrasings, so a retrieval model must bind colour, shape,
size, motion and background. Left/right and up/down differ only in frame order, which mean pooling cannot
see: the task is not saturated by a bag of frames. `write_video` is also what the tests use to make files.
"""

import json
import os
import shutil
import socket
from fractions import Fraction
from pathlib import Path
from typing import List, Optional, Sequence

import av
import numpy as np

COLORS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 80, 230), "yellow": (230, 220, 40),
          "white": (240, 240, 240), "magenta": (210, 40, 200)}
SHAPES = ("square", "circle", "bar")
MOTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "nowhere": (0, 0)}
BACKGROUNDS = {"black": (10, 10, 10), "gray": (110, 110, 110), "navy": (20, 20, 90)}
SIZES = {"small": 7, "large": 13}
TEMPLATES = (
    "a {size} {color} {shape} moving {motion} on a {bg} background",
    "{color} {shape} going {motion}",
    "there is a {size} {shape} in {color} that moves {motion} over {bg}",
)


def write_video(path: str, frames: np.ndarray, fps: int = 8, codec: str = "libx264",
                pix_fmt: str = "yuv420p", rotation: int = 0, times: Optional[Sequence[float]] = None,
                gop: int = 8) -> str:
    """Encode uint8 frames (T, H, W, 3) to `path` with PyAV.

    Args:
        times: presentation time of each frame in seconds (variable frame rate); default i / fps.
        rotation: display-matrix rotation in degrees (counter-clockwise), as phones write it.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    T, H, W, _ = frames.shape
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
        stream.gop_size = gop
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            if times is not None:
                frame.pts = int(round(times[i] * 1000))
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def render(color, shape, size, motion, bg, num_frames=16, side=64, rng=None) -> np.ndarray:
    """uint8 frames (T, side, side, 3) of one moving shape plus distractor dots."""
    rng = rng or np.random.default_rng()
    frames = np.empty((num_frames, side, side, 3), np.uint8)
    frames[:] = BACKGROUNDS[bg]
    r = SIZES[size]
    dx, dy = MOTIONS[motion]
    travel = side - 2 * r - 4
    x0 = rng.uniform(r + 2, side - r - 2) if dx == 0 else (r + 2 if dx > 0 else side - r - 2)
    y0 = rng.uniform(r + 2, side - r - 2) if dy == 0 else (r + 2 if dy > 0 else side - r - 2)
    yy, xx = np.mgrid[0:side, 0:side]
    dots = rng.integers(0, side, size=(6, 2))
    for t in range(num_frames):
        frac = t / max(1, num_frames - 1)
        cx, cy = x0 + dx * travel * frac, y0 + dy * travel * frac
        if shape == "square":
            mask = (abs(xx - cx) <= r * 0.8) & (abs(yy - cy) <= r * 0.8)
        elif shape == "circle":
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        else:  # bar: wide, short
            mask = (abs(xx - cx) <= r) & (abs(yy - cy) <= r * 0.35)
        frames[t][mask] = COLORS[color]
        for (px, py) in dots:
            frames[t, py: py + 2, px: px + 2] = (160, 160, 160)
    return frames


GENERIC = ("a {color} shape moving", "something {color} on a {bg} background", "a {size} object")
PROFILES = ("uniform", "longtail")


def make_dataset(out: str, n_videos: int = 160, seed: int = 0, num_frames: int = 16,
                 splits=(("train", 0.7), ("val", 0.1), ("test", 0.2)), profile: str = "uniform") -> str:
    """Write `n_videos` videos under out/videos and out/manifest.jsonl (one row per caption), atomically:
    everything is written into a temporary sibling folder that is renamed to `out` once complete, so no reader
    ever sees a half-written or rewritten dataset. Refuses to replace an existing non-empty `out`."""
    if n_videos <= 0:
        raise ValueError(f"the number of videos must be positive, got {n_videos}")
    final = Path(out)
    if final.exists() and any(final.iterdir()):
        raise FileExistsError(f"{final} already exists and is not empty: choose another folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_dataset(tmp, n_videos, seed, num_frames, splits, profile)
        if final.exists():
            final.rmdir()  # empty (checked above)
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if (final / "manifest.jsonl").exists():  # another process finished the same dataset first
            return str(final / "manifest.jsonl")
        raise
    return str(final / "manifest.jsonl")


def builtin_root(root: str, n_videos: int, seed: int = 0, profile: str = "uniform") -> Path:
    """The built-in dataset's folder for one size, seed and profile: data.root/videos<N>-seed<S>[-longtail]. Runs
    asking for other sizes get other folders, so one never rewrites the videos another is reading."""
    return Path(root) / (f"videos{n_videos}-seed{seed}" + ("" if profile == "uniform" else f"-{profile}"))


def _longtail_attrs(rng: np.random.Generator, n_videos: int) -> List[dict]:
    """Attribute combinations drawn from a Zipf law (exponent 1.1) over all 540 combinations: a few
    combinations recur in many videos (near-duplicates that attract many captions, i.e. hubs), most are rare."""
    combos = [dict(color=c, shape=sh, size=sz, motion=m, bg=b) for c in COLORS for sh in SHAPES for sz in SIZES
              for m in MOTIONS for b in BACKGROUNDS]
    order = rng.permutation(len(combos))
    weights = 1.0 / np.arange(1, len(combos) + 1) ** 1.1
    picks = rng.choice(len(combos), size=n_videos, p=weights / weights.sum())
    return [combos[order[i]] for i in picks]


def _write_dataset(root: Path, n_videos: int, seed: int, num_frames: int, splits, profile: str = "uniform") -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown built-in profile {profile!r} (choose from {', '.join(PROFILES)})")
    rng = np.random.default_rng(seed)
    tail = _longtail_attrs(np.random.default_rng(seed + 7919), n_videos) if profile == "longtail" else None
    rows: List[dict] = []
    order = rng.permutation(n_videos)
    bounds = np.cumsum([int(round(f * n_videos)) for _, f in splits])
    for i in range(n_videos):
        attrs = dict(color=rng.choice(list(COLORS)), shape=rng.choice(SHAPES), size=rng.choice(list(SIZES)),
                     motion=rng.choice(list(MOTIONS)), bg=rng.choice(list(BACKGROUNDS)))
        if tail is not None:
            attrs = tail[i]
        frames = render(num_frames=num_frames, rng=rng, **attrs)
        vid = f"video{i:05d}"
        write_video(str(root / "videos" / f"{vid}.mp4"), frames)
        position = int(np.nonzero(order == i)[0][0])
        split = next(name for (name, _), b in zip(splits, bounds) if position < b) if position < bounds[-1] \
            else splits[-1][0]
        for template in TEMPLATES:
            if tail is not None and rng.random() < 0.3:  # generic captions, true of many videos
                template = GENERIC[int(rng.integers(len(GENERIC)))]
            rows.append({"video_id": vid, "path": f"videos/{vid}.mp4", "caption": template.format(**attrs),
                         "split": split})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
