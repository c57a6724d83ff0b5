"""Which inputs `index add` embeds: ids already indexed are kept unless replaced, a file whose bytes equal an
indexed video's or another input's is skipped (the captioned one of identical inputs is kept, with the captions
of all of them), and each kept file's identity is recorded so a file swapped while it was embedded is caught. No Ray."""

import os
from typing import List

from ncl_ray.data.manifest import VideoEntry
from ncl_ray.serve.files import UNKNOWN, identity_of
from ncl_ray.serve.manage import fingerprint


def plan_additions(entries: List[VideoEntry], old, replace: bool):
    """(entries to embed, their (SHA-256, file identity), notes): ids already indexed are kept unless `replace`;
    a file whose bytes equal an indexed video's (under another id) or another input's is skipped. Of inputs with
    the same bytes, the first with captions is kept (`bikes.mp4` + `bikes.txt` over `bikes copy.mp4`), else the
    first, and it carries the captions of all of them (each once, its own first)."""
    known = {h: v for v, h in zip(old.video_ids, old.hashes) if h}
    candidates = {}  # position -> (entry, SHA-256, identity) of the inputs not already indexed
    for i, e in enumerate(entries):
        if replace or e.video_id not in old.row_of:
            try:
                candidates[i] = (e, *fingerprint(e.path))
            except OSError:
                candidates[i] = (e, "", UNKNOWN)  # missing or unreadable: the decoder reports it
    keeper, merged = {}, {}  # hash -> the input kept for it, and the captions of every input with it
    for e, h, _ in sorted(candidates.values(), key=lambda c: not c[0].captions):  # stable: captioned first
        keeper.setdefault(h, e.video_id)
        merged[h] = list(dict.fromkeys(merged.get(h, []) + list(e.captions)))
    todo, prints, notes = [], [], []
    for i, e in enumerate(entries):
        if i not in candidates:
            notes.append(f"{e.video_id}: already in the index (--replace re-embeds it)")
            continue
        _, h, ident = candidates[i]
        indexed = known.get(h) if known.get(h) != e.video_id else None  # its own file: what --replace re-embeds
        twin = (indexed or (keeper[h] if keeper[h] != e.video_id else None)) if h else None
        if twin:
            notes.append(f"{e.video_id}: same file as {twin} ({e.path})")
            continue
        todo.append(VideoEntry(e.video_id, e.path, e.split, merged[h]) if h and merged[h] != e.captions else e)
        prints.append((h, ident))
    return todo, prints, notes


def changed_since_hashed(path: str, ident) -> bool:
    """Was the file replaced or modified while it was being embedded?"""
    try:
        return identity_of(os.stat(path, follow_symlinks=False)) != tuple(ident)
    except OSError:
        return True
