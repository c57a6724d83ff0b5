"""Ray heads started by the tests themselves, stopped by PID only (Ray's own stop command has no address filter
and would end every Ray instance on the host).

Each head gets its own short temp dir and free ports on 127.0.0.1. Its processes are the ones whose command line
names that temp dir (gcs_server, raylet, dashboard, monitors) plus all their descendants (the workers, whose
titles Ray rewrites), read from /proc.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Set

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> Dict[int, tuple]:
    """pid -> (ppid, command line) for every process we can read."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(d.name)] = (ppid, cmd)
    return out


def processes_of(marker: str) -> Set[int]:
    procs = _processes()
    roots = {pid for pid, (_, cmd) in procs.items() if marker in cmd and pid != os.getpid()}
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = {pid for pid, (ppid, _) in procs.items() if ppid in frontier and pid not in found}
        found |= frontier
    return found


def processes_marked(entry: str) -> Set[int]:
    """Processes (other than this one) whose environment holds `entry` ("KEY=value"): everything a test started
    inherits the marker it set, including what Ray starts on its behalf and what outlives its parent (a head's
    client server, reparented to init once `ray start` exits)."""
    want, out = entry.encode(), set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if want in (d / "environ").read_bytes().split(b"\0"):
                out.add(int(d.name))
        except OSError:
            continue
    return out


def alive(pids: Set[int]) -> Set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                out.add(pid)
        except OSError:
            pass
    return out


class Head:
    """`ray start --head` on loopback with its own temp dir, ports and authentication token (Ray's token auth
    on, as on a real cluster); `stop()` kills only its processes. Clients add `client_env()` to theirs."""

    def __init__(self, num_cpus: int = 2, prefix: str = "nrh", extra_env: Optional[Dict[str, str]] = None,
                 cwd: Optional[str] = None):
        self.temp_dir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # short: Ray's socket paths have a limit
        self.port, self.dashboard_port = free_port(), free_port()
        self.token = Path(self.temp_dir) / "auth_token"
        self.token.write_text(secrets.token_hex(32))
        self.token.chmod(0o600)
        # the one-machine footer pool a private instance gets (ncl_ray.runtime.cluster.FOOTER_ACTORS)
        self.marker = f"NCL_RAY_TEST_HEAD={self.temp_dir}"  # in the environment of everything it starts
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
                        RAY_DATA_PARQUET_FOOTER_NUM_ACTORS="1", NCL_RAY_TEST_HEAD=self.temp_dir,
                        **self.client_env(), **(extra_env or {}))
        self.env.pop("RAY_ADDRESS", None)
        self.node_dirs: List[str] = []  # temp dirs of the nodes added with their own
        self.env.pop("RAY_AUTH_TOKEN", None)
        cmd = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}", f"--num-cpus={num_cpus}",
               f"--temp-dir={self.temp_dir}", f"--dashboard-agent-listen-port={free_port()}",
               f"--ray-client-server-port={free_port()}", "--disable-usage-stats"]
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120, cwd=cwd)
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed: {r.stderr[-2000:]}")
        self.pids = processes_of(self.temp_dir)
        procs = _processes()
        self.core = {p for p in self.pids if p in procs and ("gcs_server" in procs[p][1] or "/raylet" in procs[p][1])}

    def client_env(self) -> Dict[str, str]:
        """What a client process needs in its environment to talk to this head."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token)}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def add_node(self, num_cpus: int = 1, own_temp_dir: bool = False, cwd: Optional[str] = None) -> str:
        """A second Ray node on this machine, joined to this head; with `own_temp_dir`, nothing on disk is
        shared with the head (its own temp dir, and `cwd` as its working directory). Returns its temp dir."""
        temp_dir = tempfile.mkdtemp(prefix="nrn", dir="/tmp") if own_temp_dir else self.temp_dir
        if own_temp_dir:
            self.node_dirs.append(temp_dir)
        cmd = [str(BIN / "ray"), "start", f"--address={self.address}", "--node-ip-address=127.0.0.1",
               f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}",
               f"--dashboard-agent-listen-port={free_port()}"]
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120, cwd=cwd)
        if r.returncode != 0:
            raise RuntimeError(f"ray start (worker node) failed: {r.stderr[-2000:]}")
        return temp_dir

    def kill_node(self, temp_dir: str) -> None:
        """SIGKILL every process of a node added with its own temp dir (its raylet, agents and workers): the
        node is gone as if its machine had died."""
        pids = processes_of(temp_dir)
        for pid in alive(pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.time() + 10
        while alive(pids) and time.time() < deadline:
            time.sleep(0.2)

    def stop(self) -> None:
        pids = processes_of(self.temp_dir) | getattr(self, "pids", set()) | processes_marked(self.marker)
        for d in getattr(self, "node_dirs", []):
            pids |= processes_of(d)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in alive(pids):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            deadline = time.time() + (3 if sig == signal.SIGTERM else 10)  # a test head: no graceful drain needed
            while alive(pids) and time.time() < deadline:
                time.sleep(0.2)
            pids |= processes_marked(self.marker)  # started meanwhile (an agent restarting a worker)
            if not alive(pids):
                break
        for d in [self.temp_dir, *getattr(self, "node_dirs", [])]:
            shutil.rmtree(d, ignore_errors=True)


def ray_pids_outside(markers: List[str]) -> Set[int]:
    """gcs_server processes on the host that do not belong to the given temp dirs (other people's Ray)."""
    return {pid for pid, (_, cmd) in _processes().items()
            if "gcs_server" in cmd and not any(m in cmd for m in markers)}
