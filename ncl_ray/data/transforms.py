"""Batch transforms on torch tensors: CLIP frame normalisation and per-step caption sampling. No Ray."""

from typing import Dict, Optional

import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float (B, T, 3, H, W) normalised with CLIP's mean and std."""
    x = frames.permute(0, 1, 4, 2, 3).float().div_(255.0)  # (B, T, 3, H, W)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 1, 3, 1, 1)
    return (x - mean) / std


def frame_mask(batch: Dict[str, torch.Tensor], device: torch.device) -> Optional[torch.Tensor]:
    """(B, T) bool mask of the real frames of a batch with an `n_frames` column (CLIP4Clip's sampler pads
    short videos); None when every frame is real."""
    if "n_frames" not in batch:
        return None
    n = batch["n_frames"].to(device).long()  # (B,)
    T = batch["frames"].shape[1]
    if bool((n >= T).all()):
        return None
    return torch.arange(T, device=device)[None, :] < n[:, None]  # (B, T)


def sample_captions(tokens: torch.Tensor, n_captions: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One caption per video: tokens (B, K, L), n_captions (B,) -> (B, L)."""
    u = torch.rand(n_captions.shape, generator=generator)  # (B,)
    idx = (u * n_captions.cpu().float()).long().clamp(max=tokens.shape[1] - 1)  # (B,)
    return tokens[torch.arange(tokens.shape[0]), idx.to(tokens.device)]  # (B, L)
