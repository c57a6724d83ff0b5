"""Caption tokenisation with CLIP's BPE, bounded for untrusted text. No Ray, and no torch at import: the Ray
Data tasks that attach tokens to clips import this module, and a worker that imports torch starts seconds later."""

from functools import lru_cache
from typing import List, Sequence

import numpy as np


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
