"""A corpus with MSR-VTT's shape, for rehearsing the real recipe: `ncl-ray make-data --profile realistic`.

Each video is 10-30 s long, at 320x240, 640x360 or 1280x720 (some portrait, some with a display-rotation tag),
24, 25 or 30 fps, with a keyframe every 1-10 s, encoded as H.264 with B-frames; it shows the built-in dataset's
moving shapes (so a model can learn something) drawn at low resolution and scaled up by FFmpeg. Every video gets
20 captions (MSR-VTT's count) in varied phrasings; splits follow MSR-VTT's 6513 / 497 / 2990 proportions.
Videos are written by a process pool, in a temporary folder renamed into place at the end; the same seed gives
the same corpus.
"""

import json
import os
import shutil
import socket
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from fractions import Fraction
from pathlib import Path
from typing import Dict, List

import av
import numpy as np

from ncl_ray.data.synthetic import BACKGROUNDS, COLORS, MOTIONS, SHAPES, SIZES, render

RESOLUTIONS = ((320, 240), (640, 360), (1280, 720))
SPLITS = (("train", 6513), ("val", 497), ("test", 2990))
PHRASES = (
    "a {size} {color} {shape} moving {motion} on a {bg} background",
    "{color} {shape} going {motion}",
    "there is a {size} {shape} in {color} that moves {motion} over {bg}",
    "a video of a {color} {shape} heading {motion}",
    "the {shape} is {color} and {size} and it moves {motion}",
    "on {bg}, a {color} {shape} travels {motion}",
    "a {size} {shape} slides {motion}",
    "{size} {color} {shape}, {bg} background, moving {motion}",
    "someone filmed a {color} {shape} moving {motion}",
    "a {color} object shaped like a {shape} goes {motion}",
)


def plan(n_videos: int, seed: int) -> List[Dict]:
    """Every video's attributes, encoding settings, captions and split, from the seed alone."""
    rng = np.random.default_rng(seed)
    total = sum(n for _, n in SPLITS)
    bounds = np.cumsum([round(n * n_videos / total) for _, n in SPLITS])
    order = rng.permutation(n_videos)
    videos = []
    for i in range(n_videos):
        attrs = dict(color=str(rng.choice(list(COLORS))), shape=str(rng.choice(SHAPES)),
                     size=str(rng.choice(list(SIZES))), motion=str(rng.choice(list(MOTIONS))),
                     bg=str(rng.choice(list(BACKGROUNDS))))
        w, h = RESOLUTIONS[int(rng.integers(len(RESOLUTIONS)))]
        kind = rng.random()
        portrait, rotation = kind < 0.1, (90 if 0.1 <= kind < 0.2 else 0)
        if portrait:
            w, h = h, w
        fps = int(rng.choice([24, 25, 30]))
        position = int(np.nonzero(order == i)[0][0])
        split = next((name for (name, _), b in zip(SPLITS, bounds) if position < b), SPLITS[-1][0])
        captions = [PHRASES[j % len(PHRASES)].format(**attrs) + ("" if j < len(PHRASES) else " in this clip")
                    for j in range(20)]
        videos.append({"video_id": f"rv{i:05d}", "attrs": attrs, "width": w, "height": h, "fps": fps,
                       "seconds": float(rng.uniform(10, 30)), "keyframe_s": float(rng.uniform(1, 10)),
                       "rotation": rotation, "split": split, "captions": captions, "seed": int(rng.integers(2**31))})
    return videos


def write_one(spec: Dict, folder: str) -> str:
    """Encode one planned video (H.264, B-frames, the planned GOP) to folder/videos/<id>.mp4."""
    path = Path(folder) / "videos" / f"{spec['video_id']}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(2, int(round(spec["seconds"] * spec["fps"])))
    small = render(num_frames=min(n, 240), side=64, rng=np.random.default_rng(spec["seed"]), **spec["attrs"])
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=spec["fps"])
        stream.width, stream.height, stream.pix_fmt = spec["width"], spec["height"], "yuv420p"
        stream.gop_size = max(1, int(round(spec["keyframe_s"] * spec["fps"])))
        stream.options = {"preset": "veryfast", "bf": "2", "sc_threshold": "0", "crf": "28"}
        stream.codec_context.time_base = Fraction(1, spec["fps"])
        if spec["rotation"]:
            stream.set_display_rotation(spec["rotation"])
        for i in range(n):
            src = small[min(len(small) - 1, i * len(small) // n)]
            frame = av.VideoFrame.from_ndarray(src, format="rgb24").reformat(
                width=spec["width"], height=spec["height"], format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def make_corpus(out: str, n_videos: int = 1000, seed: int = 0, workers: int = 0, progress: bool = True) -> str:
    """Write the corpus to `out` (videos/ and manifest.jsonl, one row per caption), in parallel; returns the
    manifest. Refuses an existing non-empty `out`; nothing half-written is left behind."""
    if n_videos <= 0:
        raise ValueError(f"the number of videos must be positive, got {n_videos}")
    final = Path(out)
    if final.exists() and any(final.iterdir()):
        raise FileExistsError(f"{final} already exists and is not empty: choose another folder")
    tmp = final.with_name(f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    specs = plan(n_videos, seed)
    from ncl_ray.ui.console import Progress

    bar = Progress("generate", n_videos, "videos", stream=sys.stderr) if progress else None
    start = time.time()
    try:
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            futures = [pool.submit(write_one, s, str(tmp)) for s in specs]
            for done, f in enumerate(as_completed(futures), start=1):
                f.result()
                if bar:
                    bar.update(done)
        if bar:
            bar.close()
        rows = [{"video_id": s["video_id"], "path": f"videos/{s['video_id']}.mp4", "caption": c, "split": s["split"]}
                for s in specs for c in s["captions"]]
        (tmp / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (tmp / "corpus.json").write_text(json.dumps({"profile": "realistic", "videos": n_videos, "seed": seed,
                                                     "seconds": round(time.time() - start, 1)}))
        if final.exists():
            final.rmdir()
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(final / "manifest.jsonl")
