"""Batch transforms on torch tensors: CLIP frame normalisation and per-step caption sampling. No Ray."""

from functools import lru_cache
from typing import Dict, Optional, Tuple

import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@lru_cache(maxsize=8)
def _affine(device: torch.device, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (1, 1, 3, 1, 1), made once per device and dtype: building them from Python numbers
    at every step would be a blocking host-to-device copy, a wait for the GPU."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in CLIP_STD]).view(1, 1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(CLIP_MEAN, CLIP_STD)]).view(1, 1, 3, 1, 1)
    return scale.to(device=device, dtype=dtype), shift.to(device=device, dtype=dtype)


def normalize_frames(frames: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> (B, T, 3, H, W) normalised with CLIP's mean and std, in `dtype` (float32 by
    default; the compute dtype under autocast, bf16 on GPUs, where the first layer would cast it anyway). One
    multiply-add per value: x * (1 / (255 std)) - mean / std."""
    scale, shift = _affine(frames.device, dtype or torch.float32)
    x = frames.permute(0, 1, 4, 2, 3).to(scale.dtype)  # (B, T, 3, H, W)
    return torch.addcmul(shift, x, scale)  # (B, T, 3, H, W)


def frame_mask(batch: Dict[str, torch.Tensor], device: torch.device) -> Optional[torch.Tensor]:
    """(B, T) bool mask of the real frames of a batch with an `n_frames` column (CLIP4Clip's sampler pads
    short videos); None when every frame is real. Decided on the host copy of the counts (`host_n_frames` when
    the batch was sent to the GPU ahead, see train/transfer.py): reading GPU values would wait for the GPU."""
    if "n_frames" not in batch:
        return None
    n = batch.get("host_n_frames", batch["n_frames"]).cpu().long()  # (B,)
    T = batch["frames"].shape[1]
    if bool((n >= T).all()):
        return None
    mask = torch.arange(T)[None, :] < n[:, None]  # (B, T)
    return mask.to(device, non_blocking=True)


def sample_captions(tokens: torch.Tensor, n_captions: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One caption per video: tokens (B, K, L), n_captions (B,) -> (B, L). The draw is on the host (the
    generator's stream does not depend on the device); only the chosen indices travel, without a wait."""
    u = torch.rand(n_captions.shape, generator=generator)  # (B,)
    idx = (u * n_captions.cpu().float()).long().clamp(max=tokens.shape[1] - 1)  # (B,)
    rows = torch.arange(tokens.shape[0])  # (B,)
    return tokens[rows.to(tokens.device, non_blocking=True), idx.to(tokens.device, non_blocking=True)]  # (B, L)
