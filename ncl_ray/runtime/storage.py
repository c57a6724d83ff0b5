"""Where runs and checkpoints live: a local folder or an object-storage URI (s3://, gs://, file://). No Ray.

    is_uri("s3://bucket/runs")                    # True; a plain path or file:// is local
    check_reachable("s3://bucket/runs", "run.storage_path")   # ConfigError naming the URI, in seconds
    upload("/tmp/scratch/run", "s3://bucket/runs/NAME")       # a local folder's files, mirrored under the URI
    local = fetch("s3://bucket/runs/NAME/best")   # a folder, copied once into the local cache

Everything goes through `pyarrow.fs`, the file systems Ray Train and Ray Data use for the same URIs, so one
setting reaches all three. Credentials and endpoints come only from the standard places: `AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `~/.aws`, an instance role (S3); Google's application default
credentials (GCS). ncl-ray has no flag or config key for them, so they never reach a log or a stored config.

A fetched folder is kept under `$NCL_RAY_CACHE` (default `~/.cache/ncl-ray/fetched/`), keyed by its URI and by
the names, sizes and modification times of its files: fetched again only when one of them changed.
"""

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, List, Tuple

from ncl_ray.config.rules import ConfigError

LOCAL_SCHEMES = ("file://",)
TIMEOUT_S = 5.0  # connect and request timeouts of the reachability check: a wrong endpoint fails in seconds


def is_uri(path: str) -> bool:
    """An object-storage URI (not a local path, not file://)."""
    return "://" in str(path) and not str(path).startswith(LOCAL_SCHEMES)


def local_path(path: str) -> str:
    """file:///x -> /x; other paths unchanged."""
    return str(path)[len("file://"):] if str(path).startswith("file://") else str(path)


def join(base: str, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *[p.strip("/") for p in parts]])


def filesystem(uri: str, timeout_s: float = 0.0):
    """(pyarrow FileSystem, path inside it) of a URI; with `timeout_s`, S3 requests give up after it, once."""
    import pyarrow.fs as pf

    if uri.startswith("s3://") and timeout_s:
        bucket_path = uri[len("s3://"):]
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        fs = pf.S3FileSystem(endpoint_override=endpoint, connect_timeout=timeout_s, request_timeout=timeout_s,
                             region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
                             retry_strategy=pf.AwsStandardS3RetryStrategy(max_attempts=1))
        return fs, bucket_path.rstrip("/")
    try:
        fs, path = pf.FileSystem.from_uri(uri)
    except (ValueError, OSError) as e:
        raise ConfigError(f"{uri}: not a storage URI this installation can open ({str(e)[:200]})") from None
    return fs, path.rstrip("/")


def _explain(uri: str, e: Exception) -> str:
    """One line saying what is wrong, from pyarrow's error text."""
    text = str(e)
    low = text.lower()
    if "nosuchbucket" in low or "bucket does not exist" in low or "the specified bucket" in low:
        why = "the bucket does not exist"
    elif "accessdenied" in low or "access denied" in low or "forbidden" in low or "signature" in low or \
            "invalidaccesskeyid" in low or "credentials" in low:
        why = "access denied (check the credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, the role)"
    elif "curl" in low or "connect" in low or "timeout" in low or "timed out" in low or "resolve" in low:
        why = "the storage endpoint cannot be reached (AWS_ENDPOINT_URL, network)"
    else:
        why = text.splitlines()[0][:200] if text else type(e).__name__
    return f"{uri}: {why}"


def check_reachable(uri: str, key: str) -> None:
    """Write and delete a small probe under `uri` within a few seconds, or a ConfigError naming `key`, the URI
    and what is wrong (no bucket, access denied, no endpoint). Call it before Ray starts."""
    fs, path = filesystem(uri, TIMEOUT_S)
    probe = f"{path}/.ncl-ray-write-probe-{os.getpid()}"
    try:
        with fs.open_output_stream(probe) as f:
            f.write(b"ok")
        fs.delete_file(probe)
    except Exception as e:  # pyarrow raises OSError subclasses with the service's message
        raise ConfigError(f"{key}: {_explain(uri, e)}") from None


def exists(uri: str) -> bool:
    import pyarrow.fs as pf

    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pf.FileType.NotFound


def stat(uri: str) -> Tuple[int, int]:
    """(size, mtime_ns) of an object; (-1, -1) when it is missing or cannot be read."""
    import pyarrow.fs as pf

    try:
        fs, path = filesystem(uri)
        info = fs.get_file_info(path)
    except (OSError, ConfigError):
        return -1, -1
    if info.type != pf.FileType.File:
        return -1, -1
    return int(info.size or 0), int(info.mtime_ns or 0)


