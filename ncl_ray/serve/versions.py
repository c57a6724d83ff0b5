"""Versioned serving indexes next to a checkpoint: CHECKPOINT/index/{CURRENT, v0001/, v0002/, ...}.

A version is written into a temporary folder, renamed into place, and only then named in CURRENT (replaced
atomically), so a server reloading at any moment sees a complete version. No Ray.
"""

import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ncl_ray.evaluation.export import read_index, write_index


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
    write_index(tmp, video_ids, paths, embeddings, bias, temperature,
                [c for v in video_ids for c in texts.get(v, [])], [v for v in video_ids for _ in texts.get(v, [])],
                meta)
    tmp.rename(home / name)
    pointer = home / f".CURRENT.tmp-{os.getpid()}"
    pointer.write_text(name)
    os.replace(pointer, home / "CURRENT")
    return home / name


def seed_from_export(home: Path, export: Path) -> Path:
    """Version 1 = a copy of an `ncl-ray eval` export, when the home has no version yet."""
    if current(home) is not None:
        return current(home)
    f = read_index(export)
    return write_version(home, f.video_ids, f.paths, f.embeddings, f.bias, f.temperature, f.captions,
                         {k: v for k, v in f.meta.items() if k not in ("temperature", "dim", "videos")})
