"""Ray Jobs against a real local head started with `ray start --head` on loopback."""

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ncl_ray.cli import build_parser
from ncl_ray.config import load_config
from ncl_ray.jobs import build_entrypoint
from ncl_ray.jobs import main as jobs_main

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    ray = str(Path(sys.executable).parent / "ray")
    dash = free_port()
    subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=4",
                    "--disable-usage-stats"], env=env, check=True, capture_output=True)
    try:
        yield f"http://127.0.0.1:{dash}"
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True)


@pytest.mark.ray
@pytest.mark.slow
def test_submit_training_job_and_failing_job(ray_head, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["--address", ray_head, "submit", "train", "conf/default.yaml", "data.synthetic_videos=40",
            f"data.root={tmp_path}/syn", f"data.cache_dir={tmp_path}/cache", "data.num_frames=4",
            "data.frame_size=16", "train.batch_size=4", "train.epochs=2", f"run.storage_path={runs}",
            "run.name=job", "--python", sys.executable, "--timeout", "300"]
    assert jobs_main(args) == 0
    out = capsys.readouterr().out
    assert "SUCCEEDED" in out and "t2v R@1" in out  # the job's own log was followed
    results = json.loads((runs / "job" / "results.json").read_text())
    assert Path(results["checkpoint"], "state.pt").is_file()
    assert list((runs / "job" / "tensorboard").glob("events.out.tfevents.*"))

    bad = ["--address", ray_head, "submit", "train", "conf/default.yaml", "train.epochz=1",
           f"run.storage_path={runs}", "--python", sys.executable, "--quiet", "--timeout", "120"]
    assert jobs_main(bad) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "epochz" in captured.err  # the job's log names the bad key


def test_cluster_specs_name_existing_configs_and_commands():
    rayjob = yaml.safe_load((ROOT / "jobs" / "rayjob.yaml").read_text())
    assert rayjob["kind"] == "RayJob"
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "ncl_ray"]
    parsed = build_parser().parse_args(argv[3:])
    assert (ROOT / parsed.config).is_file()
    cfg = load_config(str(ROOT / parsed.config), parsed.overrides)
    assert cfg.train.use_gpu and cfg.model.arch == "ViT-B-32"
    gpu_groups = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus = sum(int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) * g["replicas"]
               for g in gpu_groups)
    assert gpus >= cfg.train.num_workers  # the cluster can host every training worker

    cluster = yaml.safe_load((ROOT / "jobs" / "cluster.yaml").read_text())
    assert cluster["head_node_type"] in cluster["available_node_types"]
    header = (ROOT / "jobs" / "cluster.yaml").read_text()
    for line in header.splitlines():
        if "jobs/submit.sh" in line:
            words = shlex.split(line.split("jobs/submit.sh", 1)[1])
            assert (ROOT / words[1]).is_file() and words[0] in ("train", "eval", "tune")
    env = yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())
    assert "/.venv" in env["excludes"] and "/data" in env["excludes"]  # anchored: ncl_ray/data is uploaded
    entry = build_entrypoint("train", "conf/msrvtt.yaml", ["a=b c"])
    assert entry == "python -m ncl_ray train conf/msrvtt.yaml 'a=b c'"
