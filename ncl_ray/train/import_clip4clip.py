"""`ncl-ray import clip4clip pytorch_model.bin.N --out DIR [--config conf/msrvtt.yaml] [key=value ...]`.

Turns a CLIP4Clip checkpoint (meanP or seqTransf, trained with `--loose_type`) into a ncl-ray checkpoint folder
that `ncl-ray eval`, `ncl-ray serve` and `train.resume_from` accept: a CLIP4Clip user can apply NCL at test time
or fine-tune with NCL. Only tensors are read (`torch.load(weights_only=True)`); a file holding anything else is
refused naming it, and nothing in it runs.

Names: CLIP4Clip's `clip.*` are OpenAI's CLIP names, which open_clip's CLIP shares; `clip.logit_scale` is
CLIP4Clip's temperature (ours is `logit_scale`); `frame_position_embeddings.weight` and
`transformerClip.resblocks.{i}.*` are its seqTransf head (ours: `pool.frame_position_embeddings.weight`,
`pool.blocks.{i}.*`). The pooling and the number of seqTransf blocks are read from the file; the architecture
is the config's `model.arch` (ViT-B-32 in conf/msrvtt.yaml). The imported checkpoint has empty query queues, so
its stored config takes the test-time bank from training captions (`eval.bank_source=captions`).
"""

import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ncl_ray.runtime import storage

log = logging.getLogger("ncl_ray.import")
IGNORED = ("cross.", "similarity_dense.")  # CLIP4Clip's tight-type cross encoder: unused by loose-type models


def read_clip4clip(path: str) -> Dict[str, torch.Tensor]:
    """The tensors of a CLIP4Clip `pytorch_model.bin.N`; refuses anything but a name -> tensor mapping."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"CLIP4Clip checkpoint not found: {path}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(f"{path}: refused: not a file of plain tensors ({first}); nothing in it was run") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in state.items()):
        raise ValueError(f"{path}: refused: expected a mapping of names to tensors (a CLIP4Clip state dict)")
    if "clip.visual.conv1.weight" not in state:
        raise ValueError(f"{path}: not a CLIP4Clip checkpoint (no clip.visual.conv1.weight)")
    return state


def convert(state: Dict[str, torch.Tensor]) -> Dict[str, object]:
    """CLIP4Clip names -> {"weights": ncl-ray VideoCLIP names, "pooling", "temporal_layers"}."""
    out: Dict[str, torch.Tensor] = {}
    blocks = set()
    for name, value in state.items():
        if name.startswith(IGNORED):
            continue
        m = re.fullmatch(r"transformerClip\.resblocks\.(\d+)\.(.+)", name)
        if name == "clip.logit_scale":
            out["logit_scale"] = value.float().clone()
            out[name] = value.clone()
        elif name.startswith("clip."):
            out[name] = value
        elif name == "frame_position_embeddings.weight":
            out["pool.frame_position_embeddings.weight"] = value.float()
        elif m:
            blocks.add(int(m.group(1)))
            out[f"pool.blocks.{m.group(1)}.{m.group(2)}"] = value.float()
        else:
            raise ValueError(f"unknown CLIP4Clip tensor {name!r} (seqLSTM and tightTransf heads are not supported)")
    pooling = "seqTransf" if "pool.frame_position_embeddings.weight" in out else "meanP"
    return {"weights": out, "pooling": pooling, "temporal_layers": len(blocks) or 4}


def import_checkpoint(kind: str, path: str, out_dir: str, config: Optional[str], overrides: List[str]) -> int:
    from ncl_ray.runtime.checkpoint import is_complete, load_model_weights, save_checkpoint
    from ncl_ray.config.schema import load_config, to_dict
    from ncl_ray.model.clip import build_model_from_config
    from ncl_ray.train.builders import build_loss

    if kind != "clip4clip":
        raise ValueError(f"unknown import kind {kind!r} (clip4clip)")
    remote = storage.is_uri(out_dir)  # written to a scratch folder, uploaded, removed
    if remote:
        storage.check_reachable(out_dir, "--out")
        if storage.listing(out_dir):
            raise FileExistsError(f"--out {out_dir} exists and is not empty")
        out = Path(tempfile.mkdtemp(prefix="ncl-ray-import-")) / "checkpoint"
    else:
        out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out {out_dir} exists and is not empty")
    converted = convert(read_clip4clip(path))
    weights = converted["weights"]
    scale = float(weights.get("logit_scale", torch.tensor(4.6052)))
    cfg = load_config(config, [f"model.pooling={converted['pooling']}",
                               f"model.temporal_layers={converted['temporal_layers']}",
                               "model.pretrained=''", "model.activation=quickgelu",
                               f"model.init_temperature={min(1.0, float(torch.tensor(-scale).exp())):.8g}",
                               "eval.bank_source=captions", *overrides])
    model = build_model_from_config(cfg)
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights and not k.endswith("attn_mask")]
    if missing:
        raise ValueError(f"{path}: lacks {len(missing)} tensor(s) of model.arch={cfg.model.arch}, e.g. {missing[0]}")
    weights = {k: v.to(expected[k].dtype) for k, v in weights.items() if k in expected}
    load_model_weights(model, {**expected, **weights}, path)
    loss_fn = build_loss(cfg, model.embed_dim)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(str(out), model, loss_fn, epoch=-1, step=0, config=to_dict(cfg))
    if not is_complete(str(out)):
        raise RuntimeError(f"{out}: the checkpoint was not written completely")
    if remote:
        storage.upload(str(out), out_dir)
        shutil.rmtree(out.parent, ignore_errors=True)
    print(f"imported {path} ({converted['pooling']}, {cfg.model.arch}) into {out_dir}: "
          f"ncl-ray eval {out_dir} | ncl-ray serve {out_dir} | train.resume_from={out_dir}")
    return 0
