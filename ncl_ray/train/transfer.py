"""Training batches copied to the GPU ahead of use, on a side stream, so the step never waits for a copy.

A step at batch 128 of 12 x 224 px clips moves 231 MB of uint8 frames. Copied from pageable memory on the
compute stream, that copy is synchronous and the GPU idles during it. Here the epoch feeder's thread (see
epochs.py) sends each batch as soon as Ray Data hands it over: from pinned host memory
(`iter_torch_batches(pin_memory=True)`), `non_blocking`, on its own CUDA stream, with an event recorded
after the copy. The training thread makes its stream wait for that event (a GPU-side wait, not a host one)
and tells the allocator that the tensors are used on its stream (`record_stream`), so their memory is not
reused while the step still reads them. The counts the step decides on (`n_captions`, `n_frames`) also
stay on the host, as `host_<name>`. On a CPU device batches pass through unchanged.

Batches may carry the clip cache's JPEG blobs (`jpeg`, with `data.decode_on=worker`) instead of frames: they are
decoded here, in the same thread, on the GPU with nvJPEG when torchvision can (only compressed bytes cross the
bus), else with the CPU decoder.

    ahead = Ahead(device)
    batches = (ahead.send(b) for b in shard.iter_torch_batches(..., pin_memory=ahead.pins))  # feeder thread
    for batch in batches:
        batch = ahead.receive(batch)  # training thread
"""

from typing import Dict, Optional, Sequence

import numpy as np
import torch

from ncl_ray.data.framecodec import decode_clip
from ncl_ray.data.gpujpeg import decode_clips, gpu_jpeg_available

HOST_COLUMNS = ("n_captions", "n_frames")  # read by the step on the host: kept there too
READY = "_ready"


def worker_decoder(device: torch.device) -> str:
    """How this worker decodes JPEG blobs (results.json records it)."""
    return "worker, nvJPEG on the GPU" if gpu_jpeg_available(device) else "worker, CPU"


class Ahead:
    """Sends batches to `device` on a side stream (CUDA), or passes them through (CPU)."""

    def __init__(self, device: torch.device, enabled: bool = True, frame_shape: Optional[Sequence[int]] = None):
        self.device = device
        self.stream = torch.cuda.Stream(device) if (enabled and device.type == "cuda") else None
        self.pins = self.stream is not None  # ask Ray Data for pinned host tensors
        self.frame_shape = tuple(frame_shape) if frame_shape else None  # (T, S, S, 3) of JPEG blobs
        self.decoder = worker_decoder(device)

    def _cpu_frames(self, blobs) -> torch.Tensor:
        return torch.from_numpy(np.stack([decode_clip(b, "jpeg", self.frame_shape) for b in blobs]))

    def send(self, batch: Dict[str, object]) -> Dict[str, object]:
        """The batch on the device, copying in the background, with its ready event (any thread)."""
        batch = dict(batch)
        blobs = batch.pop("jpeg", None)  # (b,) JPEG clip blobs to decode here
        if self.stream is None:
            if blobs is not None:
                batch["frames"] = self._cpu_frames(blobs)  # (b, T, S, S, 3)
            return batch
        out: Dict[str, object] = {f"host_{k}": batch[k] for k in HOST_COLUMNS if k in batch}
        with torch.cuda.stream(self.stream):
            if blobs is not None:
                out["frames"] = (decode_clips(blobs, self.frame_shape, self.device) if "nvJPEG" in self.decoder
                                 else self._cpu_frames(blobs).pin_memory().to(self.device, non_blocking=True))
            for k, v in batch.items():
                host = v if v.is_pinned() else v.pin_memory()
                out[k] = host.to(self.device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self.stream)
        out[READY] = ready
        return out

    def receive(self, batch: Dict[str, object]) -> Dict[str, torch.Tensor]:
        """The batch, usable on the current stream once its copy is done (the training thread)."""
        ready = batch.pop(READY, None)
        if ready is None:
            return batch
        current = torch.cuda.current_stream(self.device)
        current.wait_event(ready)
        for v in batch.values():
            if v.device.type == "cuda":
                v.record_stream(current)
        return batch
