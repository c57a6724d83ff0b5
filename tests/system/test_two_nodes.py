"""Two Ray nodes on loopback (own ports and temp dir, stopped by PID): training spread one worker per node with
the gathered queues identical on both, checkpoint and evaluation (jobs/submit.sh: tests/system/test_jobs_cluster.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny import tiny
from raynodes import Head

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SMALL = ["train.epochs=1", "train.eval_every_epochs=1", "train.cpus_per_worker=0.25",
         "train.placement_strategy=STRICT_SPREAD"]


@pytest.fixture(scope="module")
def two_nodes():
    head = Head(num_cpus=2, prefix="nr2")
    try:
        head.add_node(num_cpus=2)
        yield head
    finally:
        head.stop()


def _check_run(run: Path) -> None:
    results = json.loads((run / "results.json").read_text())
    workers = results["workers"]
    assert len(workers) == 2 and len({w["node_id"] for w in workers}) == 2  # one worker per node
    assert workers[0]["text_queue_sum"] == pytest.approx(workers[1]["text_queue_sum"], abs=1e-4)
    assert workers[0]["video_queue_sum"] == pytest.approx(workers[1]["video_queue_sum"], abs=1e-4)
    assert Path(results["checkpoint"], "state.pt").is_file() and "test/ncl/t2v_R@1" in results["metrics"]


def test_training_spreads_across_two_nodes(two_nodes, tmp_path, builtin_data):
    env = dict(os.environ, RAY_ADDRESS=two_nodes.address, **two_nodes.client_env())
    r = subprocess.run([sys.executable, "-m", "ncl_ray", "train", "conf/default.yaml",
                        *tiny(builtin_data, tmp_path / "runs", *SMALL, "run.name=spread")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    _check_run(tmp_path / "runs" / "spread")
