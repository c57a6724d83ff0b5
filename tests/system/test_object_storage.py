"""Runs on object storage, against a real S3 server on loopback (moto's standalone server): `ncl-ray train` with
`run.storage_path=s3://...` writes everything of the run into the bucket and nothing under a local runs/,
`ncl-ray eval s3://...` from another working directory prints the training run's table, and a wrong bucket or
an unreachable endpoint is one line naming the URI, before Ray starts."""

import contextlib
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
    # the acceptance command: runs and the clip cache in the bucket, only the AWS variables set
    r = cli(["train", str(ROOT / "conf" / "default.yaml"), *TINY, f"data.root={builtin_data}/syn",
             f"data.cache_dir=s3://{bucket}/cache", f"run.storage_path=s3://{bucket}/runs", "run.name=s3run",
             "train.epochs=2", "train.eval_every_epochs=1"], env, work)
    assert r.returncode == 0, r.stderr[-3000:]
    keys = s3.keys(bucket, "runs/s3run/")
    names = {k[len("runs/s3run/"):] for k in keys}
    assert {"results.json", "config.yaml", "best/state.pt", "best/best.json"} <= names, sorted(names)
    assert any(n.startswith("checkpoint_") and n.endswith("/state.pt") for n in names)  # Ray Train's own upload
    assert any(n.startswith("tensorboard/events.out.tfevents") for n in names)
    assert any(n.startswith("logs/") for n in names)
    cache = s3.keys(bucket, "cache/")
    assert any(k.endswith("/summary.json") for k in cache) and any(k.endswith(".parquet") for k in cache)
    # TensorBoard's own reader on the run's URI (what `tensorboard --logdir s3://...` loads)
    tb = subprocess.run([sys.executable, "-c", "import sys; from tensorboard.backend.event_processing."
                         "event_multiplexer import EventMultiplexer as M; m = M(); m.AddRunsFromDirectory(sys.argv[1]);"
                         " m.Reload(); print(sorted({t for r in m.Runs().values() for t in r['scalars']}))",
                         f"s3://{bucket}/runs/s3run/tensorboard"], env=env, capture_output=True, text=True, timeout=120)
    assert tb.returncode == 0 and "train/contrastive_loss" in tb.stdout, tb.stderr[-2000:]
    assert not (work / "runs").exists() and list(work.iterdir()) == []  # nothing of the run on local disk
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "ncl-ray-s3run-*"))) == scratch_before
    assert f"s3://{bucket}/runs/s3run" in r.stdout
    trained = table_rows(r.stdout)
    assert trained, r.stdout
    # from another working directory, by the run's URI: the same table
    other = tmp_path / "elsewhere"
    other.mkdir()
    ev = cli(["eval", f"s3://{bucket}/runs/s3run", f"data.root={builtin_data}/syn"], env, other)
    assert ev.returncode == 0, ev.stderr[-3000:]
    evaluated = table_rows(ev.stdout)
    assert [row for row in evaluated if row.split("|")[0].strip() in ("none", "ncl")] == \
        [row for row in trained if row.split("|")[0].strip() in ("none", "ncl")], (trained, evaluated)
    assert any(k.endswith("/eval/test-bank-train/metrics.json") for k in s3.keys(bucket, "runs/s3run/"))
    fetched = list((tmp_path / "fetch-cache" / "fetched").iterdir())
    assert len(fetched) == 1  # one local copy, keyed by the URI and its files
    again = subprocess.run([sys.executable, "-c", "import sys; from ncl_ray.runtime.checkpoint import "
                            "resolve_checkpoint; print(resolve_checkpoint(sys.argv[1]))", f"s3://{bucket}/runs/s3run"],
                           cwd=other, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.strip().startswith(str(fetched[0]))  # not fetched again
    assert list((tmp_path / "fetch-cache" / "fetched").iterdir()) == fetched
    # the same weights as a CLIP4Clip file, imported straight into the bucket (a scratch folder, uploaded, removed)
    import torch

    local = next(Path(fetched[0]).iterdir())  # the fetched checkpoint folder
    state = torch.load(local / "state.pt", map_location="cpu", weights_only=True)["model"]
    c4c = {k: v for k, v in state.items() if k.startswith("clip.") and not k.endswith("attn_mask")}
    c4c["clip.logit_scale"] = state["logit_scale"].clone()
    torch.save(c4c, tmp_path / "pytorch_model.bin.0")
    args = ["import", "clip4clip", str(tmp_path / "pytorch_model.bin.0"), "--out", f"s3://{bucket}/imported/c4c",
            "--config", str(local / "config.yaml")]
    imp = cli(args, env, other)
    assert imp.returncode == 0, imp.stderr[-2000:]
    assert {"state.pt", "config.yaml"} <= {k.rsplit("/", 1)[1] for k in s3.keys(bucket, "imported/c4c/")}
    twice = cli(args, env, other)
    assert twice.returncode == 2 and "exists and is not empty" in twice.stderr
    # served from the run's URI, in yet another folder: the gallery is the export `ncl-ray eval` put in the bucket
    # (resuming from the bucket is tests/system/test_two_nodes.py's, across two nodes)
    served = tmp_path / "served"
    served.mkdir()
    printed = []
    with serving(["serve", f"s3://{bucket}/runs/s3run"], env, served, printed) as port:
        hits = search(port, k=100)
        assert len(hits) >= 3 and all(h["video_id"] and h["captions"] for h in hits), hits
        assert sorted(p.name for p in other.iterdir()) == [] and sorted(p.name for p in served.iterdir()) == []
        # the served index lives in the bucket beside the checkpoint: version 1, CURRENT, no lock left
        index = {k.split("/index/")[1] for k in s3.keys(bucket, "runs/s3run/") if "/index/" in k}
        assert {"CURRENT", "CHANGELOG", "v0001/index.json"} <= index and "LOCK" not in index, sorted(index)
        # two other machines (their own caches and folders) change it at once: both changes land, one after
        # the other (the bucket's lock), and the server loads the result on POST /reload
        gone = [hits[0]["video_id"], hits[1]["video_id"]]
        procs = []
        for i, video in enumerate(gone):
            (tmp_path / f"m{i}").mkdir()
            procs.append(subprocess.Popen([sys.executable, "-m", "ncl_ray", "index", "remove",
                                           f"s3://{bucket}/runs/s3run", video], cwd=tmp_path / f"m{i}",
                                          env=dict(env, NCL_RAY_CACHE=str(tmp_path / f"m{i}" / "cache")),
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for p in procs:
            assert p.wait(timeout=300) == 0, p.stdout.read()[-2000:]
        listed = cli(["index", "list", f"s3://{bucket}/runs/s3run"], env, other)
        assert listed.returncode == 0, listed.stderr[-2000:]
        lines = listed.stdout.splitlines()
        assert [line.split()[:2] for line in lines][-1] == ["*", "v0003"] and len(lines) == 3, lines
        assert sum("remove 1" in line for line in lines) == 2, lines
        assert "LOCK" not in {k.rsplit("/", 1)[1] for k in s3.keys(bucket, "runs/s3run/")}
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{port}/reload", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
        after = {h["video_id"] for h in search(port, k=100)}
        assert after and not after & set(gone), (gone, after)
        # and a rollback from here brings them back, as v0004
        back = cli(["index", "rollback", f"s3://{bucket}/runs/s3run", "v0001"], env, other)
        assert back.returncode == 0 and "v0004" in back.stdout, back.stderr[-2000:]
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
        assert set(gone) <= {h["video_id"] for h in search(port, k=100)}
        # a new video added from another folder: embedded, published as v0005, found after a reload
        import numpy as np

        from ncl_ray.data.synthetic import render, write_video

        (tmp_path / "new").mkdir()
        write_video(str(tmp_path / "new" / "freshclip.mp4"),
                    render("red", "square", "large", "left", "navy", rng=np.random.default_rng(0)))
        add = cli(["index", "add", f"s3://{bucket}/runs/s3run", str(tmp_path / "new"), "--window", "0"], env, other)
        assert add.returncode == 0, add.stderr[-2000:]
        assert remote_current(s3, bucket) == "v0005"
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
        assert "freshclip" in {h["video_id"] for h in search(port, k=100)}
    assert sorted(p.name for p in other.iterdir()) == [] and sorted(p.name for p in served.iterdir()) == []
    # a new user's console: eval, index add and serve's shutdown print our lines only; each command that succeeded
    # removed its private Ray session folder
    for text in (ev.stdout + ev.stderr, add.stdout + add.stderr, printed[0]):
        assert_clean(text)
    assert "serving " in printed[0]
    assert glob.glob(os.path.join(env["RAY_TMPDIR"], "ray", "session_2*")) == []


def remote_current(s3, bucket: str) -> str:
    """What the run's served index names as CURRENT in the bucket."""
    key = next(k for k in s3.keys(bucket, "runs/s3run/") if k.endswith("/index/CURRENT"))
    return s3.client().get_object(Bucket=bucket, Key=key)["Body"].read().decode().strip()


def serve_and_search(args, env, cwd):
    """Start `ncl-ray serve` on a free loopback port, send one search, stop it (SIGTERM); the JSON answer."""
    with serving(args, env, cwd) as port:
        return search(port)


def search(port: int, q: str = "a red square", k: int = 3):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/search?q={q.replace(' ', '+')}&k={k}", timeout=30) as r:
        return json.loads(r.read())


def assert_clean(text: str) -> None:
    """What a command printed holds no raw Ray line (a C++ log line, a raylet line) and no escape code."""
    import re

    assert "\x1b[" not in text and "(raylet)" not in text and not re.search(r"\w+\.cc:\d+", text), text[-3000:]
    assert "INFO" not in text and "RayDeprecationWarning" not in text, text[-3000:]


@contextlib.contextmanager
def serving(args, env, cwd, printed=None):
    """`ncl-ray serve` on a free loopback port, answering searches: its port; stopped (SIGTERM) afterwards, its
    output appended to `printed`."""
    import signal

    from raynodes import alive, free_port, processes_of

    port = free_port()
    env = dict(env, RAY_TMPDIR=tempfile.mkdtemp(prefix="nrv", dir="/tmp"))
    proc = subprocess.Popen([sys.executable, "-m", "ncl_ray", *args, "--host", "127.0.0.1", "--port", str(port)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while True:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.time() < deadline, "the server did not come up"
            try:
                search(port)
                break
            except OSError:
                time.sleep(1)
        yield port
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        if printed is not None:
            printed.append(proc.stdout.read())
        for pid in alive(processes_of(env["RAY_TMPDIR"])):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("case", ["no bucket", "no endpoint", "wrong credentials"])
def test_a_bad_storage_uri_is_one_line_before_ray_starts(s3, builtin_data, tmp_path, case):
    env = s3.process_env()
    uri = "s3://no-such-bucket-here/runs" if case == "no bucket" else "s3://ncl-runs/runs"
    if case == "no endpoint":
        from raynodes import free_port

        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    if case == "wrong credentials":
        s3.bucket("ncl-runs-denied")
        uri = "s3://ncl-runs-denied/runs"
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    start = time.time()
    r = cli(["train", str(ROOT / "conf" / "default.yaml"), *TINY, f"data.root={builtin_data}/syn",
             f"data.cache_dir={builtin_data}/cache", f"run.storage_path={uri}"], env, tmp_path, timeout=120)
    took = time.time() - start
    lines = [line for line in r.stderr.splitlines() if "error" in line.lower()]
    assert r.returncode == 2 and took < 10, (took, r.stderr[-2000:])
    assert len(lines) == 1 and uri in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert {"no bucket": "does not exist", "no endpoint": "cannot be reached",
            "wrong credentials": "access denied"}[case] in lines[0]


def test_videos_and_a_manifest_are_read_from_the_bucket(s3, tmp_path, monkeypatch):
    """A manifest on object storage with relative paths and URIs: each video decodes to the same frames as its
    local file; a missing object is a DecodeError naming its URI (the video is then skipped, never blacked)."""
    import numpy as np

    from ncl_ray.data.decode import decode_video
    from ncl_ray.data.limits import DecodeError
    from ncl_ray.data.manifest import read_manifest
    from ncl_ray.data.synthetic import write_video

    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    bucket = s3.bucket("ncl-videos")
    frames = (np.arange(12 * 32 * 32 * 3) % 251).astype(np.uint8).reshape(12, 32, 32, 3)
    local = tmp_path / "a.mp4"
    write_video(str(local), frames)
    s3.client().upload_file(str(local), bucket, "data/videos/a.mp4")
    manifest = ('{"video_id": "a", "path": "videos/a.mp4", "caption": "a clip", "split": "train"}\n'
                f'{{"video_id": "gone", "path": "s3://{bucket}/elsewhere/gone.mp4", "caption": "x", '
                f'"split": "test"}}\n')
    s3.client().put_object(Bucket=bucket, Key="data/m.jsonl", Body=manifest.encode())
    entries = {e.video_id: e for e in read_manifest(f"s3://{bucket}/data/m.jsonl")}
    assert entries["a"].path == f"s3://{bucket}/data/videos/a.mp4"
    remote, n = decode_video(entries["a"].path, 4, 16)
    expected, _ = decode_video(str(local), 4, 16)
    assert n == 4 and np.array_equal(remote, expected)
    with pytest.raises(DecodeError, match=f"s3://{bucket}/elsewhere/gone.mp4: cannot be read from storage"):
        decode_video(entries["gone"].path, 4, 16)
    with pytest.raises(ValueError, match=f"manifest s3://{bucket}/data/none.jsonl: cannot be read"):
        read_manifest(f"s3://{bucket}/data/none.jsonl")
