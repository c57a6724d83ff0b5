"""`ncl-ray config show CONFIG [key=value ...]`: the resolved config, each key with its comment from the schema."""

import inspect
import re
from typing import Dict

from omegaconf import OmegaConf

from ncl_ray.config import schema

_FIELD = re.compile(r"^\s+(\w+):\s*[^=]+=\s*.*?#\s*(.+)$")


def key_comments() -> Dict[str, str]:
    """'section.key' -> the comment written beside the field in ncl_ray/config/schema.py."""
    out = {}
    for section, f in schema.Config.__dataclass_fields__.items():
        cls = f.default_factory  # the section's dataclass
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


def show(cfg) -> str:
    comments = key_comments()
    lines = []
    for section, values in OmegaConf.to_container(cfg, resolve=True).items():
        lines.append(f"{section}:")
        for key, value in values.items():
            text = OmegaConf.to_yaml({key: value}).strip().replace("\n", " ")
            note = comments.get(f"{section}.{key}")
            lines.append(f"  {text:<44s}" + (f"  # {note}" if note else ""))
    return "\n".join(lines)
