"""The served index's one-writer lock on object storage (serve/remote.py), against the real S3 server on loopback:
a second writer waits for the first; an expired lock is broken; a writer whose lock was taken over publishes
nothing; a crashed writer's half-uploaded version is never seen, and CURRENT is written last."""

import json
import threading
import time

import numpy as np
import pytest

from ncl_ray.evaluation.export import IndexFiles, read_index
from ncl_ray.runtime import storage
from ncl_ray.serve import remote
from ncl_ray.serve.index import resolve_version
from ncl_ray.serve.versions import write_version


@pytest.fixture
def bucket_env(s3, monkeypatch, tmp_path):
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("NCL_RAY_CACHE", str(tmp_path / "fetch-cache"))
    return s3


def _version(home, n_videos: int, change: str):
    ids = [f"v{i}" for i in range(n_videos)]
    emb = np.eye(n_videos, 4, dtype=np.float32)
    return write_version(home, IndexFiles.gallery(ids, [f"/videos/{i}.mp4" for i in ids], emb,
                                                  np.zeros(n_videos, np.float32), 0.05,
                                                  {i: [f"caption of {i}"] for i in ids}), change)


def test_a_second_writer_waits_for_the_first_and_both_versions_land(bucket_env, tmp_path, capsys):
    home = f"s3://{bucket_env.bucket('lock-wait')}/ckpt/index"
    order = []

    def second():
        with remote.bucket_writer(home, tmp_path / "b", "second"):
            order.append("second in")
            _version(tmp_path / "b", 3, "second")

    with remote.bucket_writer(home, tmp_path / "a", "first"):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(2.5)  # the second writer is waiting now, and says for whom
        order.append("first out")
        _version(tmp_path / "a", 2, "first")
    t.join(timeout=60)
    assert order == ["first out", "second in"]
    assert "waiting for the index lock" in capsys.readouterr().out
    assert remote.published(home) == "v0002"  # the second writer pulled v0001 before writing its own
    assert len(read_index(resolve_version(home)).video_ids) == 3
    assert storage.stat(storage.join(home, "LOCK"))[0] == -1  # released
    log = storage.read_text(storage.join(home, "CHANGELOG")).splitlines()
    assert [line.split()[0] for line in log] == ["v0001", "v0002"] and log[1].endswith("second")


def test_an_expired_lock_is_broken_and_a_live_one_is_not(bucket_env, tmp_path, capsys):
    b = bucket_env.bucket("lock-expiry")
    client = bucket_env.client()
    dead = {"owner": "host-x pid 1", "what": "index add", "since": "00:00:00", "expires": time.time() - 1}
    client.put_object(Bucket=b, Key="ckpt/index/LOCK", Body=json.dumps(dead).encode())
    with remote.bucket_writer(f"s3://{b}/ckpt/index", tmp_path / "m", "after a crash"):
        held = json.loads(client.get_object(Bucket=b, Key="ckpt/index/LOCK")["Body"].read())
        assert "pid" in held["owner"] and held["owner"] != dead["owner"] and held["expires"] > time.time()
    assert "breaking the expired index lock of host-x pid 1" in capsys.readouterr().out
    # a live lock: whoever holds it keeps it while they renew
    lock = remote.BucketLock(f"s3://{b}/ckpt/index", "long add", lease_s=3.0)
    with lock:
        time.sleep(4.0)  # longer than the lease: renewed meanwhile (every lease / 3)
        other = remote.BucketLock(f"s3://{b}/ckpt/index", "impatient", lease_s=3.0)
        got = threading.Event()
        threading.Thread(target=lambda: (other.__enter__(), got.set()), daemon=True).start()
        assert not got.wait(2.0)
    assert got.wait(10.0)  # released: the waiting writer gets it
    other.__exit__(None, None, None)


def test_a_writer_that_lost_its_lock_publishes_nothing(bucket_env, tmp_path):
    b = bucket_env.bucket("lock-lost")
    home = f"s3://{b}/ckpt/index"
    with remote.bucket_writer(home, tmp_path / "a", "first"):
        _version(tmp_path / "a", 2, "first")
    with pytest.raises(RuntimeError, match="another writer took the index lock; nothing was published"):
        with remote.bucket_writer(home, tmp_path / "a", "stalled"):
            _version(tmp_path / "a", 1, "stalled")
            # meanwhile its lease expired and another writer took the lock (a new LOCK object)
            bucket_env.client().put_object(Bucket=b, Key="ckpt/index/LOCK", Body=b'{"owner": "someone else"}')
    assert remote.published(home) == "v0001"
    assert len(read_index(resolve_version(home)).video_ids) == 2


def test_a_half_uploaded_version_is_never_seen_and_is_overwritten(bucket_env, tmp_path):
    b = bucket_env.bucket("lock-crash")
    home = f"s3://{b}/ckpt/index"
    with remote.bucket_writer(home, tmp_path / "a", "first"):
        _version(tmp_path / "a", 2, "first")
    # a writer crashed after uploading part of v0002, before CURRENT
    storage.write_bytes(storage.join(home, "v0002", "index.json"), b"{half")
    assert read_index(resolve_version(home)).video_ids == ["v0", "v1"]  # readers follow CURRENT
    remote.pull(home, tmp_path / "reader")
    assert sorted(p.name for p in (tmp_path / "reader").iterdir() if p.name.startswith("v")) == ["v0001"]
    with remote.bucket_writer(home, tmp_path / "c", "next"):
        _version(tmp_path / "c", 4, "next")
    assert remote.published(home) == "v0002" and len(read_index(resolve_version(home)).video_ids) == 4


def test_index_writes_on_other_schemes_are_refused_by_name():
    with pytest.raises(ValueError, match=r"gs://b/ckpt/index/LOCK: index changes on object storage need S3"):
        remote.BucketLock("gs://b/ckpt/index", "x")
