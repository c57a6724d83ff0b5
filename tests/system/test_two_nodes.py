"""Two Ray nodes on loopback (own ports and temp dirs, stopped by PID) that share nothing but an S3 bucket: training
spread one worker per node with the gathered queues identical on both, a node killed, the run resumed from the
bucket (jobs/submit.sh: tests/system/test_jobs_cluster.py). A shared disk is the easier case of the same run: the
checkpoints go through Ray's storage either way."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raynodes import Head

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_two_nodes_that_share_nothing_but_a_bucket_train_and_resume_after_a_node_dies(s3, tmp_path):
    """Two Ray nodes with their own temp dirs and working directories; the videos, their manifest, the clip
    cache and the run live only in an S3 bucket. The worker node is killed after the first checkpoint, a fresh
    node joins, and the run resumes by name from the bucket. Nothing of the run is written to either node's
    working directory or the driver's."""
    from ncl_ray.data.synthetic import make_dataset
    from raynodes import alive, processes_of
    from tiny import TINY

    bucket = s3.bucket("ncl-two-nodes")
    manifest = Path(make_dataset(str(tmp_path / "videos"), 40))
    for f in manifest.parent.rglob("*"):
        if f.is_file():
            s3.client().upload_file(str(f), bucket, f"data/{f.relative_to(manifest.parent)}")
    shutil.rmtree(manifest.parent)  # from now on, the videos exist only in the bucket
    dirs = {name: tmp_path / name for name in ("head", "node", "node2", "driver", "driver2")}
    for d in dirs.values():
        d.mkdir()
    head = Head(num_cpus=2, prefix="nrs", extra_env=s3.env, cwd=str(dirs["head"]))
    try:
        node = head.add_node(num_cpus=2, own_temp_dir=True, cwd=str(dirs["node"]))
        env = dict(s3.process_env(), RAY_ADDRESS=head.address, **head.client_env())
        args = [sys.executable, "-m", "ncl_ray", "train", str(ROOT / "conf" / "default.yaml"), *TINY,
                "data.dataset=manifest", f"data.manifest=s3://{bucket}/data/{manifest.name}",
                f"data.cache_dir=s3://{bucket}/cache", f"run.storage_path=s3://{bucket}/runs", "run.name=apart",
                "train.placement_strategy=STRICT_SPREAD", "train.cpus_per_worker=0.25", "train.epochs=3",
                "train.eval_every_epochs=1", "train.max_failures=0"]
        run = subprocess.Popen(args, cwd=dirs["driver"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
        deadline = time.time() + 500
        while not any("/checkpoint_" in k and k.endswith("/state.pt") for k in s3.keys(bucket, "runs/apart/")):
            assert run.poll() is None, run.communicate()[1][-3000:]
            assert time.time() < deadline, "no checkpoint reached the bucket"
            time.sleep(0.5)
        head.kill_node(node)  # the worker node's machine dies
        assert not alive(processes_of(node))
        try:
            _, err = run.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, 9)
            _, err = run.communicate()
        assert run.returncode != 0, "a STRICT_SPREAD run cannot go on with one node and max_failures=0"
        head.add_node(num_cpus=2, own_temp_dir=True, cwd=str(dirs["node2"]))  # a fresh machine joins
        resumed = subprocess.run([*args, "train.resume=true"], cwd=dirs["driver2"], env=env, capture_output=True,
                                 text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    finally:
        head.stop()

    def read(key):
        return s3.client().get_object(Bucket=bucket, Key=f"runs/apart/{key}")["Body"].read().decode()

    results = json.loads(read("results.json"))
    workers = results["workers"]
    assert len(workers) == 2 and len({w["node_id"] for w in workers}) == 2  # one worker per node
    assert workers[0]["text_queue_sum"] == pytest.approx(workers[1]["text_queue_sum"], abs=1e-4)
    assert workers[0]["video_queue_sum"] == pytest.approx(workers[1]["video_queue_sum"], abs=1e-4)
    restores = [json.loads(line) for line in read("restores.jsonl").splitlines()]
    assert len(restores) == 1 and restores[0]["epoch"] >= 0 and restores[0]["queue_filled"] > 0
    keys = s3.keys(bucket, "runs/apart/")
    assert any(k.startswith("runs/apart/tensorboard/events.out.tfevents") for k in keys)
    assert any(k.endswith("/summary.json") for k in s3.keys(bucket, "cache/"))
    assert "test/ncl/t2v_R@1" in results["metrics"]
    for name, d in dirs.items():  # no node and no driver wrote anything of the run to its local disk
        assert list(d.iterdir()) == [], (name, list(d.iterdir()))
