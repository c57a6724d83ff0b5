"""The decoded-clip cache: every video decoded once, in parallel Ray Data tasks, into Parquet files in a local
folder or under an object-storage URI (`data.cache_dir=s3://bucket/cache`).

    cache = build_clip_cache(entries, ClipSpec(T, S, encoding="jpeg"), "data/cache")   # or "s3://bucket/cache"
    cache.path                                                      # the Parquet folder Ray Data reads

A cache is keyed by the videos (path, size, modification time), T, S, the encoding and the decoder version, so
any change decodes again. It becomes visible in one step, so a reader never sees half of one:
- local folder: written to `<name>.tmp-<host>-<pid>`, summary.json last, then renamed to `<name>`;
- object storage (no rename there): the Parquet files go to `<name>/part-<host>-<pid>-<random>/` and the cache
  exists once `<name>/summary.json`, which names that part, is written: one PUT, atomic on S3 and GCS. Two
  builders of the same cache on different machines each write a whole part; the summary written last wins and
  both are complete, so no lock is needed. A part without a summary (a killed build) is removed by the next
  build on the same host; parts from other hosts are left alone (their owner cannot be checked from here).
Videos that fail to decode are listed in summary.json, counted in the run summary and left out of every split.
"""

import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pyarrow.parquet as pq
import ray

from ncl_ray.config.rules import ConfigError
from ncl_ray.data.decode import DECODER_VERSION, ClipSpec, decode_batch
from ncl_ray.data.manifest import VideoEntry
from ncl_ray.runtime import storage

log = logging.getLogger(__name__)


def check_data_locations(cfg) -> None:
    """data.cache_dir may be a bucket (written and read there: probed now, before Ray), and so may data.manifest
    and the videos it lists; data.root names a dataset's own folder layout, which stays a mounted path."""
    root = str(cfg.data.root or "")
    if storage.is_uri(root):  # not a local folder named "s3:" by accident
        raise ConfigError(f"data.root={root}: a dataset folder is read from a mounted path (a local folder, NFS, "
                          f"FUSE); for videos in a bucket, list them in a manifest (data.dataset=manifest, "
                          f"data.manifest=..., paths may be s3:// URIs)")
    if storage.is_uri(cfg.data.cache_dir):
        storage.check_reachable(cfg.data.cache_dir, "data.cache_dir")


def video_stats(entries: List[VideoEntry]) -> Dict[str, Tuple[int, int]]:
    """path -> (size, mtime_ns) of every video (a file or an object-storage URI); (-1, -1) when missing."""
    out = {}
    for e in entries:
        if storage.is_uri(e.path):
            out[e.path] = storage.stat(e.path)
            continue
        try:
            st = os.stat(e.path)
            out[e.path] = (st.st_size, st.st_mtime_ns)
        except OSError:
            out[e.path] = (-1, -1)
    return out


def cache_key(entries: List[VideoEntry], num_frames: int, size: int,
              stats: Optional[Dict[str, Tuple[int, int]]] = None, encoding: str = "raw", quality: int = 90,
              sampler: str = "uniform", resize: str = "area") -> str:
    stats = stats if stats is not None else video_stats(entries)
    how = "" if (sampler, resize) == ("uniform", "area") else f"|{sampler}|{resize}"  # old keys stay valid
    h = hashlib.sha1(f"{DECODER_VERSION}|{num_frames}|{size}|{encoding}|{quality}{how}".encode())
    for e in sorted(entries, key=lambda e: e.video_id):
        size_, mtime = stats[e.path]
        h.update(f"{e.video_id}|{e.path}|{size_}|{mtime}\n".encode())
    return h.hexdigest()[:16]


def _owner_gone(owner: str) -> bool:
    """`<host>-<pid>` names a process of this host that no longer runs."""
    h, _, pid = owner.rpartition("-")
    if h != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return False


def remove_stale_temp(cache_dir: Path) -> List[str]:
    """Delete `clips-*.tmp-<host>-<pid>` folders of this host whose process is gone (a killed build)."""
    removed = []
    for tmp in cache_dir.glob("clips-*.tmp-*"):
        if _owner_gone(tmp.name.rsplit(".tmp-", 1)[1]):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp.name)
    if removed:
        log.info("removed %d unfinished cache folder(s) of killed builds: %s", len(removed), ", ".join(removed))
    return removed


def remove_stale_parts(out: str) -> List[str]:
    """Object storage: delete `part-<host>-<pid>-<random>` folders under the cache URI of this host's killed
    builds."""
    removed = []
    for name in storage.folders(out):
        if name.startswith("part-") and _owner_gone(name[len("part-"):].rsplit("-", 1)[0]):
            storage.delete_folder(storage.join(out, name))
            removed.append(name)
    if removed:
        log.info("removed %d unfinished cache part(s) of killed builds under %s", len(removed), out)
    return removed


@dataclass
class ClipCache:
    """A folder of decoded clips (Parquet: video_id, path, frames bytes, error) and what failed."""
    path: str  # the Parquet folder: local, or a URI
    num_frames: int
    size: int
    total: int
    skipped: List[Dict[str, str]] = field(default_factory=list)  # {video_id, path, error}
    encoding: str = "raw"  # raw | jpeg (data/framecodec.py)
    bytes_per_clip: float = 0.0  # Parquet bytes on disk / decoded clips
    seconds: float = 0.0  # time the build took
    sampler: str = "uniform"  # data.sampler; clip4clip rows carry n_frames (real frames, zero frames after)
    resize: str = "area"  # data.resize

    @property
    def decoded(self) -> int:
        return self.total - len(self.skipped)


