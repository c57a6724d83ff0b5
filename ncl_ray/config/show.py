"""`ncl-ray config show CONFIG [key=value ...]`: the resolved config, each key with its comment from the schema."""

import inspect
import re
from typing import Dict

import yaml
from omegaconf import OmegaConf

from ncl_ray.config import schema
from ncl_ray.config.eval_section import EvalBase
from ncl_ray.ncl.methods import SETTINGS

_FIELD = re.compile(r"^\s+(\w+):\s*[^=]+=\s*.*?#\s*(.+)$")


def key_comments() -> Dict[str, str]:
    """'section.key' -> the comment written beside the field in ncl_ray/config/schema.py."""
    out = {f"eval.{s.key}": f"{s.help} (default: {s.source})" for s in SETTINGS}  # the methods' own
    for section, f in schema.Config.__dataclass_fields__.items():
        cls = f.default_factory  # the section's dataclass
        cls = EvalBase if cls is schema.EvalConfig else cls  # its other keys: from their records
        pending = ""
        for line in inspect.getsource(cls).splitlines():
            m = _FIELD.match(line)
            bare = re.match(r"^\s+(\w+):\s*[^=#]+=\s*[^#]*$", line)
            if m:
                out[f"{section}.{m.group(1)}"] = m.group(2).strip()
            elif bare and pending:
                out[f"{section}.{bare.group(1)}"] = pending
            pending = line.strip()[1:].strip() if line.strip().startswith("#") else ""
    return out


def _flow(value) -> str:
    """One value as a YAML flow scalar or list on one line: `train`, `''`, `[none, ncl]`, `0.01`."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
    return text[:-4].strip() if text.endswith("\n...") else text  # a bare scalar ends with the document marker


def show(cfg) -> str:
    """The resolved config as YAML that loads back to the same values, each key with its meaning as a comment."""
    comments = key_comments()
    lines = []
    for section, values in OmegaConf.to_container(cfg, resolve=True).items():
        lines.append(f"{section}:")
        for key, value in values.items():
            text = f"{key}: {_flow(value)}"
            note = comments.get(f"{section}.{key}")
            lines.append(f"  {text:<44s}" + (f"  # {note}" if note else "").rstrip())
    return "\n".join(line.rstrip() for line in lines)
