"""Runs on object storage, against a real S3 server on loopback (moto's standalone server): `ncl-ray train` with
`run.storage_path=s3://...` writes everything of the run into the bucket and nothing under a local runs/,
`ncl-ray eval s3://...` from another working directory prints the training run's table, and a wrong bucket or
an unreachable endpoint is one line naming the URI, before Ray starts."""

import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tiny import TINY

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3():
    from s3 import S3Server

    server = S3Server()
    yield server
    server.stop()


def cli(args, env, cwd, timeout=900):
    return subprocess.run([sys.executable, "-m", "ncl_ray", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def table_rows(out: str):
    """The method rows of a printed results table: method | t2v metrics | v2t metrics (not the timing column)."""
    return ["|".join(line.split("|")[:3]) for line in out.splitlines()
            if line.split("|")[0].strip() in ("none", "ncl", "dsl", "qbnorm")]


def test_a_run_lives_in_the_bucket_and_evaluates_from_its_uri(s3, builtin_data, tmp_path):
    bucket = s3.bucket("ncl-runs")
    env = s3.process_env()
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="nrs", dir="/tmp")
    env["NCL_RAY_CACHE"] = str(tmp_path / "fetch-cache")
    work = tmp_path / "work"
    work.mkdir()
    scratch_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "ncl-ray-s3run-*")))
    r = cli(["train", str(ROOT / "conf" / "default.yaml"), *TINY, f"data.root={builtin_data}/syn",
             f"data.cache_dir={builtin_data}/cache", f"run.storage_path=s3://{bucket}/runs", "run.name=s3run",
             "train.epochs=2", "train.eval_every_epochs=1"], env, work)
    assert r.returncode == 0, r.stderr[-3000:]
    keys = s3.keys(bucket, "runs/s3run/")
    names = {k[len("runs/s3run/"):] for k in keys}
    assert {"results.json", "config.yaml", "best/state.pt", "best/best.json"} <= names, sorted(names)
    assert any(n.startswith("checkpoint_") and n.endswith("/state.pt") for n in names)  # Ray Train's own upload
    assert any(n.startswith("tensorboard/events.out.tfevents") for n in names)
    assert any(n.startswith("logs/") for n in names)
    assert not (work / "runs").exists() and list(work.iterdir()) == []  # nothing of the run on local disk
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "ncl-ray-s3run-*"))) == scratch_before
    assert f"s3://{bucket}/runs/s3run" in r.stdout
    trained = table_rows(r.stdout)
    assert trained, r.stdout
    # from another working directory, by the run's URI: the same table
    other = tmp_path / "elsewhere"
    other.mkdir()
    ev = cli(["eval", f"s3://{bucket}/runs/s3run", f"data.root={builtin_data}/syn",
              f"data.cache_dir={builtin_data}/cache"], env, other)
    assert ev.returncode == 0, ev.stderr[-3000:]
    evaluated = table_rows(ev.stdout)
    assert [row for row in evaluated if row.split("|")[0].strip() in ("none", "ncl")] == \
        [row for row in trained if row.split("|")[0].strip() in ("none", "ncl")], (trained, evaluated)
    fetched = list((tmp_path / "fetch-cache" / "fetched").iterdir())
    assert len(fetched) == 1  # one local copy, keyed by the URI and its files
    again = subprocess.run([sys.executable, "-c", "import sys; from ncl_ray.runtime.checkpoint import "
                            "resolve_checkpoint; print(resolve_checkpoint(sys.argv[1]))", f"s3://{bucket}/runs/s3run"],
                           cwd=other, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.strip().startswith(str(fetched[0]))  # not fetched again
    assert list((tmp_path / "fetch-cache" / "fetched").iterdir()) == fetched
    # resumed by name from the bucket, in yet another folder: Ray Train restores its checkpoint from there
    resumed = cli(["train", str(ROOT / "conf" / "default.yaml"), *TINY, f"data.root={builtin_data}/syn",
                   f"data.cache_dir={builtin_data}/cache", f"run.storage_path=s3://{bucket}/runs", "run.name=s3run",
                   "train.epochs=3", "train.eval_every_epochs=1", "train.resume=true"], env, other)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    restores = [json.loads(line) for line in s3.client().get_object(
        Bucket=bucket, Key="runs/s3run/restores.jsonl")["Body"].read().decode().splitlines()]
    assert [r["epoch"] for r in restores] == [1]  # continued after the second epoch, its queue restored
    assert restores[0]["queue_filled"] > 0
    assert sorted(p.name for p in other.iterdir()) == []


@pytest.mark.parametrize("case", ["no bucket", "no endpoint"])
def test_a_bad_storage_uri_is_one_line_before_ray_starts(s3, builtin_data, tmp_path, case):
    env = s3.process_env()
    uri = "s3://no-such-bucket-here/runs" if case == "no bucket" else "s3://ncl-runs/runs"
    if case == "no endpoint":
        from raynodes import free_port

        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.time()
    r = cli(["train", str(ROOT / "conf" / "default.yaml"), *TINY, f"data.root={builtin_data}/syn",
             f"data.cache_dir={builtin_data}/cache", f"run.storage_path={uri}"], env, tmp_path, timeout=120)
    took = time.time() - start
    lines = [line for line in r.stderr.splitlines() if "error" in line.lower()]
    assert r.returncode == 2 and took < 10, (took, r.stderr[-2000:])
    assert len(lines) == 1 and uri in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert ("does not exist" if case == "no bucket" else "cannot be reached") in lines[0]
