"""Ray Jobs against a real local head started with `ray start --head` on loopback."""

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from ncl_ray.cli import build_parser
from ncl_ray.config.schema import load_config
from ncl_ray.runtime.jobs import JobsError, build_entrypoint, stage_upload
from ncl_ray.runtime.jobs import main as jobs_main
from raynodes import Head, free_port

ROOT = Path(__file__).resolve().parents[1]


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
def test_train_and_eval_jobs_on_a_2cpu_cluster_with_a_growing_log(ray_head, tmp_path):
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
        args = ["submit", "train", "conf/default.yaml", "data.synthetic_videos=40",
                f"data.root={tmp_path}/syn", f"data.cache_dir={tmp_path}/cache", "data.num_frames=4",
                "data.frame_size=16", "train.batch_size=4", "train.epochs=2", "train.cpus_per_worker=0.25",
                f"run.storage_path={runs}", "run.name=job", "--python", sys.executable, "--timeout", "300"]
        r = run_jobs(ray_head, args)
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


def test_unreachable_address_is_a_clean_error(capsys):
    assert jobs_main(["--address", f"http://127.0.0.1:{free_port()}", "list"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Ray dashboard" in err and "Traceback" not in err


def test_upload_is_an_allow_list_with_a_size_limit(tmp_path):
    project = tmp_path / "project"
    for name in ("ncl_ray", "conf", "jobs", "data", "runs"):
        (project / name).mkdir(parents=True)
    (project / "ncl_ray" / "a.py").write_text("x = 1\n")
    (project / "pyproject.toml").write_text("[project]\n")
    (project / "data" / "big.bin").write_bytes(b"0" * 2**20)
    (project / "runs" / "log.txt").write_text("log")
    (project / "train.log").write_text("log")
    staged = tmp_path / "staged"
    staged.mkdir()
    stage_upload(project, staged, max_mb=1)
    assert sorted(p.name for p in staged.iterdir()) == ["conf", "jobs", "ncl_ray", "pyproject.toml"]
    (project / "conf" / "huge.yaml").write_bytes(b"#" * (2 * 2**20))
    again = tmp_path / "again"
    again.mkdir()
    with pytest.raises(JobsError, match="over --max-upload-mb=1.*huge.yaml"):
        stage_upload(project, again, max_mb=1)
    assert list(again.iterdir()) == []  # refused before anything was copied
    (project / "conf" / "huge.yaml").unlink()
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "id_rsa").write_text("key")
    (project / "conf" / "keys").symlink_to(secret)  # a link out of the project
    with pytest.raises(JobsError, match="conf/keys is a link to .*secret, outside the project"):
        stage_upload(project, tmp_path / "third", max_mb=1)


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
    assert "working_dir" not in env  # set by submit to the staged allow-list
    entry = build_entrypoint("train", "conf/msrvtt.yaml", ["a=b c"])
    assert entry == "python -m ncl_ray train conf/msrvtt.yaml 'a=b c'"