def parquet_files(folder: str) -> Tuple[object, List[str], int]:
    """(pyarrow file system, sorted Parquet file paths inside it, their total bytes) of a cache folder."""
    import pyarrow.fs as pf

    fs, path = storage.filesystem(folder) if storage.is_uri(folder) else (pf.LocalFileSystem(),
                                                                          str(Path(folder).resolve()))
    infos = fs.get_file_info(pf.FileSelector(path, recursive=True, allow_not_found=True))
    files = sorted((i.path, int(i.size or 0)) for i in infos
                   if i.type == pf.FileType.File and i.path.endswith(".parquet"))
    return fs, [f for f, _ in files], sum(s for _, s in files)


def _read_summary(out: str, remote: bool) -> Optional[ClipCache]:
    summary = storage.join(out, "summary.json")
    if remote:
        return ClipCache(**json.loads(storage.read_text(summary))) if storage.exists(summary) else None
    return ClipCache(**json.loads(Path(summary).read_text())) if Path(summary).exists() else None


def _remove(folder: str, remote: bool) -> None:
    if remote:
        storage.delete_folder(folder)
    else:
        shutil.rmtree(folder, ignore_errors=True)


def build_clip_cache(entries: List[VideoEntry], spec: ClipSpec, cache_dir: str, concurrency: int = 0) -> ClipCache:
    """Decode every video once, in parallel Ray tasks (`concurrency`, 0 = every CPU), into `cache_dir` (a folder
    or a URI); reuse a matching cache."""
    num_frames, size, encoding, quality, sampler, resize = (spec.num_frames, spec.size, spec.encoding, spec.quality,
                                                            spec.sampler, spec.resize)
    started = time.time()
    before = video_stats(entries)
    key = cache_key(entries, num_frames, size, before, encoding, quality, sampler, resize)
    name = f"clips-T{num_frames}-S{size}-{encoding}-{key}"
    remote = storage.is_uri(cache_dir)
    out = storage.join(cache_dir, name) if remote else str(Path(storage.local_path(cache_dir)).absolute() / name)
    found = _read_summary(out, remote)
    if found is not None:
        log.info("clip cache: %d clips (%d skipped) already decoded in %s", found.decoded, len(found.skipped), out)
        return found
    owner = f"{socket.gethostname()}-{os.getpid()}"
    if remote:
        remove_stale_parts(out)
        tmp = storage.join(out, f"part-{owner}-{uuid.uuid4().hex[:8]}")
    else:
        if Path(out).parent.is_dir():
            remove_stale_temp(Path(out).parent)
        tmp = f"{out}.tmp-{owner}"
        shutil.rmtree(tmp, ignore_errors=True)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    workers = concurrency or max(1, cpus)
    log.info("decoding %d videos (%d frames at %d px) with %d parallel tasks into the clip cache %s", len(entries),
             num_frames, size, workers, out)
    ds = ray.data.from_items([{"video_id": e.video_id, "path": e.path} for e in entries],
                             override_num_blocks=max(1, min(len(entries), 4 * workers)))
    # The same task-pool size on the decode and the write lets Ray Data fuse them into one operator
    # (MapBatches->Write): unfused, the write operator holds back part of the CPU budget and fewer decodes run.
    from ncl_ray.ui.console import Progress
    from ncl_ray.ui.progress import new_board, watch

    board = new_board()
    bar = Progress("decode", len(entries), "videos")
    ds = ds.map_batches(decode_batch, fn_kwargs=dict(spec=spec, progress=board),
                        batch_size=4, compute=ray.data.TaskPoolStrategy(size=workers), num_cpus=1)
    try:
        with watch(board, lambda st: bar.update(st.get("done", 0), f"{st.get('skipped', 0)} skipped")):
            ds.write_parquet(tmp, concurrency=workers)
        bar.close()
        changed = [p for p, st in video_stats(entries).items() if st != before[p]]
        if changed:
            raise RuntimeError(f"{len(changed)} video(s) changed while the clip cache was built, e.g. {changed[0]}; "
                               f"nothing was cached: run again once the videos are final")
        # The small status columns are read here directly (milliseconds; a Ray Data read costs seconds).
        fs, files, n_bytes = parquet_files(tmp)
        status = pq.read_table(files, columns=["video_id", "path", "error"], filesystem=fs).to_pandas()
    except BaseException:
        _remove(tmp, remote)
        raise
    bad = status[status["error"] != ""]
    cache = ClipCache(tmp if remote else out, num_frames, size, len(status),
                      [{"video_id": r.video_id, "path": r.path, "error": r.error} for r in bad.itertuples()],
                      encoding, n_bytes / max(1, len(status) - len(bad)), round(time.time() - started, 2),
                      sampler, resize)
    for s in cache.skipped[:5]:
        log.warning("skipped video %s: %s: %s", s["video_id"], s["path"], s["error"])
    if len(cache.skipped) > 5:
        log.warning("... and %d more skipped videos (all listed in %s)", len(cache.skipped) - 5,
                    storage.join(out, "summary.json"))
    if cache.decoded == 0:
        _remove(tmp, remote)
        raise RuntimeError(f"no video could be decoded ({len(entries)} tried); first error: "
                           f"{cache.skipped[0]['path']}: {cache.skipped[0]['error']}")
    text = json.dumps(asdict(cache), indent=1)
    if remote:  # the single write that makes the cache visible (see the module's docstring)
        storage.write_bytes(storage.join(out, "summary.json"), text.encode())
        return cache
    Path(tmp, "summary.json").write_text(text)
    try:
        Path(tmp).rename(out)
    except OSError:  # another run finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)
    return cache
