"""Run folders, crash leftovers, fail-fast input checks and the built-in corpus's integrity (no Ray needed)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ncl_ray.runtime.checkpoint import CheckpointError, save_checkpoint
from ncl_ray.config.schema import ConfigError, load_config, to_dict
from ncl_ray.data.pipeline import remove_stale_temp
from ncl_ray.model.clip import build_model_from_config
from ncl_ray.ncl.loss import NCLLoss
from ncl_ray.runtime.runs import newest_complete_checkpoint, open_run_dir, remove_orphan_checkpoints

ROOT = Path(__file__).resolve().parents[3]


def _cfg(tmp_path, *extra):
    return load_config(str(ROOT / "conf" / "default.yaml"),
                       [f"run.storage_path={tmp_path}/runs", "run.name=r", "data.frame_size=16",
                        "data.num_frames=2", "data.max_words=16", *extra])


def _checkpoint(folder: Path, cfg, step: int) -> Path:
    model = build_model_from_config(cfg)
    save_checkpoint(str(folder), model, NCLLoss(model.embed_dim, 4, 1), 0, step, to_dict(cfg))
    return folder


def test_run_that_never_checkpointed_can_be_rerun(tmp_path):
    cfg = _cfg(tmp_path)
    run = open_run_dir(cfg)
    (run / "tensorboard").mkdir()
    run2 = open_run_dir(_cfg(tmp_path))  # killed before its first checkpoint: starts again
    assert run2 == run and not (run / "tensorboard").exists()
    (run / "checkpoint_2026-01-01_00-00-00.000000").mkdir()
    with pytest.raises(ConfigError, match="already exists.*train.resume=true"):
        open_run_dir(_cfg(tmp_path))


def test_resume_refuses_model_or_data_changes_and_says_what(tmp_path):
    open_run_dir(_cfg(tmp_path))
    with pytest.raises(ConfigError, match=r"data.num_frames: 2 -> 4; model.embed_dim: 64 -> 32") as e:
        open_run_dir(_cfg(tmp_path, "train.resume=true", "model.embed_dim=32", "data.num_frames=4"))
    assert "train.resume_force=true" in str(e.value)
    stored = (tmp_path / "runs" / "r" / "config.yaml").read_text()
    assert "embed_dim: 64" in stored  # the stored config was not rewritten
    open_run_dir(_cfg(tmp_path, "train.resume=true", "train.epochs=40"))  # training settings may change
    open_run_dir(_cfg(tmp_path, "train.resume=true", "model.embed_dim=32", "train.resume_force=true"))
    with pytest.raises(ConfigError, match="no run named 'x'"):
        open_run_dir(_cfg(tmp_path, "train.resume=true", "run.name=x"))


def test_unwritable_storage_names_the_path(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=f"cannot write to {blocker}/runs"):
        open_run_dir(load_config(None, [f"run.storage_path={blocker}/runs", "run.name=r"]))


def test_orphan_checkpoints_are_removed_and_newest_complete_is_found(tmp_path):
    cfg = _cfg(tmp_path)
    run = tmp_path / "run"
    a = _checkpoint(run / "checkpoint_2026-01-01_00-00-01.000001", cfg, 3)
    b = _checkpoint(run / "checkpoint_2026-01-01_00-00-02.000002", cfg, 6)  # written, never registered
    c = run / "checkpoint_2026-01-01_00-00-03.000003"  # half-copied: no marker
    c.mkdir()
    (c / "state.pt").write_bytes(b"PK")
    assert newest_complete_checkpoint(run) == b
    assert remove_orphan_checkpoints(run) == []  # no Ray snapshot yet: nothing is judged
    (run / "checkpoint_manager_snapshot.json").write_text(json.dumps(
        {"checkpoint_results": [{"checkpoint_dir_name": a.name}], "latest_checkpoint_result": a.name}))
    assert sorted(remove_orphan_checkpoints(run)) == [b.name, c.name]
    assert [p.name for p in run.glob("checkpoint_*") if p.is_dir()] == [a.name]


def test_stale_cache_temp_folders_of_dead_builds_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    stale = tmp_path / f"clips-T4-S16-abc.tmp-{host}-{dead.pid}"
    live = tmp_path / f"clips-T4-S16-abc.tmp-{host}-{os.getpid()}"
    other_host = tmp_path / f"clips-T4-S16-abc.tmp-elsewhere-{dead.pid}"
    for d in (stale, live, other_host):
        d.mkdir()
    assert remove_stale_temp(tmp_path) == [stale.name]
    assert live.exists() and other_host.exists() and not stale.exists()


def test_resume_from_another_architecture_fails_before_ray_by_config_key(tmp_path):
    from ncl_ray.train.inputs import check_inputs

    ckpt = _checkpoint(tmp_path / "ck", _cfg(tmp_path, "model.embed_dim=32"), 3)
    cfg = _cfg(tmp_path, f"data.root={tmp_path}/syn", "data.synthetic_videos=12", "train.batch_size=2",
               f"train.resume_from={ckpt}")
    with pytest.raises(CheckpointError, match=r"model.embed_dim: 32 -> 64"):
        check_inputs(cfg)


def test_bad_manifest_fails_fast_with_file_and_line_and_no_run_folder(tmp_path):
    cases = {
        "missing.csv": (b"video_id,path,split\nv1,a.mp4,train\n", "header lacks column(s) caption"),
        "empty.csv": (b"", "empty file"),
        "latin.csv": ("video_id,path,caption,split\nv1,a.mp4,a caf\xe9,train\n".encode("latin-1"), ":2: not UTF-8"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        r = subprocess.run([sys.executable, "-m", "ncl_ray", "train", str(ROOT / "conf" / "default.yaml"),
                            "data.dataset=manifest", f"data.manifest={tmp_path / name}",
                            f"run.storage_path={tmp_path}/runs", "run.name=bad"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert str(tmp_path / name) in r.stderr and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert "Ray: starting" not in r.stderr + r.stdout  # refused before Ray starts
        assert not (tmp_path / "runs" / "bad").exists()


def test_split_smaller_than_a_global_batch_is_found_before_decoding(tmp_path):
    from ncl_ray.train.inputs import check_inputs

    cfg = _cfg(tmp_path, f"data.root={tmp_path}/syn", "data.synthetic_videos=12", "train.batch_size=8")
    with pytest.raises(ConfigError, match=r"split 'train' has 8 videos, fewer than one global batch"):
        check_inputs(cfg)


def test_concurrent_runs_with_different_builtin_sizes_get_their_own_videos(tmp_path):
    code = ("import sys; from ncl_ray.data.pipeline import load_entries; "
            "e = load_entries('synthetic', sys.argv[1], '', int(sys.argv[2])); "
            "print(len(e), e[0].path)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "data"), str(n)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n in (12, 20, 12)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1000:] for o in outs]
    counts = [int(o[0].split()[0]) for o in outs]
    assert counts == [12, 20, 12]
    folders = {Path(o[0].split()[1]).parents[1].name for o in outs}
    assert folders == {"videos12-seed0", "videos20-seed0"}
    for n in (12, 20):
        manifest = tmp_path / "data" / f"videos{n}-seed0" / "manifest.jsonl"
        vids = {json.loads(x)["video_id"] for x in manifest.read_text().splitlines()}
        assert len(vids) == n and len(list(manifest.parent.glob("videos/*.mp4"))) == n
    assert not list((tmp_path / "data").glob(".*tmp*"))  # no temporary folder left behind


def test_a_run_on_object_storage_resumes_from_its_newest_whole_checkpoint_in_the_bucket(s3, monkeypatch, tmp_path):
    """A node killed right after uploading a checkpoint, before Ray registered it: the bucket's newest whole
    checkpoint is restored (a half-uploaded newer one is not), and the restores file keeps every earlier line."""
    from ncl_ray.runtime import storage
    from ncl_ray.runtime.runs import (RESTORES, newest_stored_checkpoint, publish, pull_best, record_restore,
                                      restore_source)

    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    cfg, uri = _cfg(tmp_path), f"s3://{s3.bucket('ncl-resume')}/runs/r"
    for name, step in (("checkpoint_2026-01-01_00-00-01.000001", 3), ("checkpoint_2026-01-01_00-00-02.000002", 6)):
        storage.upload(str(_checkpoint(tmp_path / name, cfg, step)), storage.join(uri, name))
    half = tmp_path / "checkpoint_2026-01-01_00-00-03.000003"
    _checkpoint(half, cfg, 9)
    (half / "state.pt").write_bytes(b"PK")  # the marker arrived, the state file did not (its size differs)
    storage.upload(str(half), storage.join(uri, half.name))
    assert newest_stored_checkpoint(uri) == (storage.join(uri, "checkpoint_2026-01-01_00-00-02.000002"), 6)
    assert newest_stored_checkpoint(storage.join(uri, "nothing-here")) == ("", -1)
    scratch = tmp_path / "restore"
    assert restore_source(None, tmp_path / "empty", str(scratch), uri) == str(scratch)
    assert json.loads((scratch / "complete.json").read_text())["step"] == 6

    storage.write_bytes(storage.join(uri, RESTORES), b'{"epoch": 1}\n')
    node = tmp_path / "node"  # a fresh node's scratch, holding a stale copy of the restores
    pull_best(node, uri)
    (node / RESTORES).write_text("stale\n")
    (node / "results.json").write_text("{}")
    publish(node, uri)  # the driver's mirror leaves rank 0's restores alone ...
    assert storage.read_text(storage.join(uri, RESTORES)) == '{"epoch": 1}\n'
    record_restore(node, uri, {"epoch": 2})  # ... which rank 0 appends to the bucket's copy and publishes
    assert storage.read_text(storage.join(uri, RESTORES)).splitlines() == ['{"epoch": 1}', '{"epoch": 2}']


def test_a_registered_remote_checkpoint_is_copied_into_this_process_own_folder(tmp_path):
    """Ray's default copy is one folder per checkpoint and node, re-downloaded in place when a second rank asks for
    it while the first still reads it: a rank's copy goes to its own scratch folder instead."""
    import shutil

    from ncl_ray.runtime.runs import restore_source

    saved = _checkpoint(tmp_path / "saved", _cfg(tmp_path), 4)

    class RemoteCheckpoint:  # what ray.train.get_checkpoint() returns for a run on object storage
        path, asked = "ncl-bucket/runs/r/checkpoint_2026-01-01_00-00-01.000001", []

        def to_directory(self, path=None):
            self.asked.append(path)
            shutil.copytree(saved, path, dirs_exist_ok=True)
            return path

    mine = tmp_path / "rank-scratch"
    mine.mkdir()
    remote = RemoteCheckpoint()
    assert restore_source(remote, tmp_path / "no-run-folder", str(mine)) == str(mine)
    assert remote.asked == [str(mine)] and json.loads((mine / "complete.json").read_text())["step"] == 4
