"""Ray Jobs without a cluster: entrypoints, the upload allow-list, unreachable addresses, the cluster specs (the real
`ray job submit`: tests/system/test_jobs_cluster.py)."""

import shlex
from pathlib import Path

import pytest
import yaml

from ncl_ray.cli import build_parser
from ncl_ray.config.schema import load_config
from ncl_ray.runtime.jobs import JobsError, build_entrypoint, stage_upload
from ncl_ray.runtime.jobs import main as jobs_main
from raynodes import free_port

ROOT = Path(__file__).resolve().parents[3]








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


@pytest.mark.parametrize("spec", ["rayjob.yaml", "rayjob-bucket.yaml"])
def test_cluster_specs_name_existing_configs_and_commands(spec):
    rayjob = yaml.safe_load((ROOT / "jobs" / spec).read_text())
    assert rayjob["kind"] == "RayJob"
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "ncl_ray"]
    parsed = build_parser().parse_args(argv[3:])
    assert (ROOT / parsed.config).is_file()
    cfg = load_config(str(ROOT / parsed.config), parsed.overrides)
    assert cfg.train.use_gpu and cfg.model.arch == "ViT-B-32"
    if "bucket" in spec:  # nothing on a shared volume: every path of the run is a URI
        assert all(str(v).startswith("s3://") for v in (cfg.data.manifest, cfg.data.cache_dir, cfg.run.storage_path))
        assert "volumes" not in yaml.safe_dump(rayjob) and "mnt/shared" not in yaml.safe_dump(rayjob)
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


def test_the_project_root_is_where_the_configs_are():
    from ncl_ray.runtime.jobs import ROOT as project

    assert (project / "conf" / "default.yaml").is_file() and (project / "jobs" / "submit.sh").is_file()


def _documented_submissions():
    """Every `jobs/submit.sh train|tune ...` command written out in the READMEs (continuation lines joined)."""
    out = []
    for doc in ("README.md", "jobs/README.md"):
        text = (ROOT / doc).read_text().replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip().strip("`|").strip()
            if line.startswith("jobs/submit.sh ") and " ... " not in line and not line.endswith("..."):
                words = shlex.split(line.split("#")[0])[1:]
                if words[0] in ("train", "tune"):
                    out.append((doc, words))
    return out


def test_documented_cluster_commands_pass_the_checks_before_upload():
    from ncl_ray.runtime.jobs import check_job_config

    found = _documented_submissions()
    assert len(found) >= 3, found
    for doc, words in found:
        command, config = words[0], words[1]
        overrides = [w for w in words[2:] if "=" in w and not w.startswith("-")]
        try:
            check_job_config(command, config, overrides, ROOT)
        except JobsError as e:
            raise AssertionError(f"{doc}: `jobs/submit.sh {' '.join(words)}` is refused as written: {e}") from None
