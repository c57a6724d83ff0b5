import os
import secrets
import tempfile

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray's token authentication stays on in the tests too, with a token of the test session's own (never the
# user's ~/.ray/auth_token); heads started by tests carry their own (raynodes.Head.client_env)
_token = os.path.join(tempfile.mkdtemp(prefix="ncl-ray-test-auth-"), "auth_token")
with open(os.open(_token, os.O_WRONLY | os.O_CREAT, 0o600), "w") as _f:
    _f.write(secrets.token_hex(32))
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN_PATH"] = _token
os.environ.pop("RAY_AUTH_TOKEN", None)
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# every process this test session starts (servers, heads, CLI runs, and whatever Ray starts for them) inherits
# this entry; pytest_sessionfinish fails the run if one of them is still alive at the end
SESSION_MARKER = f"NCL_RAY_TEST_SESSION={secrets.token_hex(8)}"
os.environ[SESSION_MARKER.split("=")[0]] = SESSION_MARKER.split("=")[1]
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


TIERS = ("unit", "ray", "system")  # tests/<tier>/: no Ray / a shared local instance / their own clusters


def pytest_collection_modifyitems(items):
    """Every test carries its tier as a marker (`-m "not system"`); the Ray tiers get `ray` too."""
    for item in items:
        tier = next((t for t in TIERS if f"/tests/{t}/" in str(item.path)), None)
        if tier:
            item.add_marker(tier)
        if tier in ("ray", "system"):
            item.add_marker("ray")


@pytest.fixture(scope="session")
def bystander():
    """Someone else's Ray head on this machine (own temp dir, 3 CPUs), up before the first Ray test and checked
    alive after the last: the suite must never stop what it did not start (a failure here fails the run)."""
    import socket

    from raynodes import Head, alive

    head = Head(num_cpus=3, prefix="nrb")
    yield head
    try:
        assert head.core and alive(head.core) == head.core, "a test stopped an unrelated Ray head (gcs/raylet)"
        with socket.create_connection(("127.0.0.1", head.port), timeout=5):
            pass
    finally:
        head.stop()


@pytest.fixture(autouse=True)
def _shared_machine(request):
    """The Ray tiers run beside the bystander head, so a test that stops foreign processes is caught."""
    if any(f"/tests/{t}/" in str(request.node.path) for t in ("ray", "system")):
        request.getfixturevalue("bystander")


@pytest.fixture(scope="session")
def builtin_data(tmp_path_factory):
    """One folder for the built-in videos and their clip cache, shared by every test of the session that uses the
    tiny settings (tests/tiny.py): generated and decoded once."""
    return tmp_path_factory.mktemp("builtin")


@pytest.fixture(scope="session")
def tiny_run(builtin_data, tmp_path_factory):
    """One tiny NCL run trained through the CLI as a user runs it (its own Ray instance; 2 epochs; the fp16 backbone
    of CLIP4Clip's parity switch), for the tests that evaluate, import, serve or search a trained model. They copy
    it (`shutil.copytree`) before writing into it."""
    import subprocess
    import sys
    from pathlib import Path

    from raynodes import alive, processes_of
    from tiny import tiny

    import shutil

    runs = tmp_path_factory.mktemp("tiny-runs")
    ray_tmp = tempfile.mkdtemp(prefix="nrt", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(ray_tmp)
    r = subprocess.run([sys.executable, "-m", "ncl_ray", "train", "conf/default.yaml",
                        *tiny(builtin_data, runs, "train.epochs=2", "train.eval_every_epochs=1",
                              "model.clip_fp16=true", "run.name=tiny")],
                       cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=900)
    for pid in alive(processes_of(ray_tmp)):  # nothing of its instance outlives it
        os.kill(pid, 9)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return runs / "tiny"


@pytest.fixture(scope="session")
def s3():
    """One S3-compatible server on loopback for the whole session (tests/s3.py), with authentication on."""
    from s3 import S3Server

    server = S3Server()
    yield server
    server.stop()


def _own_helper(pid: int) -> bool:
    """multiprocessing's resource tracker, a child of this very process that ends when it does."""
    try:
        ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        cmd = open(f"/proc/{pid}/cmdline", "rb").read()
    except (OSError, ValueError, IndexError):
        return False
    return ppid == os.getpid() and b"multiprocessing.resource_tracker" in cmd


def pytest_sessionfinish(session, exitstatus):
    """Nothing the session started may outlive it: after every fixture has stopped what it started, the Ray
    instance this process may still hold is shut down, then any process carrying the session's marker after
    30 s is named, killed, and fails the run."""
    import signal
    import sys
    import time

    from raynodes import alive, processes_marked

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    deadline = time.time() + 30
    while {p for p in alive(processes_marked(SESSION_MARKER)) if not _own_helper(p)} and time.time() < deadline:
        time.sleep(0.5)
    left = {pid for pid in alive(processes_marked(SESSION_MARKER)) if not _own_helper(pid)}
    if not left:
        return
    names = []
    for pid in sorted(left):
        try:
            names.append(f"{pid} {open(f'/proc/{pid}/cmdline', 'rb').read().replace(bytes(1), b' ').decode()[:150]}")
        except OSError:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if names:
        print("\nprocesses started by this test session still alive at its end (killed now):\n  "
              + "\n  ".join(names), file=sys.stderr)
        session.exitstatus = 1
