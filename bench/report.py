"""Shared by the benchmarks: print a small table and write it as JSON under bench/out/."""

import json
import platform
import time
from pathlib import Path
from typing import Any, Dict, List

OUT = Path(__file__).resolve().parent / "out"


def write(name: str, rows: List[Dict], notes: Dict) -> Path:
    keys = list(rows[0])
    widths = [max(len(k), *(len(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for r in rows:
        cells = [f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys]
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    for k, v in notes.items():
        print(f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}")
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
                                "processor": platform.processor(), "rows": rows, "notes": notes}, indent=2))
    print(f"wrote {path}")
    return path


def last_json(text: str) -> Any:
    """The last line of a child's output that is JSON: Ray may print its own log lines after it."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith(("{", "[")):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError(f"no JSON line in the output:\n{text[-2000:]}")
