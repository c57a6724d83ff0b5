"""Embedding export with NCL biases folded into the gallery, and `ncl-ray search` over it.

NCL ranks gallery videos by s_ij / tau + b_j. Appending tau * b_j to each (unit) video embedding and 1 to the
text query gives t_i . v_j + tau * b_j = tau * (s_ij / tau + b_j): the same ranking from a plain inner product,
so any inner-product index (faiss, ScaNN, numpy) serves NCL.

    ncl-ray search --index runs/NAME/checkpoint_.../eval/export "a red circle moving left" --top-k 5
"""

import json
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch


def fold_bias(gallery: torch.Tensor, bias: torch.Tensor, temperature: float) -> torch.Tensor:
    """(C, D) gallery, (C,) NCL biases -> (C, D+1) embeddings whose inner product with [t, 1] ranks as NCL."""
    return torch.cat([gallery.float(), (temperature * bias.float())[:, None]], dim=1)


def fold_query(queries: torch.Tensor) -> torch.Tensor:
    """(R, D) -> (R, D+1) with a trailing 1."""
    return torch.cat([queries.float(), torch.ones(queries.shape[0], 1)], dim=1)


def write_index(out: str, video_ids: Sequence[str], video_paths: Sequence[str], video_emb: torch.Tensor,
                bias: torch.Tensor, temperature: float, captions: Sequence[str], caption_video: Sequence[str],
                text_emb: torch.Tensor, meta: Dict) -> str:
    """videos.parquet (id, path, embedding, ncl_bias, folded), texts.parquet (video_id, caption, embedding),
    index.json (checkpoint, temperature, how the biases were made)."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    folded = fold_bias(video_emb, bias, temperature)
    pq.write_table(pa.table({
        "video_id": list(video_ids), "path": list(video_paths),
        "embedding": list(video_emb.float().numpy()), "ncl_bias": bias.float().numpy(),
        "folded": list(folded.numpy()),
    }), d / "videos.parquet")
    pq.write_table(pa.table({"video_id": list(caption_video), "caption": list(captions),
                             "embedding": list(text_emb.float().numpy())}), d / "texts.parquet")
    (d / "index.json").write_text(json.dumps({**meta, "temperature": temperature, "dim": int(video_emb.shape[1]),
                                              "videos": len(video_ids)}, indent=2))
    return str(d)


def load_index(index: str):
    d = Path(index)
    if not (d / "index.json").is_file():
        raise FileNotFoundError(f"not an ncl-ray export (no index.json): {index}")
    meta = json.loads((d / "index.json").read_text())
    videos = pq.read_table(d / "videos.parquet").to_pydict()
    folded = torch.from_numpy(np.stack(videos["folded"]).astype(np.float32))  # (C, D+1)
    return meta, videos, folded


def search(index: str, queries: List[str], top_k: int = 5) -> List[List[Dict]]:
    """Top-k videos per text query by inner product with the folded gallery (= NCL ranking)."""
    from ncl_ray.runtime.checkpoint import load_checkpoint
    from ncl_ray.config.schema import from_dict
    from ncl_ray.data.transforms import tokenize
    from ncl_ray.model.clip import build_model_from_config

    meta, videos, folded = load_index(index)
    state = load_checkpoint(meta["checkpoint"])
    cfg = from_dict(state["config"])
    model = build_model_from_config(cfg)
    model.load_state_dict(state["model"])
    model.eval()
    with torch.no_grad():
        text = model.encode_text(torch.from_numpy(tokenize(queries, cfg.data.max_words)))  # (R, D)
    scores = fold_query(text) @ folded.T  # (R, C)
    top = scores.topk(min(top_k, scores.shape[1]), dim=1)
    captions = _captions_by_video(index)
    return [[{"video_id": videos["video_id"][j], "path": videos["path"][j], "score": float(s),
              "captions": captions.get(videos["video_id"][j], [])}
             for s, j in zip(top.values[r].tolist(), top.indices[r].tolist())] for r in range(len(queries))]


def _captions_by_video(index: str) -> Dict[str, List[str]]:
    texts = pq.read_table(Path(index) / "texts.parquet", columns=["video_id", "caption"]).to_pydict()
    out: Dict[str, List[str]] = {}
    for vid, cap in zip(texts["video_id"], texts["caption"]):
        out.setdefault(vid, []).append(cap)
    return out

