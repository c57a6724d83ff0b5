"""The one index format, written by `ncl-ray eval` (its export) and by every served version, read by `ncl-ray
search` and `ncl-ray serve`. No Ray.

A folder holds videos.parquet (video_id, path, embedding, ncl_bias, folded, a `bias_<method>` column for each
other per-item method it serves (nnn, is, csls: logit scale, like ncl_bias), and for served versions the file's
content_hash, the file's identity when it was hashed (file_dev, file_ino, file_size, file_mtime_ns; -1 where
unknown: the server opens only a file that still has it) and each row's time window start_s, end_s: a row is a
moment of its video when end_s > 0, the whole video otherwise; a video cut into windows has one row per window,
under the same video_id), texts.parquet
(video_id, caption and, for an evaluation export, the caption's embedding) and index.json (checkpoint,
temperature, dim, videos, and how the biases were made). `folded` = [embedding, tau * ncl_bias] (ncl/fold.py):
NCL's ranking from an inner product.

Reading a folder checks it (`check_index`): a version that would break or silently empty every search (an
infinite temperature or bias, NaN or non-unit embeddings, columns this code does not know, row counts that
disagree) is refused with a ValueError naming the folder and the problem, before anything serves it.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ncl_ray.ncl.fold import fold_gallery
from ncl_ray.ncl.methods import SERVED_BIASES

IDENTITY_COLUMNS = ("file_dev", "file_ino", "file_size", "file_mtime_ns")
KNOWN_COLUMNS = {"video_id", "path", "embedding", "ncl_bias", "folded", "content_hash", "start_s", "end_s",
                 "duration_s", "added_at",
                 *IDENTITY_COLUMNS, *(f"bias_{m}" for m in SERVED_BIASES)}
UNIT_NORM_TOL = 1e-2  # float16 towers give norms within about 1e-3 of 1


@dataclass
class IndexFiles:
    meta: Dict
    video_ids: List[str]
    paths: List[str]
    embeddings: np.ndarray  # (C, D) float32, unit rows
    bias: np.ndarray  # (C,) float32 NCL gallery biases
    captions: Dict[str, List[str]]  # video_id -> its captions
    hashes: List[str]  # SHA-256 of each video file ("" where unknown: evaluation exports)
    extra: Dict[str, np.ndarray]  # method -> (C,) biases of the other per-item methods (logit scale)
    spans: np.ndarray  # (C, 2) float32 [start_s, end_s] of each row; [0, 0] = the whole video
    identities: np.ndarray  # (C, 4) int64 (device, inode, size, mtime_ns) of each file when indexed; -1 unknown
    durations: np.ndarray  # (C,) float32 seconds of each row's whole video; NaN unknown (evaluation exports)
    added: np.ndarray  # (C,) float64 Unix time each row was added by `index add`; NaN unknown (evaluation exports)

    @property
    def biases(self) -> Dict[str, np.ndarray]:
        """Every served method's biases, ncl's first."""
        return {"ncl": self.bias, **self.extra}

    @property
    def temperature(self) -> float:
        return float(self.meta["temperature"])

    @classmethod
    def gallery(cls, video_ids: Sequence[str], paths: Sequence[str], embeddings, bias, temperature: float,
                captions: Optional[Dict[str, List[str]]] = None, meta: Optional[Dict] = None,
                **optional) -> "IndexFiles":
        """A record to write: `optional` holds hashes, extra, spans, identities, durations, added (defaults:
        unknown, none, whole videos, unknown, unknown, unknown)."""
        n = len(video_ids)
        return cls({**(meta or {}), "temperature": float(temperature)}, list(video_ids), list(paths),
                   np.asarray(embeddings, np.float32), np.asarray(bias, np.float32), dict(captions or {}),
                   list(optional.get("hashes") if optional.get("hashes") is not None else [""] * n),
                   dict(optional.get("extra") or {}),
                   np.zeros((n, 2), np.float32) if optional.get("spans") is None else
                   np.asarray(optional["spans"], np.float32).reshape(-1, 2),
                   np.full((n, 4), -1, np.int64) if optional.get("identities") is None else
                   np.asarray(optional["identities"], np.int64).reshape(-1, 4),
                   *(np.full(n, np.nan, t) if optional.get(k) is None else np.asarray(optional[k], t).reshape(-1)
                     for k, t in (("durations", np.float32), ("added", np.float64))))


def write_index(out, f: IndexFiles, texts: Optional[Tuple[Sequence[str], Sequence[str], np.ndarray]] = None) -> Path:
    """Write the three files of the record `f` into `out` (created). The texts are its captions, video by video,
    unless `texts` = (caption_video, captions, text embeddings (R, D)) gives them row by row (an evaluation
    export, with the test captions' embeddings)."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    emb, b, sp, ids = f.embeddings, f.bias, f.spans, f.identities
    pq.write_table(pa.table({"video_id": list(f.video_ids), "path": list(f.paths), "embedding": list(emb),
                             "ncl_bias": b, "folded": list(fold_gallery(emb, b, f.temperature)),
                             "content_hash": list(f.hashes),
                             **{f"bias_{m}": np.asarray(v, np.float32) for m, v in f.extra.items()},
                             "start_s": sp[:, 0], "end_s": sp[:, 1], "duration_s": f.durations,
                             "added_at": f.added,
                             **{c: ids[:, i] for i, c in enumerate(IDENTITY_COLUMNS)}}),
                   d / "videos.parquet")
    if texts is None:
        order = list(dict.fromkeys(f.video_ids))
        table = {"video_id": [v for v in order for _ in f.captions.get(v, [])],
                 "caption": [c for v in order for c in f.captions.get(v, [])]}
    else:
        table = {"video_id": list(texts[0]), "caption": list(texts[1]),
                 "embedding": list(np.asarray(texts[2], np.float32))}
    pq.write_table(pa.table(table), d / "texts.parquet")
    (d / "index.json").write_text(json.dumps({**f.meta, "temperature": f.temperature, "dim": int(emb.shape[1]),
                                              "videos": len(f.video_ids)}, indent=2))
    return d


def read_index(folder) -> IndexFiles:
    """The files of one index folder, checked (check_index); FileNotFoundError names a folder that is not one,
    ValueError a version that must not be served."""
    d = Path(folder)
    if not (d / "index.json").is_file():
        raise FileNotFoundError(f"not an ncl-ray index (no index.json): {folder}")
    try:
        meta = json.loads((d / "index.json").read_text())
        table = pq.read_table(d / "videos.parquet")
    except (ValueError, OSError, pa.ArrowException) as e:
        raise ValueError(f"{folder}: unreadable index files ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{d / 'index.json'}: not a JSON object")
    unknown = sorted(set(table.column_names) - KNOWN_COLUMNS)
    missing = sorted({"video_id", "path", "embedding", "ncl_bias"} - set(table.column_names))
    if unknown or missing:
        raise ValueError(f"{d / 'videos.parquet'}: " + (f"unknown columns {', '.join(unknown)[:200]}" if unknown
                         else f"missing columns {', '.join(missing)}"))
    videos = table.select(["video_id", "path", "embedding", "ncl_bias"]).to_pydict()
    n = len(videos["video_id"])

    def column(name, default, dtype):
        return np.asarray(table.column(name).to_pylist(), dtype) if name in table.column_names else \
            np.full(n, default, dtype)

    hashes = table.column("content_hash").to_pylist() if "content_hash" in table.column_names else [""] * n
    extra = {c[len("bias_"):]: column(c, 0, np.float32) for c in table.column_names if c.startswith("bias_")}
    spans = np.stack([column(c, 0, np.float32) for c in ("start_s", "end_s")], 1)
    identities = np.stack([column(c, -1, np.int64) for c in IDENTITY_COLUMNS], 1)
    captions: Dict[str, List[str]] = {}
    if (d / "texts.parquet").is_file():
        texts = pq.read_table(d / "texts.parquet", columns=["video_id", "caption"]).to_pydict()
        for vid, cap in zip(texts["video_id"], texts["caption"]):
            captions.setdefault(vid, []).append(cap)
    try:
        emb = np.stack(videos["embedding"]).astype(np.float32) if n else \
            np.zeros((0, int(meta.get("dim", 0))), np.float32)
        bias = np.asarray(videos["ncl_bias"], np.float32)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{d / 'videos.parquet'}: embeddings or biases are not numbers of one shape ({e})") from None
    f = IndexFiles(meta, videos["video_id"], videos["path"], emb, bias, captions, hashes, extra, spans.reshape(-1, 2),
                   identities, column("duration_s", np.nan, np.float32), column("added_at", np.nan, np.float64))
    check_index(f, d)
    return f


def check_index(f: IndexFiles, where) -> None:
    """ValueError naming `where` and the first problem that would make a served search wrong or fail."""
    try:
        tau = float(f.meta.get("temperature", "missing"))
    except (TypeError, ValueError):
        tau = float("nan")
    if not np.isfinite(tau) or tau <= 0:
        raise ValueError(f"{where}: temperature {f.meta.get('temperature')!r} in index.json is not a finite "
                         f"positive number")
    n = len(f.video_ids)
    if f.embeddings.ndim != 2 or len(f.embeddings) != n or len(f.paths) != n or len(f.bias) != n:
        raise ValueError(f"{where}: row counts disagree ({n} ids, {len(f.paths)} paths, "
                         f"{len(f.embeddings)} embeddings, {len(f.bias)} biases)")
    if n and f.embeddings.shape[1] != int(f.meta.get("dim", f.embeddings.shape[1])):
        raise ValueError(f"{where}: embeddings have {f.embeddings.shape[1]} dimensions, index.json says "
                         f"{f.meta.get('dim')}")
    if not np.isfinite(f.embeddings).all():
        raise ValueError(f"{where}: {int((~np.isfinite(f.embeddings).any(1)).sum())} embedding(s) hold NaN or "
                         f"infinity")
    norms = np.linalg.norm(f.embeddings, axis=1)
    if n and np.abs(norms - 1).max() > UNIT_NORM_TOL:
        raise ValueError(f"{where}: embeddings must have unit norm (row {int(np.abs(norms - 1).argmax())} has "
                         f"{float(norms[np.abs(norms - 1).argmax()]):.4g})")
    for m, b in f.biases.items():
        if len(b) != n or not np.isfinite(b).all():
            raise ValueError(f"{where}: the {m} biases " + ("do not have one value per row" if len(b) != n else
                             "hold NaN or infinity"))
    if not np.isfinite(f.spans).all() or (f.spans < 0).any() or (f.spans[:, 1] < f.spans[:, 0]).any():
        raise ValueError(f"{where}: start_s/end_s must be finite, non-negative and ordered")
    if len(f.durations) != n or len(f.added) != n or (f.durations < 0).any() or np.isinf(f.durations).any() or \
            np.isinf(f.added).any():
        raise ValueError(f"{where}: duration_s and added_at must be one non-negative finite number (or NaN) per row")
    if not all(isinstance(v, str) for v in f.video_ids) or not all(isinstance(p, str) for p in f.paths):
        raise ValueError(f"{where}: video ids and paths must be strings")
