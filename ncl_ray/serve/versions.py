"""Versioned serving indexes next to a checkpoint: CHECKPOINT/index/{CURRENT, CHANGELOG, v0001/, v0002/, ...}.

Every change (an add, a removal, a rollback) is a new version: written into a temporary folder, renamed into
place, and only then named in CURRENT (replaced atomically), so a server reloading at any moment sees a complete
version; then one line is appended to CHANGELOG (version, time, what changed). Old versions stay for rollback.

One writer at a time: every command that writes a version holds `writer(home, what)`, an exclusive `flock` on
`home/.lock` (released by the kernel when its process dies, however it dies), from reading the version it
changes until the new one is current, so two adds started together both land (the second waits, saying for
whom). Holding it, a writer removes the temporary folders that crashed or killed writers left behind. Captions
are cut to MAX_CAPTIONS per video of MAX_CAPTION_CHARS each, whatever their source.

The index of a checkpoint fetched from object storage lives in the bucket (CHECKPOINT_URI/index/): its local
folder is a mirror, and `writer` also takes the bucket's lock and publishes there (remote.py). No Ray.
"""

import fcntl
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import numpy as np

from ncl_ray.evaluation.export import IndexFiles, read_index, write_index
from ncl_ray.runtime import storage
from ncl_ray.serve import remote

log = logging.getLogger("ncl_ray.index")
MAX_CAPTIONS, MAX_CAPTION_CHARS = 20, 500  # shown on the page; the tokenizer reads 77 tokens at most


def home_of(checkpoint: str) -> Path:
    return Path(checkpoint) / "index"


def remote_home(home: Path) -> str:
    """The URI of the index that `home` mirrors (a fetched checkpoint's), or "" for an index of its own."""
    uri = storage.origin(str(home.parent))
    return storage.join(uri, "index") if uri else ""


def refresh(home: Path) -> None:
    """Bring a mirror up to the published index (nothing to do for a local index)."""
    uri = remote_home(home)
    if uri:
        with _flock(home, "mirroring"):
            remote.pull(uri, home)


def current(home: Path) -> Optional[Path]:
    f = home / "CURRENT"
    return home / f.read_text().strip() if f.is_file() else None


def versions(home: Path) -> List[str]:
    """The version folders, oldest first."""
    return sorted(p.name for p in home.glob("v[0-9][0-9][0-9][0-9]") if p.is_dir())


def changelog(home: Path) -> List[str]:
    f = home / "CHANGELOG"
    return f.read_text().splitlines() if f.is_file() else []


def bound_captions(captions: Sequence[str]) -> List[str]:
    """At most MAX_CAPTIONS captions of at most MAX_CAPTION_CHARS characters each."""
    return [str(c)[:MAX_CAPTION_CHARS] for c in list(captions)[:MAX_CAPTIONS]]


@contextmanager
def writer(home: Path, what: str) -> Iterator[None]:
    """Hold the index's writer lock for `what` (waiting, with a message naming the holder, while another
    writer has it); stale temporary folders are removed once it is held. For a mirror, also the bucket's lock,
    with the mirror pulled first and the new version published at the end."""
    uri = remote_home(home)
    with _flock(home, what):
        if not uri:
            yield
        else:
            with remote.bucket_writer(uri, home, what):
                yield


@contextmanager
def _flock(home: Path, what: str) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another writer"
            print(f"waiting for the index lock of {home} (held by {holder})", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {what} since {time.strftime('%H:%M:%S')}\n".encode(), 0)
        for stale in list(home.glob(".v*.tmp-*")) + list(home.glob(".CURRENT.tmp-*")):
            log.info("removing %s, left by a writer that did not finish", stale.name)
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_version(home: Path, f: IndexFiles, change: str) -> Path:
    """Write the record `f` (its captions bounded) as the next version, make it CURRENT, and log `change`. The
    caller holds `writer(home, ...)`."""
    home.mkdir(parents=True, exist_ok=True)
    f.captions = {v: bound_captions(c) for v, c in f.captions.items()}
    existing = versions(home)
    name = f"v{int(existing[-1][1:]) + 1 if existing else 1:04d}"
    tmp = home / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write_index(tmp, f)
    tmp.rename(home / name)
    pointer = home / f".CURRENT.tmp-{os.getpid()}"
    pointer.write_text(name)
    os.replace(pointer, home / "CURRENT")
    with open(home / "CHANGELOG", "a") as log_file:
        counted = f"{len(set(f.video_ids))} videos, {len(f.video_ids)} moments"  # a window is a moment
        log_file.write(f"{name}  {time.strftime('%Y-%m-%d %H:%M:%S')}  {counted}  {change}\n")
    return home / name


def carried_meta(meta: dict) -> dict:
    """What a new version keeps of an old one's index.json: everything but what write_index derives again."""
    return {k: v for k, v in meta.items() if k not in ("temperature", "dim", "videos", "version")}


def write_files(home: Path, f: IndexFiles, change: str) -> Path:
    """A new version holding exactly `f` (a rollback, or a first version from an evaluation export)."""
    f.meta = {**carried_meta(f.meta), "temperature": f.temperature}
    return write_version(home, f, change)


def seed_from_export(home: Path, export: Path) -> Path:
    """Version 1 = a copy of an `ncl-ray eval` export, when the home has no version yet. The export names the
    dataset's files: each is recorded by its real path (links resolved now, by the operator who serves it)
    and its identity, so the server opens exactly those files later."""
    from ncl_ray.serve.files import UNKNOWN, identity_of

    with writer(home, "seeding version 1"):
        if current(home) is not None:
            return current(home)
        f = read_index(export)
        real, idents = [], []
        for p in f.paths:
            try:
                r = os.path.realpath(p)
                real.append(r)
                idents.append(identity_of(os.stat(r)))
            except OSError:
                real.append(p)
                idents.append(UNKNOWN)
        f.paths, f.identities = real, np.asarray(idents, np.int64).reshape(-1, 4)
        return write_files(home, f, f"from the evaluation export {export}")
