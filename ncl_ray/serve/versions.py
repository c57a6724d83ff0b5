"""Versioned serving indexes next to a checkpoint: CHECKPOINT/index/{CURRENT, CHANGELOG, v0001/, v0002/, ...}.

Every change (an add, a removal, a rollback) is a new version: written into a temporary folder, renamed into
place, and only then named in CURRENT (replaced atomically), so a server reloading at any moment sees a complete
version; then one line is appended to CHANGELOG (version, time, what changed). Old versions stay for rollback.
No Ray.
"""

import os
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ncl_ray.evaluation.export import IndexFiles, read_index, write_index


def home_of(checkpoint: str) -> Path:
    return Path(checkpoint) / "index"


def current(home: Path) -> Optional[Path]:
    f = home / "CURRENT"
    return home / f.read_text().strip() if f.is_file() else None


def versions(home: Path) -> List[str]:
    """The version folders, oldest first."""
    return sorted(p.name for p in home.glob("v[0-9][0-9][0-9][0-9]") if p.is_dir())


def changelog(home: Path) -> List[str]:
    f = home / "CHANGELOG"
    return f.read_text().splitlines() if f.is_file() else []


def write_version(home: Path, video_ids: Sequence[str], paths: Sequence[str], embeddings: np.ndarray,
                  bias: np.ndarray, temperature: float, texts: Dict[str, List[str]], meta: dict, change: str,
                  hashes: Optional[Sequence[str]] = None, extra: Optional[Dict[str, np.ndarray]] = None,
                  spans: Optional[np.ndarray] = None) -> Path:
    """Write the next version (embeddings (C, D), NCL biases (C,), other per-item methods' biases `extra`),
    make it CURRENT, and log `change`."""
    home.mkdir(parents=True, exist_ok=True)
    existing = versions(home)
    name = f"v{int(existing[-1][1:]) + 1 if existing else 1:04d}"
    tmp = home / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_index(tmp, video_ids, paths, embeddings, bias, temperature,
                [c for v in dict.fromkeys(video_ids) for c in texts.get(v, [])],
                [v for v in dict.fromkeys(video_ids) for _ in texts.get(v, [])], meta, hashes=hashes, extra=extra,
                spans=spans)
    tmp.rename(home / name)
    pointer = home / f".CURRENT.tmp-{os.getpid()}"
    pointer.write_text(name)
    os.replace(pointer, home / "CURRENT")
    with open(home / "CHANGELOG", "a") as f:
        f.write(f"{name}  {time.strftime('%Y-%m-%d %H:%M:%S')}  {len(video_ids)} videos  {change}\n")
    return home / name


def carried_meta(meta: dict) -> dict:
    """What a new version keeps of an old one's index.json: everything but what write_index derives again."""
    return {k: v for k, v in meta.items() if k not in ("temperature", "dim", "videos", "version")}


def write_files(home: Path, f: IndexFiles, change: str) -> Path:
    """A new version holding exactly `f` (a rollback, or a first version from an evaluation export)."""
    return write_version(home, f.video_ids, f.paths, f.embeddings, f.bias, f.temperature, f.captions,
                         carried_meta(f.meta), change, f.hashes, f.extra, f.spans)


def seed_from_export(home: Path, export: Path) -> Path:
    """Version 1 = a copy of an `ncl-ray eval` export, when the home has no version yet."""
    if current(home) is not None:
        return current(home)
    return write_files(home, read_index(export), f"from the evaluation export {export}")
