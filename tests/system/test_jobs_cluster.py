"""A real `ray job submit`: train and eval jobs on a 2-CPU head of the test's own, through jobs/submit.sh and the
CLI a user runs."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from raynodes import Head
from tiny import tiny

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ray_head():
    """A 2-CPU head of our own (own temp dir, ports and token), stopped by PID afterwards."""
    head = Head(num_cpus=2, prefix="nrj")
    try:
        yield head
    finally:
        head.stop()


def run_jobs(head, args, timeout=600):
    """`python -m ncl_ray.runtime.jobs --address HEAD ...` as a user runs it, the head's token in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(head.client_env())
    return subprocess.run([sys.executable, "-m", "ncl_ray.runtime.jobs", "--address", head.dashboard, *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.ray
@pytest.mark.slow
def test_train_and_eval_jobs_on_a_2cpu_cluster_with_a_growing_log(ray_head, tmp_path, builtin_data):
    runs = tmp_path / "runs"
    growing = ROOT / "jobs" / "_growing_test.log"  # a log redirected into the project while submitting
    stop = threading.Event()

    def grow():
        with open(growing, "a") as f:
            while not stop.is_set():
                f.write("x" * 4096 + "\n")
                f.flush()
                time.sleep(0.01)

    writer = threading.Thread(target=grow, daemon=True)
    writer.start()
    try:
        # through jobs/submit.sh, as the README submits, with --address after the config
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
        env.update(ray_head.client_env(), PYTHON=sys.executable, RAY_ADDRESS="http://127.0.0.1:1")  # not this one
        r = subprocess.run(["jobs/submit.sh", "train", "conf/default.yaml",
                            *tiny(builtin_data, runs, "train.epochs=1", "train.cpus_per_worker=0.25", "run.name=job"),
                            "--address", ray_head.dashboard, "--python", sys.executable, "--timeout", "300"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=450)
        assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-2000:])
    finally:
        stop.set()
        writer.join()
        growing.unlink()
    assert "SUCCEEDED" in r.stdout and "t2v R@1" in r.stdout  # the job's own log was followed
    assert "uploading" in r.stdout
    results = json.loads((runs / "job" / "results.json").read_text())
    assert Path(results["checkpoint"], "state.pt").is_file()
    assert list((runs / "job" / "tensorboard").glob("events.out.tfevents.*"))

    # evaluation through a job on the same 2-CPU cluster: its actor pool leaves room for the read tasks
    r = run_jobs(ray_head, ["submit", "eval", str(runs / "job"), "--python", sys.executable, "--timeout", "240"])
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-2000:])
    assert (Path(results["checkpoint"]) / "eval" / "test-bank-train" / "metrics.json").is_file()

    # a failing job: its own log names the bad input, and the command exits 1
    r = run_jobs(ray_head, ["submit", "eval", str(tmp_path / "no-such-run"), "--python", sys.executable,
                            "--quiet", "--timeout", "120"])
    assert r.returncode == 1 and "FAILED" in r.stdout and "no ncl-ray checkpoint" in r.stderr
    # bad configs and relative paths are refused before anything is uploaded
    r = run_jobs(ray_head, ["submit", "train", "conf/default.yaml", "train.epochz=1"])
    assert r.returncode == 2 and "epochz" in r.stderr
    r = run_jobs(ray_head, ["submit", "train", "conf/default.yaml", f"run.storage_path={runs}"])
    assert r.returncode == 2
    assert "data.root=data/synthetic" in r.stderr and "temporary working directory" in r.stderr

    r = run_jobs(ray_head, ["status", "nosuchjob"])
    assert r.returncode == 2 and "no job 'nosuchjob'" in r.stderr and "Traceback" not in r.stderr
