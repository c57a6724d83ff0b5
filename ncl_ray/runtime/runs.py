"""Run folders: where a run lives, when it may be created or continued, and what a crash left behind.

    run_dir = open_run_dir(cfg)          # after the inputs are validated; refuses to overwrite a real run
    remove_orphan_checkpoints(run_dir)   # checkpoint folders Ray Train never registered (a crash mid-report)
    newest_complete_checkpoint(run_dir)  # what a restarted worker should resume from

A run that never wrote a checkpoint (killed early) may be started again under its name. Resuming compares
the stored config with the new one and refuses model or data changes unless `train.resume_force=true`.

With `run.storage_path` on object storage (s3://, gs://) the run lives at the URI `storage_path/name`: Ray Train
writes its checkpoints there itself, and what ncl-ray writes (config, best/, TensorBoard, results, logs) goes to a
local scratch folder that is mirrored to the URI (`publish`) and removed at the end; nothing is written under
a local `runs/`.
"""

import logging
import re
import shutil
from pathlib import Path
from typing import List, Optional, Tuple

from ncl_ray.config.schema import ConfigError, save_config, to_dict
from ncl_ray.runtime import storage

log = logging.getLogger(__name__)
SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's list of registered checkpoints
# settings that change only how data is prepared, not what the model sees
HARMLESS = ("data.decode_threads", "data.decode_concurrency", "data.in_memory", "data.cache_dir", "data.decode_on",
            "train.compile")


def run_dir_of(cfg) -> Path:
    return Path(cfg.run.storage_path) / cfg.run.name


def run_uri_of(cfg) -> str:
    """The run's URI when it lives on object storage, else ""."""
    return storage.join(cfg.run.storage_path, cfg.run.name) if storage.is_uri(cfg.run.storage_path) else ""


RESTORES = "restores.jsonl"  # one line per restore, appended by rank 0


def publish(run_dir: Path, run_uri: str, only: Optional[List[str]] = None) -> None:
    """Mirror the scratch folder (or its entries named in `only`) to the run's URI; nothing without a URI.
    The restores file is rank 0's (appended on the node it runs on): mirrored only when named."""
    if not run_uri:
        return
    for name in only or [p.name for p in run_dir.iterdir() if p.name != RESTORES]:
        p = run_dir / name
        if name.endswith((".tmp", ".old")):
            continue
        if p.is_dir():
            storage.upload(str(p), storage.join(run_uri, name))
        elif p.is_file():
            storage.write_bytes(storage.join(run_uri, name), p.read_bytes())


def pull_best(run_dir: Path, run_uri: str) -> None:
    """On a node that has no copy of the run yet (a worker restarted elsewhere): its scratch folder, holding the
    run's best checkpoint so far when there is one."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if run_uri and not (run_dir / BEST).is_dir() and storage.exists(storage.join(run_uri, BEST)):
        storage.download(storage.join(run_uri, BEST), str(run_dir / BEST))


def record_restore(run_dir: Path, run_uri: str, record: dict) -> None:
    """Append one line to the run's restores file. On object storage the bucket's copy is the run's (a node
    that joined later has none in its scratch): it is read, appended to and published at once."""
    import json

    path, stored = run_dir / RESTORES, storage.join(run_uri, RESTORES) if run_uri else ""
    if stored and storage.exists(stored):
        path.write_text(storage.read_text(stored))
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    publish(run_dir, run_uri, [RESTORES])


def _open_remote_run(cfg, config_name: str, kind: str) -> Path:
    """The scratch folder of a run that lives at run_uri_of(cfg), after the same checks as a local one."""
    import tempfile

    storage.check_reachable(cfg.run.storage_path, "run.storage_path")  # before Ray: one line naming the URI
    uri = run_uri_of(cfg)
    stored = storage.join(uri, config_name)
    scratch = Path(tempfile.mkdtemp(prefix=f"ncl-ray-{cfg.run.name[:40]}-"))
    if cfg.train.resume:
        if not storage.exists(stored):
            raise ConfigError(f"train.resume=true: no {kind} named '{cfg.run.name}' in {cfg.run.storage_path}")
        check_resume_compatible(cfg, storage.read_text(stored), stored)
        pull_best(scratch, uri)  # the best epoch so far, which the workers compare against
    elif storage.exists(stored):
        names = {f.split("/")[0] for f, _, _ in storage.listing(uri)}
        if "results.json" in names or "trials" in names or any(n.startswith("checkpoint_") for n in names):
            raise ConfigError(f"{kind} '{cfg.run.name}' already exists in {cfg.run.storage_path}: pass "
                              f"train.resume=true to continue it, or choose another run.name")
        log.info("%s '%s' never wrote a checkpoint: starting it again", kind, cfg.run.name)
    save_config(cfg, str(scratch / config_name))
    publish(scratch, uri, [config_name])
    return scratch


def check_writable(storage_path: str) -> None:
    """Create the storage folder and write a probe file there; a ConfigError names the path otherwise."""
    p = Path(storage_path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".ncl-ray-write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"run.storage_path: cannot write to {storage_path} ({e.strerror or e})") from None


def checkpoint_dirs(run_dir: Path) -> List[Path]:
    return sorted(p for p in run_dir.glob("checkpoint_*") if p.is_dir())


def registered_checkpoints(run_dir: Path) -> Optional[set]:
    """Folder names Ray Train's snapshot lists, or None when there is no snapshot."""
    snap = run_dir / SNAPSHOT
    if not snap.is_file():
        return None
    return set(re.findall(r"checkpoint_[0-9][0-9_.\-]*[0-9]", snap.read_text()))


