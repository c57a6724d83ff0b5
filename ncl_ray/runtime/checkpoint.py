"""Checkpoint contents: {model, optimizer, scheduler, loss (the query queues), epoch, step, config}.

A checkpoint is a directory (what `ray.train.Checkpoint` wraps) holding `state.pt`, the resolved
`config.yaml` and `complete.json` (written last: the size of `state.pt`), so `ncl-ray eval DIR` needs
nothing else and a folder that a crash left half-copied is recognised as incomplete.

Loading never runs code from the file: `torch.load(weights_only=True)` accepts tensors, numbers, strings and
containers only, so a crafted pickle is refused before anything in it executes. Every error names the file.
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import yaml

from ncl_ray.runtime import storage

STATE = "state.pt"
MARKER = "complete.json"
REQUIRED = ("model", "loss", "epoch", "step", "config")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def save_checkpoint(directory: str, model: torch.nn.Module, loss_fn: torch.nn.Module, epoch: int, step: int,
                    config: Dict[str, Any], optimizer: Optional[torch.optim.Optimizer] = None,
                    scheduler: Optional[Any] = None) -> str:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "loss": loss_fn.state_dict(), "epoch": epoch, "step": step,
             "config": config,
             "optimizer": optimizer.state_dict() if optimizer is not None else None,
             "scheduler": scheduler.state_dict() if scheduler is not None else None}
    torch.save(state, d / (STATE + ".tmp"))
    (d / (STATE + ".tmp")).replace(d / STATE)  # never a half-written state file
    (d / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    marker = {"state_bytes": (d / STATE).stat().st_size, "epoch": epoch, "step": step}
    (d / MARKER).write_text(json.dumps(marker))
    return str(d)


def whole_step(marker_text: str, state_bytes: int) -> int:
    """The global step a marker records when `state.pt` has the size it names (a whole checkpoint), else -1;
    the one completeness rule for a folder on disk and for one under a URI."""
    try:
        marker = json.loads(marker_text)
        return int(marker["step"]) if state_bytes == int(marker["state_bytes"]) else -1
    except (ValueError, KeyError, TypeError):
        return -1


def checkpoint_step(directory: str) -> int:
    """The global step recorded in a complete checkpoint's marker (-1 when incomplete)."""
    d = Path(directory)
    try:
        return whole_step((d / MARKER).read_text(), (d / STATE).stat().st_size)
    except OSError:
        return -1


def is_complete(directory: str) -> bool:
    """True when the folder holds a whole checkpoint: the marker exists and `state.pt` has its size."""
    return checkpoint_step(directory) >= 0


def load_checkpoint(directory: str) -> Dict[str, Any]:
    """The state dict of a checkpoint folder, read without executing any code in the file.

    Raises:
        CheckpointError: missing, empty, truncated, not a torch file, or holding anything but plain data
            (a pickle that would call a function is refused and nothing in it runs).
    """
    if storage.is_uri(directory):  # a checkpoint on object storage: its local copy (fetched once)
        directory = resolve_checkpoint(directory)
    path = Path(directory) / STATE
    if not path.is_file():
        raise CheckpointError(f"not a ncl-ray checkpoint (no {STATE}): {directory}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (a crash while it was written?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for hostile content, RuntimeError/EOFError for corrupt files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(f"{path}: refused: the file holds code or objects that are not plain data "
                                  f"({first[:200]}); it was not executed") from None
        raise CheckpointError(f"{path}: cannot be read as a checkpoint (truncated or corrupt?): "
                              f"{type(e).__name__}: {first[:200]}") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not a ncl-ray checkpoint (expected keys {', '.join(REQUIRED)}; got {keys})")
    if not isinstance(state["config"], dict):
        raise CheckpointError(f"{path}: its stored config is not a mapping")
    return state


