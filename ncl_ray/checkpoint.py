"""Checkpoint contents: {model, optimizer, scheduler, loss (the query queues), epoch, step, config}.

A checkpoint is a directory (what `ray.train.Checkpoint` wraps) holding `state.pt` and the resolved
`config.yaml`, so `ncl-ray eval DIR` needs nothing else.
"""

from pathlib import Path
from typing import Any, Dict, Optional

import torch
import yaml

STATE = "state.pt"


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
    return str(d)


def load_checkpoint(directory: str) -> Dict[str, Any]:
    path = Path(directory) / STATE
    if not path.is_file():
        raise FileNotFoundError(f"not a ncl-ray checkpoint (no {STATE}): {directory}")
    return torch.load(path, map_location="cpu", weights_only=False)