def folders(uri: str) -> List[str]:
    """Names of the folders directly under a folder URI."""
    import pyarrow.fs as pf

    fs, path = filesystem(uri)
    infos = fs.get_file_info(pf.FileSelector(path, recursive=False, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pf.FileType.Directory)


def delete_folder(uri: str) -> None:
    """Remove everything under a folder URI (nothing there is fine)."""
    fs, path = filesystem(uri)
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def temp_copy(uri: str) -> Iterator[str]:
    """A local temporary copy of one object, removed afterwards (FFmpeg reads local files)."""
    fs, path = filesystem(uri)
    fd, local = tempfile.mkstemp(prefix="ncl-ray-object-", suffix=Path(path).suffix)
    try:
        with os.fdopen(fd, "wb") as out, fs.open_input_stream(path) as f:
            shutil.copyfileobj(f, out, 1 << 20)
        yield local
    finally:
        os.unlink(local)


def read_text(uri: str) -> str:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def write_bytes(uri: str, data: bytes) -> None:
    fs, path = filesystem(uri)
    with fs.open_output_stream(path) as f:
        f.write(data)


def listing(uri: str) -> List[Tuple[str, int, int]]:
    """(path relative to uri, size, mtime_ns) of every file under a folder URI, sorted."""
    import pyarrow.fs as pf

    fs, path = filesystem(uri)
    out = []
    for info in fs.get_file_info(pf.FileSelector(path, recursive=True, allow_not_found=True)):
        if info.type == pf.FileType.File:
            out.append((info.path[len(path):].lstrip("/"), int(info.size or 0), int(info.mtime_ns or 0)))
    return sorted(out)


def upload(local: str, uri: str) -> None:
    """Copy every file under the local folder to the same relative path under `uri` (overwriting)."""
    import pyarrow.fs as pf

    fs, path = filesystem(uri)
    if Path(local).is_dir() and any(Path(local).iterdir()):
        pf.copy_files(str(Path(local).resolve()), path, source_filesystem=pf.LocalFileSystem(),
                      destination_filesystem=fs, use_threads=True)


def download(uri: str, local: str) -> None:
    """Copy every file under `uri` into the local folder (created)."""
    import pyarrow.fs as pf

    fs, path = filesystem(uri)
    Path(local).mkdir(parents=True, exist_ok=True)
    pf.copy_files(path, str(Path(local).resolve()), source_filesystem=fs,
                  destination_filesystem=pf.LocalFileSystem(), use_threads=True)


ORIGIN = ".origin"  # beside a fetched copy: the URI it was fetched from


def origin(local: str) -> str:
    """The URI a folder made by `fetch` was copied from; "" for any other folder."""
    p = Path(local).resolve()
    marker = p.parent / ORIGIN
    if cache_root().resolve() not in p.parents or not marker.is_file():
        return ""
    return marker.read_text().strip()


def cache_root() -> Path:
    return Path(os.environ.get("NCL_RAY_CACHE") or Path.home() / ".cache" / "ncl-ray") / "fetched"


def fetch(uri: str, skip: Tuple[str, ...] = ()) -> str:
    """A local copy of the folder at `uri`, made once and reused while its files are unchanged (by name, size
    and modification time); files under the sub-folders named in `skip` ("eval/") are left out of both.
    FileNotFoundError when there is nothing there. Written to a temporary folder and renamed, so a copy is either
    complete or absent."""
    import pyarrow.fs as pf

    files = [f for f in listing(uri) if not f[0].startswith(skip)] if skip else listing(uri)
    if not files:
        raise FileNotFoundError(f"nothing at {uri}")
    key = hashlib.sha256(repr((uri, files, ORIGIN)).encode()).hexdigest()[:20]  # ORIGIN: copies made with the marker
    name = hashlib.sha256(uri.encode()).hexdigest()[:12] + "-" + key
    target = cache_root() / name / Path(uri.rstrip("/")).name
    if target.is_dir():
        return str(target)
    cache_root().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache_root()))
    try:
        fs, path = filesystem(uri)
        for rel, _, _ in files:
            local = tmp / Path(uri.rstrip("/")).name / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            pf.copy_files(f"{path}/{rel}", str(local), source_filesystem=fs,
                          destination_filesystem=pf.LocalFileSystem())
        (tmp / ORIGIN).write_text(uri.rstrip("/"))
        try:
            tmp.rename(cache_root() / name)
        except OSError:  # another process fetched the same version meanwhile: theirs is as good
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
