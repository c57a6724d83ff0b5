"""The files an index serves are opened as what they were when they were indexed. No Ray.

    ident = identity_of(fd)                      # (device, inode, size, mtime_ns) of an open file
    fd = open_indexed(path, ident)               # O_NOFOLLOW, then the identity compared: FileChanged if not
    response = ranged_file(fd, size, "video/mp4", request.headers.get("range"))

`index add` records each file's identity beside its SHA-256 (read from the same open file). The server opens a
file without following a link in its last component (`O_NOFOLLOW`) and compares the identity of what it opened
with the stored one, so a file swapped for a link, or replaced by another file, after indexing is refused; a
link in a parent folder lands on another inode and is refused the same way. Errors name nothing of the
filesystem: the HTTP layer turns them into 404 (gone) or 409 (changed).
"""

import os
import stat
from typing import Optional, Sequence, Tuple

Identity = Tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns)
UNKNOWN: Identity = (-1, -1, -1, -1)  # versions written before identities were kept
CHUNK = 1 << 16  # bytes per read when streaming a file


class FileGone(Exception):
    """The indexed file no longer exists (or cannot be opened)."""


class FileChanged(Exception):
    """Something other than the indexed file is at its path now (a link, another file, new contents)."""


def identity_of(st: os.stat_result) -> Identity:
    return int(st.st_dev), int(st.st_ino), int(st.st_size), int(st.st_mtime_ns)


def open_indexed(path: str, expected: Sequence[int]) -> int:
    """A read-only descriptor of `path`, opened without following a final link, that is the file indexed with
    identity `expected`; FileGone or FileChanged otherwise (the descriptor is closed then)."""
    if tuple(int(x) for x in expected) == UNKNOWN:
        raise FileChanged("no identity was recorded for this file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileGone() from None
    except OSError as e:  # ELOOP: the last component is a link now
        raise FileChanged(e.strerror) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or identity_of(st) != tuple(int(x) for x in expected):
        os.close(fd)
        raise FileChanged("not the file that was indexed")
    return fd


def parse_range(header: Optional[str], size: int) -> Optional[Tuple[int, int]]:
    """(first, last) byte of a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range; None for the whole file;
    ValueError when it cannot be satisfied (416)."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec or "-" not in spec:
        raise ValueError("only one byte range is served")
    a, _, b = (x.strip() for x in spec.partition("-"))
    if not (a.isdigit() or a == "") or not (b.isdigit() or b == "") or (a == "" and b == ""):
        raise ValueError("malformed range")
    if a == "":  # the last n bytes
        n = int(b)
        if n == 0 or size == 0:
            raise ValueError("empty range")
        return max(0, size - n), size - 1
    first, last = int(a), (int(b) if b else size - 1)
    if first >= size or last < first:
        raise ValueError("range outside the file")
    return first, min(last, size - 1)


def read_span(fd: int, first: int, last: int):
    """Yield the bytes first..last of `fd` in CHUNK pieces, then close it."""
    try:
        pos = first
        while pos <= last:
            data = os.pread(fd, min(CHUNK, last - pos + 1), pos)
            if not data:
                break
            pos += len(data)
            yield data
    finally:
        os.close(fd)
