"""`ncl-ray index watch RUN FOLDER [--every 30] [--passes N]`: a folder that indexes itself.

Every `every` seconds the folder is read as `index add` reads it (sidecar captions, links refused unless
`--follow-links`); when it holds a video the index lacks (by id, and by content: a copy under another name is
not new), `index add` runs on it, writing a new version; indexed videos whose file was inside the folder and is
gone are removed (`index remove`, a version of its own). A running `ncl-ray serve` picks that version up on its
own (deployments.FOLLOW_S). Nothing is re-embedded that is already indexed; a file that cannot be decoded is
named once and not tried again. Ctrl-C (or `--passes N`) ends it.
"""

import logging
import os
import time
from pathlib import Path
from typing import List

from ncl_ray.data.manifest import VIDEO_EXTENSIONS
from ncl_ray.evaluation.export import read_index
from ncl_ray.serve.add import add_videos, read_inputs
from ncl_ray.serve.add_plan import plan_additions
from ncl_ray.serve.index import GalleryIndex
from ncl_ray.serve.manage import remove_videos
from ncl_ray.serve.versions import current, home_of, refresh

log = logging.getLogger("ncl_ray.index")


def pending(home, folder: str, follow_links: bool) -> List[str]:
    """Ids of the folder's videos that the current version lacks (an empty index: all of them)."""
    refresh(home)
    if Path(folder).is_dir() and not any(p.suffix.lower() in VIDEO_EXTENSIONS for p in Path(folder).iterdir()):
        return []  # a watched folder may be empty (everything deleted): nothing to add
    entries, _ = read_inputs(folder, follow_links)
    if current(home) is None:
        return [e.video_id for e in entries]
    todo, _, _ = plan_additions(entries, GalleryIndex.load(str(home)), replace=False)
    return [e.video_id for e in todo]


def gone(home, folder: str) -> List[str]:
    """Ids of indexed videos whose file lay inside `folder` and is no longer there."""
    refresh(home)
    if current(home) is None:
        return []
    root = os.path.realpath(folder)
    f = read_index(current(home))
    return sorted({v for v, p in zip(f.video_ids, f.paths) if p.startswith(root + os.sep) and not os.path.exists(p)})


def watch(target: str, folder: str, every: float, passes: int, window_s: float, stride_s: float,
          follow_links: bool) -> int:
    """Add what is new in `folder`, every `every` seconds, `passes` times (0: until interrupted)."""
    from ncl_ray.runtime.checkpoint import resolve_checkpoint

    if every <= 0:
        raise ValueError(f"--every {every}: seconds between passes must be positive")
    checkpoint = resolve_checkpoint(target)
    home = home_of(checkpoint)
    done, failed = 0, set()  # ids an add could not decode: not tried again while their name stays
    try:
        while True:
            new = [v for v in pending(home, folder, follow_links) if v not in failed]
            if new:
                print(f"{len(new)} new video(s) in {folder}: {', '.join(new[:5])}{' ...' if len(new) > 5 else ''}",
                      flush=True)
                try:
                    add_videos(target, folder, [], False, window_s, stride_s, follow_links)
                except ValueError as e:  # none of them decoded: each was named
                    log.warning("%s", e)
                failed |= set(new) & set(pending(home, folder, follow_links))
            removed = gone(home, folder)
            if removed:
                print(f"{len(removed)} video(s) gone from {folder}: {', '.join(removed[:5])}", flush=True)
                remove_videos(checkpoint, removed)
            done += 1
            if passes and done >= passes:
                return 0
            time.sleep(every)
    except KeyboardInterrupt:
        return 0
