"""A head started with jobs/cluster.yaml's own command (token authentication on), on loopback: a client without
the token cannot submit a job or read the cluster; with `--token-file` it can; a wrong token is named as such."""

import json
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from raynodes import BIN, alive, free_port, processes_of

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def head_command(port: int, dashboard_port: int, temp_dir: str):
    """cluster.yaml's `ray start --head` line, made local: its environment and flags, with this test's ports,
    temp dir and loopback address instead of the cloud's (the autoscaler's config does not exist here)."""
    spec = yaml.safe_load((ROOT / "jobs" / "cluster.yaml").read_text())
    line = next(c for c in spec["head_start_ray_commands"] if "ray start --head" in c)
    words = shlex.split(line)
    env = dict(w.split("=", 1) for w in words[: words.index("ray")])
    flags = [w for w in words[words.index("ray") + 2:] if not w.startswith(("--port", "--autoscaling-config"))]
    assert env == {"RAY_AUTH_MODE": "token"} and "--dashboard-host=127.0.0.1" in flags
    return env, [str(BIN / "ray"), "start", *flags, f"--port={port}", f"--dashboard-port={dashboard_port}",
                 "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--num-cpus=1",
                 f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
                 "--disable-usage-stats"]


@pytest.fixture(scope="module")
def authed_head(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")  # no ~/.ray/auth_token of the machine's user is ever found
    token = home / "cluster_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    temp_dir = tempfile.mkdtemp(prefix="nra", dir="/tmp")
    port, dash = free_port(), free_port()
    env_extra, cmd = head_command(port, dash, temp_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(env_extra, HOME=str(home), RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    try:
        assert r.returncode == 0, r.stderr[-2000:]
        yield {"dashboard": f"http://127.0.0.1:{dash}", "token": token, "home": home}
    finally:
        for sig in (15, 9):
            for pid in alive(processes_of(temp_dir)):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            time.sleep(1)


def jobs_cli(head, *args, **env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(HOME=str(head["home"]), RAY_USAGE_STATS_ENABLED="0", **env_extra)
    return subprocess.run([sys.executable, "-m", "ncl_ray.runtime.jobs", "--address", head["dashboard"], *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def test_unauthenticated_clients_are_refused(authed_head):
    body = json.dumps({"entrypoint": "touch /tmp/ncl-ray-should-not-exist"}).encode()
    req = urllib.request.Request(authed_head["dashboard"] + "/api/jobs/", data=body,
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 401
    r = jobs_cli(authed_head, "list")
    assert r.returncode == 2 and "requires Ray's token" in r.stderr and "Traceback" not in r.stderr
    wrong = authed_head["home"] / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    r = jobs_cli(authed_head, "--token-file", str(wrong), "list")
    assert r.returncode == 2 and "refused the token" in r.stderr, r.stderr[-1500:]


def test_the_token_file_lets_a_client_in(authed_head):
    r = jobs_cli(authed_head, "--token-file", str(authed_head["token"]), "list")
    assert r.returncode == 0, r.stderr[-2000:]
    r = jobs_cli(authed_head, "--token-file", str(authed_head["home"] / "missing"), "list")
    assert r.returncode == 2 and "no token there" in r.stderr
