"""Versioned serving indexes next to a checkpoint: CHECKPOINT/index/{CURRENT, v0001/, v0002/, ...}.

A version is written into a temporary folder, renamed into place, and only then named in CURRENT (replaced
atomically), so a server reloading at any moment sees a complete version. No Ray.
"""

import json
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def home_of(checkpoint: str) -> Path:
    return Path(checkpoint) / "index"


def current(home: Path) -> Optional[Path]:
    f = home / "CURRENT"
    return home / f.read_text().strip() if f.is_file() else None


def write_version(home: Path, video_ids: Sequence[str], paths: Sequence[str], embeddings: np.ndarray,
                  bias: np.ndarray, temperature: float, texts: Dict[str, List[str]], meta: dict) -> Path:
    """Write the next version (embeddings (C, D), NCL biases (C,)) and make it CURRENT."""
    home.mkdir(parents=True, exist_ok=True)
    existing = sorted(p.name for p in home.glob("v[0-9][0-9][0-9][0-9]") if p.is_dir())
    name = f"v{int(existing[-1][1:]) + 1 if existing else 1:04d}"
    tmp = home / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    emb = np.asarray(embeddings, np.float32)
    folded = np.concatenate([emb, (temperature * np.asarray(bias, np.float32))[:, None]], axis=1)
    pq.write_table(pa.table({"video_id": list(video_ids), "path": list(paths), "embedding": list(emb),
                             "ncl_bias": np.asarray(bias, np.float32), "folded": list(folded)}), tmp / "videos.parquet")
    vids = [v for v in video_ids for _ in texts.get(v, [])]
    caps = [c for v in video_ids for c in texts.get(v, [])]
    pq.write_table(pa.table({"video_id": vids, "caption": caps}), tmp / "texts.parquet")
    (tmp / "index.json").write_text(json.dumps({**meta, "temperature": float(temperature), "dim": int(emb.shape[1]),
                                                "videos": len(video_ids)}, indent=2))
    tmp.rename(home / name)
    pointer = home / f".CURRENT.tmp-{os.getpid()}"
    pointer.write_text(name)
    os.replace(pointer, home / "CURRENT")
    return home / name


def seed_from_export(home: Path, export: Path) -> Path:
    """Version 1 = a copy of an `ncl-ray eval` export, when the home has no version yet."""
    if current(home) is not None:
        return current(home)
    videos = pq.read_table(export / "videos.parquet").to_pydict()
    texts: Dict[str, List[str]] = {}
    if (export / "texts.parquet").is_file():
        t = pq.read_table(export / "texts.parquet", columns=["video_id", "caption"]).to_pydict()
        for v, c in zip(t["video_id"], t["caption"]):
            texts.setdefault(v, []).append(c)
    meta = json.loads((export / "index.json").read_text())
    return write_version(home, videos["video_id"], videos["path"], np.stack(videos["embedding"]),
                         np.asarray(videos["ncl_bias"]), meta["temperature"], texts,
                         {k: v for k, v in meta.items() if k not in ("temperature", "dim", "videos")})