def remove_orphan_checkpoints(run_dir: Path, keep: Optional[Path] = None) -> List[str]:
    """Delete checkpoint folders that Ray Train's snapshot does not list (a worker killed between writing
    and registering one); call only while no trainer runs. Returns the removed names."""
    registered = registered_checkpoints(run_dir)
    if registered is None:
        return []
    removed = []
    for d in checkpoint_dirs(run_dir):
        if d.name not in registered and (keep is None or d.resolve() != keep.resolve()):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
    if removed:
        log.info("removed %d unregistered checkpoint folder(s) left by a crash: %s", len(removed), ", ".join(removed))
    return removed


def newest_complete_checkpoint(run_dir: Path) -> Optional[Path]:
    """The complete checkpoint folder with the highest step (registered or not), or None."""
    from ncl_ray.runtime.checkpoint import checkpoint_step  # torch: loaded only where checkpoints are read

    best, best_step = None, -1
    for d in checkpoint_dirs(run_dir):
        step = checkpoint_step(str(d))
        if step > best_step:
            best, best_step = d, step
    return best


def _has_results(run_dir: Path) -> bool:
    return bool(checkpoint_dirs(run_dir)) or (run_dir / "results.json").exists() or (run_dir / "trials").exists()


def open_run_dir(cfg, config_name: str = "config.yaml", kind: str = "run") -> Path:
    """storage_path/name for a new run (or the run to resume); saves the config. Call it after every input
    is validated, so that a bad input leaves no folder behind."""
    if storage.is_uri(cfg.run.storage_path):
        return _open_remote_run(cfg, config_name, kind)
    check_writable(cfg.run.storage_path)
    run_dir = run_dir_of(cfg)
    stored = run_dir / config_name
    if cfg.train.resume:
        if not stored.exists():
            raise ConfigError(f"train.resume=true: no {kind} named '{cfg.run.name}' in {cfg.run.storage_path}")
        check_resume_compatible(cfg, stored.read_text(), str(stored))
    elif stored.exists():
        if _has_results(run_dir):
            raise ConfigError(f"{kind} '{cfg.run.name}' already exists in {cfg.run.storage_path}: pass "
                              f"train.resume=true to continue it, or choose another run.name")
        log.info("%s '%s' never wrote a checkpoint: starting it again", kind, cfg.run.name)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, str(stored))
    return run_dir


