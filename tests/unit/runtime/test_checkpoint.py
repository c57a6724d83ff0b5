"""Checkpoints: safe loading (a hostile pickle never runs), clear errors for corrupt files and other models."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ncl_ray.runtime.checkpoint import (CheckpointError, config_differences, is_complete, load_checkpoint,
                                load_model_weights, save_checkpoint)
from ncl_ray.config.schema import load_config, to_dict
from ncl_ray.model.clip import build_model_from_config
from ncl_ray.ncl.loss import NCLLoss
from ncl_ray.train.loop import build_optimizer, build_scheduler

ROOT = Path(__file__).resolve().parents[3]


class _Exploit:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _hostile_checkpoint(folder: Path, target: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    state = {"model": {}, "loss": {}, "epoch": 0, "step": 0, "config": {}, "payload": _Exploit(str(target))}
    torch.save(state, folder / "state.pt")  # a zip-format torch file whose pickle calls os.system
    (folder / "config.yaml").write_text("{}\n")
    return folder


def _tiny(tmp_path, *overrides):
    cfg = load_config(str(ROOT / "conf" / "default.yaml"),
                      ["data.frame_size=16", "data.num_frames=2", "data.max_words=16",
                       f"run.storage_path={tmp_path}/runs", *overrides])
    return cfg, build_model_from_config(cfg)


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    target = tmp_path / "pwned"
    ckpt = _hostile_checkpoint(tmp_path / "ckpt", target)
    # sanity: the file really would run the command under a full unpickler
    torch.load(ckpt / "state.pt", weights_only=False)
    assert target.exists()
    target.unlink()
    with pytest.raises(CheckpointError, match="refused.*not executed") as e:
        load_checkpoint(str(ckpt))
    assert str(ckpt / "state.pt") in str(e.value)
    assert not target.exists()


def test_eval_command_refuses_hostile_checkpoint_before_ray(tmp_path):
    target = tmp_path / "pwned"
    ckpt = _hostile_checkpoint(tmp_path / "ckpt", target)
    r = subprocess.run([sys.executable, "-m", "ncl_ray", "eval", str(ckpt)], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "refused" in r.stderr and str(ckpt / "state.pt") in r.stderr
    assert "Traceback" not in r.stderr and not target.exists()


@pytest.mark.parametrize("content", [b"", b"\x50\x4b\x03\x04 truncated zip", os.urandom(4096)])
def test_corrupt_state_names_the_file(tmp_path, content):
    (tmp_path / "state.pt").write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(str(tmp_path))
    assert str(tmp_path / "state.pt") in str(e.value)


def test_truncated_real_checkpoint_is_incomplete_and_unreadable(tmp_path):
    cfg, model = _tiny(tmp_path)
    loss = NCLLoss(model.embed_dim, 8, 3)
    opt = build_optimizer(model, 1e-3, 1e-3, 0.1)
    sched = build_scheduler(opt, 10, 0.1)
    d = save_checkpoint(str(tmp_path / "ck"), model, loss, 1, 7, to_dict(cfg), opt, sched)
    assert is_complete(d)
    state = load_checkpoint(d)  # weights_only load of a real checkpoint with optimizer and scheduler
    assert state["step"] == 7 and state["optimizer"] is not None
    sched.load_state_dict(state["scheduler"])
    data = (Path(d) / "state.pt").read_bytes()
    (Path(d) / "state.pt").write_bytes(data[: len(data) // 2])
    assert not is_complete(d)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(d)


def test_other_architecture_is_reported_by_config_key(tmp_path):
    cfg_a, model_a = _tiny(tmp_path, "model.embed_dim=32")
    cfg_b, model_b = _tiny(tmp_path, "model.embed_dim=48", "model.pooling=seqTransf")
    with pytest.raises(CheckpointError) as e:
        load_model_weights(model_b, model_a.state_dict(), "ck/state.pt", to_dict(cfg_a), to_dict(cfg_b))
    msg = str(e.value)
    assert "model.embed_dim: 32 -> 48" in msg and "model.pooling: 'meanP' -> 'seqTransf'" in msg
    assert "size mismatch" not in msg


def test_config_differences_only_in_named_sections():
    a = {"model": {"arch": "tiny", "x": 1}, "train": {"epochs": 2}}
    b = {"model": {"arch": "ViT-B-32", "x": 1}, "train": {"epochs": 5}}
    assert config_differences(a, b, ["model"]) == ["model.arch: 'tiny' -> 'ViT-B-32'"]


def test_plain_pickle_reader_refuses_code(tmp_path):
    from ncl_ray.data.manifest import ManifestError, load_plain_pickle

    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps({"vid1": [["a", "man", "runs"]]}))
    assert load_plain_pickle(good) == {"vid1": [["a", "man", "runs"]]}
    target = tmp_path / "pwned"
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"vid1": _Exploit(str(target))}))
    with pytest.raises(ManifestError, match="bad.pkl.*only plain data"):
        load_plain_pickle(bad)
    assert not target.exists()


def test_a_copied_run_folder_resolves_to_its_own_checkpoint(tmp_path):
    import json
    import shutil

    from ncl_ray.runtime.checkpoint import resolve_checkpoint

    run = tmp_path / "runs" / "r"
    for name in ("best", "checkpoint_000001"):
        (run / name).mkdir(parents=True)
        (run / name / "state.pt").write_bytes(b"x")
    (run / "results.json").write_text(json.dumps({"checkpoint": str(run / "best")}))
    assert resolve_checkpoint(str(run)) == str(run / "best")
    copy = tmp_path / "elsewhere" / "r"
    shutil.copytree(run, copy)
    assert resolve_checkpoint(str(copy)) == str(copy / "best")  # not the original it was copied from
    shutil.rmtree(copy / "best")
    assert resolve_checkpoint(str(copy)) == str(copy / "checkpoint_000001")  # else the newest of its own
