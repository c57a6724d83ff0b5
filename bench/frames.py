"""Frame choice and resize side by side on the same files, in one run: today's sampler (uniform slice centres,
FFmpeg's area filter) vs CLIP4Clip's (1 frame per whole second, linspace to T, mask; CLIP's PIL bicubic resize
and crop), and the two mixed. CPU time per clip is the median of interleaved rounds; `vs_clip4clip` is the mean
absolute pixel difference (of 255) between each variant's frames and CLIP4Clip's full rule on the frames both
take (the same frame numbers only when the sampler is the same).

    python -m bench.frames [--frames 12] [--size 224] [--rounds 7]
"""

import argparse
import os
import tempfile

import numpy as np

from bench.decoders import interleaved_cpu, make_video
from bench.report import write
from ncl_ray.data.decode import decode_video

VARIANTS = {"uniform+area (today)": ("uniform", "area"), "uniform+clip4clip": ("uniform", "clip4clip"),
            "clip4clip+area": ("clip4clip", "area"), "clip4clip+clip4clip (CLIP4Clip)": ("clip4clip", "clip4clip")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    T, S = args.frames, args.size
    rows = []
    with tempfile.TemporaryDirectory() as work:
        videos = {"8 s 320x240 25 fps": make_video(os.path.join(work, "a.mp4"), 8, 25, 320, 240, 1.0),
                  "20 s 640x272 30 fps": make_video(os.path.join(work, "b.mp4"), 20, 30, 640, 272, 2.0),
                  "15 s 1280x720 30 fps": make_video(os.path.join(work, "c.mp4"), 15, 30, 1280, 720, 4.0)}
        for name, path in videos.items():
            fns = {k: (lambda p=path, s=s, r=r: decode_video(p, T, S, 1, s, r)) for k, (s, r) in VARIANTS.items()}
            cpu = interleaved_cpu(fns, args.rounds)
            ref, ref_n = decode_video(path, T, S, 1, "clip4clip", "clip4clip")
            for k, (s, r) in VARIANTS.items():
                frames, n = decode_video(path, T, S, 1, s, r)
                same = s == "clip4clip"
                diff = float(np.abs(frames[:n].astype(np.int16) - ref[:n].astype(np.int16)).mean()) if same else -1.0
                rows.append({"video": name, "variant": k, "cpu_s_per_clip": cpu[k], "real_frames": n,
                             "vs_clip4clip_mean_abs": diff,
                             "cpu_vs_today": cpu[k] / cpu["uniform+area (today)"]})
    write("frames", rows, {"frames": T, "size": S, "rounds": args.rounds,
                           "note": "vs_clip4clip -1 = other frame numbers (uniform sampler), not comparable"})


if __name__ == "__main__":
    main()