def check_resume_compatible(cfg, stored_yaml: str, stored: str) -> None:
    """Refuse to resume with other model or data settings (say which) than the run's stored config (its YAML
    text, read from `stored`), unless train.resume_force."""
    import yaml

    from ncl_ray.runtime.checkpoint import config_differences

    old = yaml.safe_load(stored_yaml) or {}
    diffs = [d for d in config_differences(old, to_dict(cfg), ["model", "data", "ncl"])
             if not d.startswith(HARMLESS)]
    if diffs and not cfg.train.resume_force:
        raise ConfigError(f"train.resume=true: the config differs from the stored run ({stored}) in "
                          f"{'; '.join(diffs)}; undo these changes, or pass train.resume_force=true")
    if diffs:
        log.warning("resuming with changed settings (train.resume_force=true): %s", "; ".join(diffs))


BEST = "best"  # run_dir/best: the checkpoint of the best validation epoch (train.keep_best)


def save_best(run_dir: Path, model, loss_fn, epoch: int, step: int, config: dict, metric: str, score: float) -> Path:
    """Replace run_dir/best with this model (weights and query queues, no optimizer), atomically."""
    import json

    from ncl_ray.runtime.checkpoint import save_checkpoint

    best, tmp, old = run_dir / BEST, run_dir / (BEST + ".tmp"), run_dir / (BEST + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(str(tmp), model, loss_fn, epoch, step, config)
    (tmp / "best.json").write_text(json.dumps({"epoch": epoch, "step": step, "metric": metric, "score": score}))
    shutil.rmtree(old, ignore_errors=True)
    if best.exists():
        best.rename(old)
    tmp.rename(best)
    shutil.rmtree(old, ignore_errors=True)
    return best


def best_info(run_dir: Path) -> Optional[dict]:
    """{epoch, step, metric, score} of run_dir/best, or None when there is no complete one."""
    import json

    from ncl_ray.runtime.checkpoint import is_complete

    best = run_dir / BEST
    if not is_complete(str(best)) or not (best / "best.json").is_file():
        return None
    return json.loads((best / "best.json").read_text())


def newest_stored_checkpoint(run_uri: str) -> Tuple[str, int]:
    """(URI, step) of the complete checkpoint folder with the highest step under a run's URI, registered by
    Ray or not (a node killed right after its upload); ("", -1) when there is none."""
    from ncl_ray.runtime.checkpoint import MARKER, STATE, whole_step

    sizes = {path: size for path, size, _ in storage.listing(run_uri) if path.startswith("checkpoint_")}
    best, best_step = "", -1
    for path in sizes:
        folder, _, name = path.partition("/")
        if name != MARKER or f"{folder}/{STATE}" not in sizes:
            continue
        try:
            step = whole_step(storage.read_text(storage.join(run_uri, path)), sizes[f"{folder}/{STATE}"])
        except OSError:
            continue
        if step > best_step:
            best, best_step = storage.join(run_uri, folder), step
    return best, best_step


def restore_source(checkpoint, run_dir: Path, scratch: str, run_uri: str = "") -> Optional[str]:
    """The newest complete checkpoint: Ray's latest registered one, or a newer folder that a worker wrote but Ray
    had not yet registered when it failed (Ray registers on its poll, every 2 s). A run on object storage keeps
    both kinds under its URI: the newest whole one there is downloaded into `scratch`, this process's own folder
    (Ray's shared temporary copy is re-downloaded in place when a second rank of the node asks for it, under the
    feet of a rank still reading it)."""
    from ncl_ray.runtime.checkpoint import checkpoint_step

    if run_uri:
        uri, _ = newest_stored_checkpoint(run_uri)
        if uri:
            storage.download(uri, scratch)
            log.info("restoring %s", uri)
            return scratch
    if checkpoint is None:
        registered = None
    elif checkpoint.path and Path(checkpoint.path).is_dir():
        registered = checkpoint.path
    else:  # remote storage: this process's own copy
        registered = checkpoint.to_directory(scratch)
    newest = newest_complete_checkpoint(run_dir)
    step = checkpoint_step(registered) if registered is not None else -1
    if newest is not None and checkpoint_step(str(newest)) > step:
        log.info("restoring %s, newer than Ray's latest registered checkpoint", newest.name)
        return str(newest)
    return registered
