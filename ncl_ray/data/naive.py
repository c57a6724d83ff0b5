"""Reference and benchmark baseline decoder: every frame decoded to full-size RGB, resized in Python. No Ray."""

import av
import numpy as np

from ncl_ray.data.decode import sample_times


def decode_naive(path: str, num_frames: int, size: int) -> np.ndarray:
    """Reference and benchmark baseline: decode every frame to full-size RGB, pick T by time, resize in Python.

    This is what CLIP4Clip-style loaders do; it is kept for the benchmark and the tests, not for training.
    """
    import torch
    import torch.nn.functional as F

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [(f.time, f.to_ndarray(format="rgb24"), f.rotation) for f in container.decode(stream)]
        tb = stream.time_base
        start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        duration = float(stream.duration * tb) if stream.duration else container.duration / 1e6
    times = np.array([t for t, _, _ in frames])
    out = []
    for t in sample_times(start, duration, num_frames):
        i = max(0, int(np.searchsorted(times, t + 1e-6, side="right")) - 1)
        _, rgb, rot = frames[i]
        x = torch.from_numpy(np.ascontiguousarray(np.rot90(rgb, k=(rot or 0) // 90 % 4)))
        x = x.permute(2, 0, 1)[None].float()  # (1, 3, H, W)
        H, W = x.shape[-2:]
        s = size / min(H, W)
        x = F.interpolate(x, size=(max(size, round(H * s)), max(size, round(W * s))), mode="area")
        H, W = x.shape[-2:]
        top, left = (H - size) // 2, (W - size) // 2
        x = x[0, :, top: top + size, left: left + size].permute(1, 2, 0)
        out.append(x.round().clamp(0, 255).to(torch.uint8).numpy())
    return np.stack(out)
