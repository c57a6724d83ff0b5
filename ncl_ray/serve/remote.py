"""Index versions on object storage: CHECKPOINT_URI/index/{CURRENT, CHANGELOG, LOCK, v0001/, v0002/, ...}.

The layout is the local one (versions.py). A writer works on a local mirror (the index/ folder of the
checkpoint's fetched copy) inside `bucket_writer`:

1. it takes the bucket's one-writer lock: the object `index/LOCK`, created with a conditional put
   (`If-None-Match: *`: S3 creates it only if no such object exists, atomically), holding its owner, what it
   does and when its lease expires; a thread renews the lease (a put conditional on the lock's ETag) every
   LEASE_S / 3 seconds;
2. it mirrors the published versions (`pull`): CURRENT first, then every version folder up to it;
3. it writes the new version locally; then uploads the version's files, renews the lease once more (a
   conditional put: it fails if another writer took the lock meanwhile, and then nothing is published), and
   only then writes CURRENT, one PUT, the moment the version becomes visible; then CHANGELOG;
4. it deletes LOCK (conditional on its ETag, so it never deletes another writer's lock).

Readers need no lock: they read CURRENT, then fetch the version it names (a version folder never changes once
named, so a reader never sees half of one). A writer that crashed between its upload and CURRENT leaves a
folder above CURRENT that no reader looks at and the next writer overwrites.

Limits: a lock whose lease expired (its writer died, or stalled for longer than LEASE_S) is broken by the next
writer; a stalled writer that wakes finds its renewal refused and publishes nothing, except in the moment
between its last renewal and its CURRENT write (milliseconds, against a lease of minutes). Expiry compares the
writers' clocks, which must agree to well within LEASE_S. The lock is S3's conditional put (AWS since 2024,
MinIO, moto); other schemes (gs://) are refused for index writes. No Ray.
"""

import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

from ncl_ray.runtime import storage

LEASE_S = 300.0
VERSION = re.compile(r"v\d{4}$")


def _s3(uri: str):
    """(boto3 client, bucket, key) of an s3:// URI; ValueError for other schemes."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri}: index changes on object storage need S3's conditional writes (s3://); "
                         f"write the index on a local or mounted copy of the checkpoint instead")
    import boto3

    bucket, _, key = uri[len("s3://"):].partition("/")
    return boto3.client("s3"), bucket, key


def _code(e: Exception) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


class BucketLock:
    """The one-writer lock of an index home on S3 (see the module's note); use `with`."""

    def __init__(self, home_uri: str, what: str, lease_s: float = LEASE_S):
        self.uri = storage.join(home_uri, "LOCK")
        self.client, self.bucket, self.key = _s3(self.uri)
        self.what, self.lease_s = what, lease_s
        self.owner = f"{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:8]}"
        self.etag, self.lost = "", False
        self._stop = threading.Event()
        self._guard = threading.Lock()

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({"owner": self.owner, "what": self.what[:200], "since": time.strftime("%H:%M:%S"),
                           "expires": now + self.lease_s}).encode()

    def _held(self) -> Optional[dict]:
        """The current lock object ({..., "etag"}), or None when there is none."""
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as e:
            if _code(e) in ("NoSuchKey", "404"):
                return None
            raise
        try:
            held = json.loads(r["Body"].read())
        except ValueError:
            held = {"owner": "unknown", "expires": 0}
        return {**held, "etag": r["ETag"]}

    def __enter__(self) -> "BucketLock":
        told = False
        while True:
            try:
                self.etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(),
                                                   IfNoneMatch="*")["ETag"]
                break
            except Exception as e:
                if _code(e) not in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                    raise OSError(f"{self.uri}: cannot take the index lock ({str(e)[:200]})") from None
            held = self._held()
            if held is None:
                continue
            if float(held.get("expires", 0)) < time.time():
                print(f"breaking the expired index lock of {held.get('owner')} ({held.get('what', '')})",
                      flush=True)
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=held["etag"])
                except Exception:  # another waiter broke it first
                    pass
                continue
            if not told:
                print(f"waiting for the index lock {self.uri} (held by {held.get('owner')}: {held.get('what')} "
                      f"since {held.get('since')})", flush=True)
                told = True
            time.sleep(1.0)
        threading.Thread(target=self._renewing, daemon=True, name="index-lock-lease").start()
        return self

    def renew(self) -> None:
        """Extend the lease, or RuntimeError when the lock is no longer this writer's."""
        with self._guard:
            if not self.lost:
                try:
                    self.etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._body(),
                                                       IfMatch=self.etag)["ETag"]
                except Exception as e:
                    if _code(e) in ("PreconditionFailed", "NoSuchKey", "412", "404", "ConditionalRequestConflict"):
                        self.lost = True
                    else:
                        raise
            if self.lost:
                raise RuntimeError(f"{self.uri}: this writer's lease expired and another writer took the "
                                   f"index lock; nothing was published")

    def _renewing(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.renew()
            except Exception:  # reported by the renewal before publishing
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        with self._guard:
            if not self.lost:
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
                except Exception:  # it expires on its own
                    pass


def published(home_uri: str) -> Optional[str]:
    """The name CURRENT holds on object storage, or None when no version is published."""
    text = _text(storage.join(home_uri, "CURRENT"))
    return None if text is None else text.strip()


def pull(home_uri: str, local: Path) -> None:
    """Make the local mirror equal to the published index: versions up to CURRENT (each downloaded once, to a
    temporary folder then renamed), CURRENT and CHANGELOG; everything else in the mirror is removed."""
    local.mkdir(parents=True, exist_ok=True)
    live = published(home_uri)  # read first: every version up to it is complete
    names: List[str] = [] if live is None else \
        [v for v in storage.folders(home_uri) if VERSION.match(v) and v <= live]
    for p in local.iterdir():
        if VERSION.match(p.name) and p.name not in names:
            shutil.rmtree(p)
    for v in names:
        if not (local / v).is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=f".{v}.tmp-", dir=local))
            storage.download(storage.join(home_uri, v), str(tmp))
            tmp.rename(local / v)
    for name, text in (("CURRENT", live), ("CHANGELOG", _text(storage.join(home_uri, "CHANGELOG")))):
        if text is None:
            (local / name).unlink(missing_ok=True)
        else:
            (local / name).write_text(text if name != "CURRENT" else text + "\n")


def _text(uri: str) -> Optional[str]:
    return storage.read_text(uri) if storage.stat(uri)[0] >= 0 else None


def push(local: Path, home_uri: str, version: str, lock: BucketLock) -> None:
    """Publish the mirror's `version`: its files, then (the lease renewed) CURRENT, then CHANGELOG."""
    storage.upload(str(local / version), storage.join(home_uri, version))
    lock.renew()
    storage.write_bytes(storage.join(home_uri, "CURRENT"), version.encode())
    storage.write_bytes(storage.join(home_uri, "CHANGELOG"), (local / "CHANGELOG").read_bytes())


@contextmanager
def bucket_writer(home_uri: str, local: Path, what: str) -> Iterator[None]:
    """Hold the bucket's lock for `what` with the mirror pulled; a version made current in the mirror meanwhile
    is published on the way out (not when the body raised)."""
    with BucketLock(home_uri, what) as lock:
        pull(home_uri, local)
        before = _current_name(local)
        yield
        after = _current_name(local)
        if after is not None and after != before:
            push(local, home_uri, after, lock)


def _current_name(local: Path) -> Optional[str]:
    f = local / "CURRENT"
    return f.read_text().strip() if f.is_file() else None
