"""Listening TCP sockets of a set of processes, read from /proc (Linux): what `ss -ltnp` shows, no dependency."""

import os
import socket
import struct
from typing import Iterable, List, Set, Tuple

from raynodes import _processes


def descendants(pid: int) -> Set[int]:
    """`pid` and every process below it."""
    parents = {p: ppid for p, (ppid, _) in _processes().items()}
    out, frontier = {pid}, {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier and child not in out}
        out |= frontier
    return out


def _addr(hex_addr: str) -> Tuple[str, int]:
    ip, port = hex_addr.split(":")
    raw = bytes.fromhex(ip)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)
    words = struct.unpack("<4I", raw)  # /proc writes IPv6 as four host-order 32-bit words
    return socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words)), int(port, 16)


def listening(pids: Iterable[int]) -> List[Tuple[int, str, int]]:
    """(pid, ip, port) of every listening TCP socket (IPv4 and IPv6) held by one of `pids`."""
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A":  # LISTEN
                inodes[f[9]] = _addr(f[1])
    out = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                out.append((pid, *inodes[target[8:-1]]))
    return out


LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")  # the last: IPv4 loopback on an IPv6 socket


def process_name(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return "?"


def outside_loopback(pids: Iterable[int]) -> List[Tuple[str, str, int]]:
    """(process name, ip, port) of the listening sockets not bound to loopback."""
    return [(process_name(pid), ip, port) for pid, ip, port in listening(pids) if ip not in LOOPBACK]


class Watch:
    """Polls the listening sockets of this process's descendants in a thread while a block runs:
    `seen` collects (process name, ip, port) of every one, `outside` those not on loopback."""

    def __init__(self, every_s: float = 0.2):
        import threading

        self.every_s, self.seen, self.outside = every_s, set(), set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            now = {(process_name(pid), ip, port) for pid, ip, port in listening(descendants(os.getpid()))}
            self.seen |= now
            self.outside |= {s for s in now if s[1] not in LOOPBACK}
            self._stop.wait(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
