"""Commands never join a cluster they were not pointed at, even when a stale cluster file names a dead head, and
join the one RAY_ADDRESS names (the bystander head of conftest.py, which must also survive the whole suite)."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from raynodes import alive, free_port, processes_of

pytestmark = pytest.mark.ray
PROBE = ("from ncl_ray.runtime.cluster import init_ray; import ray; init_ray(); "
         "print('CPUS', int(ray.cluster_resources()['CPU'])); ray.shutdown()")


def _env(**extra):
    env = dict(os.environ, **{"RAY_USAGE_STATS_ENABLED": "0", **extra})
    if "RAY_ADDRESS" not in extra:
        env.pop("RAY_ADDRESS", None)
    return env


def test_stale_cluster_file_does_not_hang_a_command():
    tmp = tempfile.mkdtemp(prefix="nrs", dir="/tmp")
    try:
        (Path(tmp) / "ray").mkdir()
        (Path(tmp) / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")  # a head that is gone
        env = _env(RAY_TMPDIR=tmp)
        # what a plain ray.init() does with that file: it never starts a private instance
        plain = subprocess.Popen([sys.executable, "-c", "import ray; ray.init(); print('CPUS')"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, _ = plain.communicate(timeout=8)
            assert plain.returncode != 0 and "CPUS" not in out
        except subprocess.TimeoutExpired:
            os.killpg(plain.pid, 9)
            plain.communicate()
        r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "CPUS" in r.stdout
    finally:
        for pid in alive(processes_of(tmp)):
            os.kill(pid, 9)


def test_ray_address_joins_that_cluster(bystander):
    r = subprocess.run([sys.executable, "-c", PROBE], env=_env(RAY_ADDRESS=bystander.address, **bystander.client_env()),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "CPUS 3" in r.stdout  # the bystander's 3 CPUs: joined, not a private instance
