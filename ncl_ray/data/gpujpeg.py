"""JPEG clip blobs decoded on the GPU (nvJPEG through torchvision), for workers that train on a GPU.

    frames = decode_clips(blobs, (T, S, S, 3), torch.device("cuda"))  # uint8 (N, T, S, S, 3) on the GPU

The clip cache stores each clip as T JPEG files (framecodec.py). On a CPU each 224 px clip of 12 frames takes
milliseconds to decode, so a GPU that trains a thousand clips a second would need a dozen cores for decoding
alone; `torchvision.io.decode_jpeg` on a list of images decodes them in one batched nvJPEG call on the GPU. The
result differs from PIL's by the decoders' rounding (a few levels at most: bench/gpu.py measures it). No Ray.
"""

from typing import List, Sequence, Tuple

import torch

from ncl_ray.data.framecodec import jpeg_parts


def gpu_jpeg_available(device: torch.device) -> bool:
    """Whether torchvision can decode JPEG on this device (a CUDA build of torchvision and a CUDA device)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True


def decode_clips(blobs: Sequence[bytes], shape: Tuple[int, int, int, int], device: torch.device) -> torch.Tensor:
    """N JPEG clip blobs -> uint8 (N, T, S, S, 3) on `device`, frames in order."""
    from torchvision.io import ImageReadMode, decode_jpeg

    T, H, W, _ = shape
    files: List[torch.Tensor] = []
    for blob in blobs:
        files += [torch.frombuffer(bytearray(part), dtype=torch.uint8) for part in jpeg_parts(blob, T)]
    images = decode_jpeg(files, mode=ImageReadMode.RGB, device=device)  # N*T x (3, H', W')
    if any(img.shape[1:] != (H, W) for img in images):
        raise ValueError(f"a JPEG frame is not {H} x {W}: the clip cache was built with another frame size")
    return torch.stack(images).view(len(blobs), T, 3, H, W).permute(0, 1, 3, 4, 2)  # (N, T, S, S, 3)
