"""Batch transforms: CLIP frame normalisation, caption tokenisation and per-step caption sampling. No Ray."""

from functools import lru_cache
from typing import Dict, List, Optional, Sequence

import numpy as np
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


@lru_cache(maxsize=4)
def _tokenizer(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer  # BPE vocabulary ships inside open_clip

    return SimpleTokenizer(context_length=context_length)


MAX_WORD_CHARS = 64  # CLIP's BPE is about quadratic in a word's length: a 32k-letter word took 37 s
MAX_CACHED_WORDS = 100_000  # the tokenizer memoises every word it has seen: bounded for long-running services


def clip_caption(caption: str, max_words: int) -> str:
    """What the tokenizer can use of a caption: every whitespace-separated word gives at least one token, so
    words past the first `max_words` are never kept; longer words than MAX_WORD_CHARS are cut (no real word is)."""
    return " ".join(w[:MAX_WORD_CHARS] for w in caption.split(maxsplit=max_words)[:max_words])


def tokenize(captions: Sequence[str], max_words: int) -> np.ndarray:
    """int32 (N, max_words) CLIP BPE tokens, truncated with the end token kept."""
    tok = _tokenizer(max_words)
    out = tok([clip_caption(c, max_words) for c in captions]).numpy().astype(np.int32)
    if len(tok.cache) > MAX_CACHED_WORDS:
        special = {k: v for k, v in tok.cache.items() if k.startswith("<") and k.endswith(">")}
        tok.cache.clear()
        tok.cache.update(special)
    return out


def caption_tokens(captions: List[str], max_captions: int, max_words: int) -> np.ndarray:
    """int32 (max_captions, max_words): a video's first `max_captions` captions, zero rows as padding."""
    out = np.zeros((max_captions, max_words), np.int32)
    kept = captions[:max_captions]
    out[: len(kept)] = tokenize(kept, max_words)
    return out


def sample_captions(tokens: torch.Tensor, n_captions: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One caption per video: tokens (B, K, L), n_captions (B,) -> (B, L)."""
    u = torch.rand(n_captions.shape, generator=generator)  # (B,)
    idx = (u * n_captions.cpu().float()).long().clamp(max=tokens.shape[1] - 1)  # (B,)
    return tokens[torch.arange(tokens.shape[0]), idx.to(tokens.device)]  # (B, L)
