"""A bank of queries from a text file (`eval.bank_source=file`, `eval.bank_file=queries.txt`): the queries a
user expects (or a log of real ones), one per line, embedded with the checkpoint's text tower. Search over one's
own videos meets queries unlike the training captions; a bank of them measures, and corrects for, that shift.

Only the text-to-video bank comes from the file; the video-to-text bank (and dbnorm's and dbsn's gallery bank)
stays the checkpoint's training-video queue. No Ray.
"""

from pathlib import Path
from typing import List

import torch

from ncl_ray.data.captions import tokenize

MAX_LINE_CHARS = 4096  # a query longer than this is not a query: refused, naming the line


def read_queries(path: str, limit: int) -> List[str]:
    """The file's non-empty lines (at most `limit`), stripped; a clear error naming the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"eval.bank_file={path}: no such file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = p.read_bytes()[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (eval.bank_file holds one query per line)") from None
    queries = []
    for number, line in enumerate(text.splitlines(), 1):
        if len(line) > MAX_LINE_CHARS:
            raise ValueError(f"{path}:{number}: a line of {len(line)} characters (at most {MAX_LINE_CHARS})")
        if line.strip():
            queries.append(line.strip())
        if len(queries) == limit:
            break
    if not queries:
        raise ValueError(f"eval.bank_file={path}: no queries (one per line)")
    return queries


@torch.no_grad()
def embed_queries(model, queries: List[str], max_words: int, batch: int = 256) -> torch.Tensor:
    """Unit text embeddings (Q, D) of `queries` with the model's text tower, on the CPU."""
    model.eval()
    parts = [model.encode_text(torch.from_numpy(tokenize(queries[i: i + batch], max_words))).float()
             for i in range(0, len(queries), batch)]
    return torch.cat(parts)
