"""CPU time per clip of video decoders at the same timestamps, side by side in one run:
ncl_ray's `decode_frames` vs torchcodec (approximate and exact seek modes), decord, and CLIP4Clip's OpenCV reader
(every frame read, 1 frame per second kept, as its RawVideoExtractor does), on a short and a long video. Every
decoder delivers the same thing, T frames at S x S: the competitors' full-size frames are resized (shorter side,
antialiased) and centre-cropped with torchvision inside the timed call, as a loader built on them must.

    python -m bench.decoders [--frames 12] [--size 224] [--rounds 15]

CPU time is the median of interleaved rounds (15 on the short video, 3 on the long one).

torchcodec, decord and opencv are competitors, not dependencies: `pip install torchcodec decord
opencv-python-headless` (torchcodec also needs the system's FFmpeg libraries, e.g. Debian's libavcodec59);
a missing one is reported and skipped. ncl_ray's frames are checked against torchcodec's exact frames at the
same timestamps (after the same resize).
"""

import argparse
import os
import statistics
import tempfile
import time
from fractions import Fraction

import av
import numpy as np

from bench.report import write
from ncl_ray.data.decode import decode_frames, sample_times


def make_video(path: str, seconds: float, fps: int, width: int, height: int, keyframe_s: float) -> str:
    rng = np.random.default_rng(0)
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.gop_size = int(keyframe_s * fps)
        s.options = {"preset": "veryfast", "bf": "2", "sc_threshold": "0"}
        s.codec_context.time_base = Fraction(1, fps)
        base = rng.integers(0, 255, size=(height // 8, width // 8, 3), dtype=np.uint8)
        for i in range(int(seconds * fps)):
            small = np.roll(base, i, axis=1)
            frame = av.VideoFrame.from_ndarray(small, format="rgb24").reformat(width=width, height=height,
                                                                               format="yuv420p")
            frame.pts = i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def interleaved_cpu(fns: dict, rounds: int) -> dict:
    """Median CPU seconds per call of each function, over `rounds` interleaved rounds after one warm-up each:
    a shared machine's drift hits every decoder alike."""
    samples = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.process_time()
            fn()
            samples[k].append(time.process_time() - t)
    return {k: statistics.median(v) for k, v in samples.items()}


def _times(path: str, T: int):
    with av.open(path) as c:
        s = c.streams.video[0]
        start = float(s.start_time * s.time_base) if s.start_time is not None else 0.0
        return sample_times(start, float(s.duration * s.time_base), T)


def _resize(frames, size: int):
    """(T, 3, H, W) uint8 -> (T, 3, size, size): shorter side to size (antialiased), centre crop."""
    from torchvision.transforms.v2 import functional as F

    return F.center_crop(F.resize(frames, size, antialias=True), [size, size])


def competitors(path: str, times, size: int):
    out = {}
    try:
        import torch
        from torchcodec.decoders import VideoDecoder

        torch.set_num_threads(1)

        def tc(mode):
            def run():
                d = VideoDecoder(path, seek_mode=mode, num_ffmpeg_threads=1)
                return _resize(d.get_frames_played_at(times).data, size)
            return run
        out["torchcodec approximate"] = tc("approximate")
        out["torchcodec exact"] = tc("exact")
    except Exception as e:  # not installed, or no FFmpeg libraries
        out["torchcodec"] = f"unavailable: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    try:
        import decord
        import torch

        def dec():
            vr = decord.VideoReader(path, num_threads=1)
            fps = vr.get_avg_fps()
            frames = vr.get_batch([min(len(vr) - 1, int(t * fps)) for t in times]).asnumpy()
            return _resize(torch.from_numpy(frames).permute(0, 3, 1, 2), size)
        out["decord"] = dec
    except Exception as e:
        out["decord"] = f"unavailable: {type(e).__name__}"
    try:
        import cv2

        cv2.setNumThreads(1)

        def clip4clip():  # RawVideoExtractor: read every frame, keep one per second, resize each kept one
            cap = cv2.VideoCapture(path)
            fps = int(cap.get(cv2.CAP_PROP_FPS)) or 1
            kept, i = [], 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                if i % fps == 0:
                    kept.append(cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (size, size)))
                i += 1
            cap.release()
            return kept
        out["CLIP4Clip OpenCV 1 fps"] = clip4clip
    except Exception as e:
        out["CLIP4Clip OpenCV 1 fps"] = f"unavailable: {type(e).__name__}"
    return out


def same_frames(path: str, times, T: int, size: int) -> float:
    """Mean |ncl_ray - torchcodec exact| per pixel at the same timestamps (after the same FFmpeg resize)."""
    from torchcodec.decoders import VideoDecoder

    ours = decode_frames(path, T, size).astype(np.float32)
    theirs = VideoDecoder(path, seek_mode="exact").get_frames_played_at(times).data.permute(0, 2, 3, 1).numpy()
    resized = []
    for f in theirs:
        h, w = f.shape[:2]
        scale = size / min(h, w)
        sw, sh = max(size, round(w * scale)), max(size, round(h * scale))
        img = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(
            width=sw, height=sh, interpolation="AREA").to_ndarray()
        top, left = (sh - size) // 2, (sw - size) // 2
        resized.append(img[top: top + size, left: left + size])
    return float(np.abs(ours - np.stack(resized).astype(np.float32)).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    T, S = args.frames, args.size
    folder = tempfile.mkdtemp(prefix="ncl-dec-")
    videos = {"short 12 s 320x240, keyframe 1 s": make_video(os.path.join(folder, "short.mp4"), 12, 30, 320, 240, 1),
              "long 60 s 1280x720, keyframe 8 s": make_video(os.path.join(folder, "long.mp4"), 60, 30, 1280, 720, 8)}
    rows = []
    for name, path in videos.items():
        times = _times(path, T)
        stats: dict = {}
        decode_frames(path, T, S, stats=stats)
        row = {"video": name, "ncl_ray_frames_decoded": stats["decoded"], "ncl_ray_packets_fed": stats["packets"],
               "ncl_ray_seeks": stats["seeks"], "ncl_ray_packets_in_memory": stats["packets_in_memory"]}
        fns = {"ncl_ray": lambda p=path: decode_frames(p, T, S)}
        for label, fn in competitors(path, times, S).items():
            if isinstance(fn, str):
                row[label] = fn
            else:
                fns[label] = fn
        cpu = interleaved_cpu(fns, args.rounds if "short" in name else max(3, args.rounds // 4))
        row["ncl_ray_cpu_s"] = round(cpu["ncl_ray"], 4)
        for label in fns:
            if label != "ncl_ray":
                row[f"{label}_cpu_s"] = round(cpu[label], 4)
                row[f"{label}_vs_ncl_ray"] = round(cpu[label] / cpu["ncl_ray"], 2)
        try:
            row["mean_abs_diff_vs_torchcodec_exact"] = round(same_frames(path, times, T, S), 2)
        except Exception as e:
            row["mean_abs_diff_vs_torchcodec_exact"] = f"unavailable: {type(e).__name__}"
        rows.append(row)
        print(row, flush=True)
    write("decoders", rows, {"frames": T, "size": S})


if __name__ == "__main__":
    main()
