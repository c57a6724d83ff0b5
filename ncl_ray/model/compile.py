"""torch.compile for VideoCLIP, used by training and by evaluation's embedding actors. No Ray, no config.

    mode = compile_mode("auto", device)   # None (eager), "default", or "reduce-overhead" (CUDA graphs)
    if mode:
        compile_model(model, mode=mode)
"""

from typing import Optional

import torch

from ncl_ray.model.clip import VideoCLIP


def compile_mode(setting: str, device: torch.device) -> Optional[str]:
    """`train.compile` -> None (eager) or torch.compile's mode. auto compiles on GPUs (on a CPU the first step
    would wait a minute for the compiler); graphs also replays each tower as CUDA graphs ("reduce-overhead"),
    which removes the per-kernel launch cost that bounds small per-GPU batches (bench/gpu.py: 2x at batch 16)."""
    if setting not in ("auto", "true", "false", "graphs"):
        raise ValueError(f"train.compile={setting!r}: expected auto, true, false or graphs")
    if setting == "graphs":
        return "reduce-overhead" if device.type == "cuda" else "default"
    return "default" if setting == "true" or (setting == "auto" and device.type == "cuda") else None


def compile_model(model: VideoCLIP, backend: str = "inductor", mode: Optional[str] = None) -> VideoCLIP:
    """The model with its two towers compiled in place (`nn.Module.compile`: parameter names, state dicts and
    checkpoints are unchanged; training's forward and evaluation's encoders both run through them). `mode` is
    torch.compile's (None = its default). Shapes are
    static: a new batch size (the last, short evaluation batch) is one more compilation, bounded by dynamo's
    recompile limit, never a dynamic-shape graph."""
    for tower in (model.clip.visual, model.clip.transformer):
        tower.compile(backend=backend, dynamic=False, mode=None if mode == "default" else mode)
    return model
