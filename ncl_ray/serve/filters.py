"""Search filters: which rows of a served index a search may return. No Ray.

- `path`: a folder; rows whose indexed file lies in it (or is it);
- `min_s` / `max_s`: bounds on the whole video's duration in seconds (a row of unknown duration, such as the
  evaluation's test videos, never passes a duration bound);
- `added_after`: rows `index add` added after this time (an ISO date or date-time, UTC unless it names a zone, or
  Unix seconds; rows of unknown time, the evaluation's, never pass).

A filter becomes the row set of faiss's own search (GalleryIndex.search's `allowed`), so the k results are the
best k rows that pass, not what an unfiltered top k leaves.
"""

import math
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Optional

import numpy as np

MAX_PATH = 1000
FOLDERS_KEPT = 64  # folder masks kept per loaded index version (the oldest dropped first)
_FOLDER_MASKS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # index -> {folder: mask}


class FilterError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class Filters:
    path: str = ""
    min_s: Optional[float] = None
    max_s: Optional[float] = None
    added_after: Optional[float] = None  # Unix time

    def active(self) -> bool:
        return bool(self.path) or any(v is not None for v in (self.min_s, self.max_s, self.added_after))

    def rows(self, index) -> Optional[np.ndarray]:
        """The sorted rows (int64) of `index` that pass, or None when no filter is set."""
        if not self.active():
            return None
        ok = np.ones(len(index), bool)
        if self.path:
            ok &= folder_mask(index, self.path.rstrip("/") or "/")
        with np.errstate(invalid="ignore"):  # NaN (unknown) compares False: such rows do not pass
            if self.min_s is not None:
                ok &= index.durations >= self.min_s
            if self.max_s is not None:
                ok &= index.durations <= self.max_s
            if self.added_after is not None:
                ok &= index.added > self.added_after
        return np.nonzero(ok)[0].astype(np.int64)


def parse_time(value) -> float:
    """Unix seconds from Unix seconds or an ISO date / date-time (UTC unless it names a zone)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = datetime.fromisoformat(text)
            except ValueError:
                raise FilterError("added_after", "a date (2026-12-01), a date-time (2026-12-01T10:00:00) or Unix "
                                                 f"seconds, got {text[:40]!r}") from None
            seconds = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
    if not math.isfinite(seconds):
        raise FilterError("added_after", "must be a finite time")
    return seconds


def _seconds(field: str, value) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise FilterError(field, f"a number of seconds, got {str(value)[:40]!r}") from None
    if isinstance(value, bool) or not math.isfinite(x) or x < 0:
        raise FilterError(field, "a finite number of seconds, 0 or more")
    return x


def check_not(phrase, longest: int) -> None:
    """A negative phrase (`not=`) is None or text of 1 to `longest` characters; FilterError naming `not`."""
    if phrase is not None and (not isinstance(phrase, str) or not phrase.strip() or len(phrase) > longest):
        raise FilterError("not", f"a phrase of 1 to {longest} characters whose matches are lowered")


def parse_filters(get: Callable[[str], object]) -> Filters:
    """Filters from a request's values (`get(name)`: a query parameter's text, a JSON body's value, or None);
    FilterError names the field of a bad one."""
    path = get("path")
    if path is not None and (not isinstance(path, str) or not path.strip() or len(path) > MAX_PATH):
        raise FilterError("path", f"a folder of the indexed files, 1 to {MAX_PATH} characters")
    low, high = (None if get(k) is None else _seconds(k, get(k)) for k in ("min_s", "max_s"))
    if low is not None and high is not None and low > high:
        raise FilterError("max_s", f"must not be below min_s ({low:g} > {high:g})")
    after = get("added_after")
    return Filters(path or "", low, high, None if after is None else parse_time(after))


def folder_mask(index, folder: str) -> np.ndarray:
    """(rows,) bool: the rows whose indexed file is `folder` or lies under it. Built once per (loaded index
    version, folder), then read: a version's paths never change, and a new version is a new index object."""
    masks = _FOLDER_MASKS.setdefault(index, {})
    if folder not in masks:
        if len(masks) >= FOLDERS_KEPT:
            masks.pop(next(iter(masks)))
        prefix = folder if folder.endswith("/") else folder + "/"
        masks[folder] = np.array([p == folder or p.startswith(prefix) for p in index.paths], bool)
    return masks[folder]
