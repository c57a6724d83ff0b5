"""The search service as a user runs it, for the tests that talk to it: `ncl-ray serve` in its own process and
Ray instance, a token from a --token-file, and HTTP helpers that send the token unless told not to."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from raynodes import alive, free_port, processes_marked, processes_of

ROOT = Path(__file__).resolve().parents[1]
TOKEN = secrets.token_urlsafe(24)  # what the served fixture's server requires (from a --token-file)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOST = "127.0.0.1"


def get(url, data=None):
    req = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                 headers={**AUTH, **({"Content-Type": "application/json"} if data is not None else {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def post_bytes(url, data: bytes, ctype: str):
    """A POST whose body is not JSON (an image), with the token."""
    req = urllib.request.Request(url, data=data, headers={**AUTH, "Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def start_server(tmp_path_factory, tiny_run):
    """Generator for a fixture: serve a copy of the tiny run; yields base URL, run, temp folder, environment."""
    tmp = tmp_path_factory.mktemp("serve")
    marker = secrets.token_hex(6)
    env = dict(os.environ, RAY_TMPDIR=str(tmp_path_factory.mktemp("r")), NCL_RAY_TEST_SERVER=marker)
    env.pop("RAY_ADDRESS", None)
    run = tmp / "runs" / "s"
    shutil.copytree(tiny_run, run)  # the session's trained run; serving writes its index into the copy
    port = free_port()
    start = time.time()
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    proc = subprocess.Popen([sys.executable, "-m", "ncl_ray", "serve", str(run), "--host", HOST, "--port", str(port),
                             "--token-file", str(token_file), "--allow-host", "search.example"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    base = f"http://{HOST}:{port}"
    try:
        while time.time() - start < 240:
            try:
                if get(base + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read()[-3000:])
            time.sleep(1)
        else:
            raise AssertionError("server did not come up")
        yield {"base": base, "run": run, "tmp": tmp, "env": env, "startup_s": time.time() - start, "pid": proc.pid}
    finally:
        os.kill(proc.pid, signal.SIGTERM)  # what a service manager sends: a clean stop, not a C++ abort
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in alive(processes_of(env["RAY_TMPDIR"]) | processes_marked(f"NCL_RAY_TEST_SERVER={marker}")):
            os.kill(pid, signal.SIGKILL)
    out = proc.stdout.read()
    assert proc.returncode == 0 and "Aborted" not in out and "terminate called" not in out, out[-2000:]


def raw(url, method="GET", body=b"", auth=True, **headers):
    req = urllib.request.Request(url, data=body if method == "POST" else None, method=method,
                                 headers={**(AUTH if auth else {}), **{k.replace("_", "-"): v
                                                                       for k, v in headers.items()}})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, e.read(), {k.lower(): v for k, v in e.headers.items()}


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height and holds almost nothing: what a decompression bomb looks like."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")