def config_differences(stored: Dict[str, Any], current: Dict[str, Any], sections: List[str],
                       prefix: str = "") -> List[str]:
    """`key: stored -> current` for every differing leaf under the given top-level sections."""
    out: List[str] = []
    for key in sorted(set(stored) | set(current)):
        if not prefix and key not in sections:
            continue
        a, b = stored.get(key), current.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, sections, name + ".")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def load_model_weights(model: torch.nn.Module, weights: Dict[str, torch.Tensor], source: str,
                       stored_config: Optional[Dict[str, Any]] = None,
                       current_config: Optional[Dict[str, Any]] = None) -> None:
    """`model.load_state_dict(weights)` with an error that names the config keys that differ, not tensors."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        diffs = config_differences(stored_config or {}, current_config or {}, ["model"])
        why = ("; ".join(diffs) if diffs else str(e).splitlines()[0])
        raise CheckpointError(f"{source}: the checkpoint's model does not fit this config's model ({why})") \
            from None


def resolve_checkpoint(path: str) -> str:
    """A checkpoint folder, or a run folder (its final checkpoint from results.json, else the newest). The
    checkpoint results.json names is looked up by its name inside this folder, so a copied or moved run folder
    resolves to its own checkpoint, never to the one it was copied from. A URI (s3://, gs://) resolves the same
    way on object storage and returns the local copy of that checkpoint (storage.fetch: made once, reused while
    unchanged)."""
    if storage.is_uri(path):
        return _fetch_checkpoint(path)
    p = Path(storage.local_path(path)).resolve()
    if (p / "state.pt").is_file():
        return str(p)
    if (p / "results.json").is_file():
        ckpt = json.loads((p / "results.json").read_text()).get("checkpoint")
        if ckpt and (p / Path(ckpt).name / "state.pt").is_file():
            return str(p / Path(ckpt).name)
    found = sorted(p.glob("checkpoint_*/state.pt")) if p.is_dir() else []
    if found:
        return str(found[-1].parent)
    raise FileNotFoundError(f"no ncl-ray checkpoint in {path} (expected state.pt, or a run folder)")


def checkpoint_uri(uri: str) -> str:
    """The checkpoint a URI names on object storage: itself, the one its results.json names, or its newest."""
    uri = uri.rstrip("/")
    try:
        names = {f.split("/")[0] for f, _, _ in storage.listing(uri)}
    except OSError as e:
        raise FileNotFoundError(f"{uri}: cannot be read ({str(e).splitlines()[0][:200]})") from None
    if STATE in names:
        return uri
    if "results.json" in names:
        ckpt = json.loads(storage.read_text(storage.join(uri, "results.json"))).get("checkpoint") or ""
        name = ckpt.rstrip("/").rsplit("/", 1)[-1]
        if name in names:
            return storage.join(uri, name)
    found = sorted(n for n in names if n.startswith("checkpoint_"))
    if found:
        return storage.join(uri, found[-1])
    raise FileNotFoundError(f"no ncl-ray checkpoint in {uri} (expected state.pt, or a run folder)")


def _fetch_checkpoint(uri: str) -> str:
    """The local copy of the checkpoint a URI names (its evaluations, under eval/, and its served index, under
    index/, stay remote: serve/remote.py mirrors the index)."""
    return storage.fetch(checkpoint_uri(uri), skip=("eval/", "index/"))


def load_model(checkpoint: str, state: Optional[Dict[str, Any]] = None):
    """The one way from a checkpoint folder to its model: (model in eval mode on the CPU, its config, the state).
    Refuses files that are not plain data and weights that do not fit, naming the checkpoint (CheckpointError)."""
    from ncl_ray.config.schema import from_dict
    from ncl_ray.model.clip import build_model_from_config

    state = state if state is not None else load_checkpoint(checkpoint)
    cfg = from_dict(state["config"])
    model = build_model_from_config(cfg)
    load_model_weights(model, state["model"], checkpoint)
    return model.eval(), cfg, state
