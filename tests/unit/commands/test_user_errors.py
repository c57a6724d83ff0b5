"""User errors end in one line and exit code 2, before Ray starts: a busy port, a folder without a run, a
dashboard address given on the command line while RAY_ADDRESS names another."""

import os
import socket
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[3]


def run(*args, ray_address=None):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_serve_on_a_busy_port_is_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run("ncl_ray", "serve", str(tmp_path), "--port", str(port))
    assert r.returncode == 2
    assert r.stderr.strip() == (f"error: cannot listen on 127.0.0.1:{port} (Address already in use): pick another "
                                "--port, or stop what uses it")


def test_serve_and_eval_of_a_folder_without_a_run_are_one_line(tmp_path):
    for args in (("serve", str(tmp_path), "--port", "0"), ("eval", str(tmp_path))):
        r = run("ncl_ray", *args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert f"no ncl-ray checkpoint in {tmp_path}" in r.stderr


def test_the_address_given_wins_over_ray_address_before_or_after_the_action():
    for argv in (["--address", "http://127.0.0.1:1", "list"], ["list", "--address", "http://127.0.0.1:1"]):
        r = run("ncl_ray.runtime.jobs", *argv, ray_address="http://127.0.0.1:2")
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "http://127.0.0.1:1" in r.stderr and "127.0.0.1:2" not in r.stderr


def test_paths_that_cannot_be_buckets_yet_say_so_instead_of_making_a_local_s3_folder(tmp_path):
    r = run("ncl_ray", "train", "conf/default.yaml", "data.root=s3://bucket/videos")
    assert r.returncode == 2 and "data.root=s3://bucket/videos: a dataset folder is read from a mounted" in r.stderr
    assert "data.manifest" in r.stderr  # where videos in a bucket go instead
    assert not (ROOT / "s3:").exists()
