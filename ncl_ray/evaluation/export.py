"""The one index format, written by `ncl-ray eval` (its export) and by every served version, read by `ncl-ray
search` and `ncl-ray serve`. No Ray.

A folder holds videos.parquet (video_id, path, embedding, ncl_bias, folded, a `bias_<method>` column for each
other per-item method it serves (nnn, is, csls: logit scale, like ncl_bias), and for served versions the file's
content_hash and each row's time window start_s, end_s: a row is a moment of its video when end_s > 0, the
whole video otherwise; a video cut into windows has one row per window, under the same video_id), texts.parquet
(video_id, caption and, for an evaluation export, the caption's embedding) and index.json (checkpoint,
temperature, dim, videos, and how the biases were made). `folded` = [embedding, tau * ncl_bias] (ncl/fold.py):
NCL's ranking from an inner product.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ncl_ray.ncl.fold import fold_gallery


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

    @property
    def biases(self) -> Dict[str, np.ndarray]:
        """Every served method's biases, ncl's first."""
        return {"ncl": self.bias, **self.extra}

    @property
    def temperature(self) -> float:
        return float(self.meta["temperature"])


def write_index(out, video_ids: Sequence[str], paths: Sequence[str], embeddings, bias, temperature: float,
                captions: Sequence[str], caption_video: Sequence[str], meta: Dict,
                text_embeddings: Optional[np.ndarray] = None, hashes: Optional[Sequence[str]] = None,
                extra: Optional[Dict[str, np.ndarray]] = None, spans: Optional[np.ndarray] = None) -> Path:
    """Write the three files into `out` (created); `captions[i]` belongs to the video `caption_video[i]`."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    emb, b = np.asarray(embeddings, np.float32), np.asarray(bias, np.float32)
    sp = np.zeros((len(video_ids), 2), np.float32) if spans is None else np.asarray(spans, np.float32).reshape(-1, 2)
    pq.write_table(pa.table({"video_id": list(video_ids), "path": list(paths), "embedding": list(emb),
                             "ncl_bias": b, "folded": list(fold_gallery(emb, b, temperature)),
                             "content_hash": list(hashes) if hashes is not None else [""] * len(video_ids),
                             **{f"bias_{m}": np.asarray(v, np.float32) for m, v in (extra or {}).items()},
                             "start_s": sp[:, 0], "end_s": sp[:, 1]}),
                   d / "videos.parquet")
    texts = {"video_id": list(caption_video), "caption": list(captions)}
    if text_embeddings is not None:
        texts["embedding"] = list(np.asarray(text_embeddings, np.float32))
    pq.write_table(pa.table(texts), d / "texts.parquet")
    (d / "index.json").write_text(json.dumps({**meta, "temperature": float(temperature), "dim": int(emb.shape[1]),
                                              "videos": len(video_ids)}, indent=2))
    return d


def read_index(folder) -> IndexFiles:
    """The files of one index folder; FileNotFoundError names a folder that is not one."""
    d = Path(folder)
    if not (d / "index.json").is_file():
        raise FileNotFoundError(f"not an ncl-ray index (no index.json): {folder}")
    meta = json.loads((d / "index.json").read_text())
    table = pq.read_table(d / "videos.parquet")
    videos = table.select(["video_id", "path", "embedding", "ncl_bias"]).to_pydict()
    hashes = table.column("content_hash").to_pylist() if "content_hash" in table.column_names else \
        [""] * len(videos["video_id"])
    extra = {c[len("bias_"):]: np.asarray(table.column(c).to_pylist(), np.float32) for c in table.column_names
             if c.startswith("bias_")}
    spans = np.stack([np.asarray(table.column(c).to_pylist(), np.float32) for c in ("start_s", "end_s")], 1) \
        if "start_s" in table.column_names else np.zeros((len(videos["video_id"]), 2), np.float32)
    captions: Dict[str, List[str]] = {}
    if (d / "texts.parquet").is_file():
        texts = pq.read_table(d / "texts.parquet", columns=["video_id", "caption"]).to_pydict()
        for vid, cap in zip(texts["video_id"], texts["caption"]):
            captions.setdefault(vid, []).append(cap)
    emb = np.stack(videos["embedding"]).astype(np.float32) if videos["embedding"] else \
        np.zeros((0, int(meta.get("dim", 0))), np.float32)
    return IndexFiles(meta, videos["video_id"], videos["path"], emb, np.asarray(videos["ncl_bias"], np.float32),
                      captions, hashes, extra, spans.reshape(-1, 2))
