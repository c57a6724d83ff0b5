"""Submit ncl-ray commands to a Ray cluster as Ray Jobs (`jobs/submit.sh` wraps this module).

    python -m ncl_ray.runtime.jobs submit train conf/msrvtt.yaml run.storage_path=/mnt/shared/runs --gpus 0
    python -m ncl_ray.runtime.jobs status JOB_ID | logs JOB_ID | stop JOB_ID | list

The address comes from `--address` or RAY_ADDRESS (the dashboard, e.g. http://127.0.0.1:8265 through `ray
dashboard jobs/cluster.yaml` or an SSH tunnel). Clusters run Ray's token authentication (jobs/cluster.yaml,
jobs/rayjob.yaml): the token comes from `--token-file`, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token,
and a missing or wrong token is reported as such. What is uploaded
is an allow-list, copied first into a temporary folder outside the project: the package, `conf/`, `jobs/` and
`pyproject.toml` (`UPLOAD`), never data, runs or logs that sit in the tree; a file growing in the project during
the upload cannot break it, and an upload larger than `--max-upload-mb` is refused. By default the command
follows the job's logs until it ends and exits 0 only if it SUCCEEDED.
"""

import argparse
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import yaml

ROOT = Path(__file__).resolve().parents[2]  # the project: ncl_ray/runtime/jobs.py -> ./
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
COMMANDS = ("train", "eval", "tune", "prepare")
UPLOAD = ("ncl_ray", "conf", "jobs", "pyproject.toml", "README.md")  # what a job needs from the project


class JobsError(RuntimeError):
    """A user-facing failure (unreachable cluster, unknown job, upload too large); printed without a traceback."""


def upload_files(root: Path) -> List[Path]:
    """The allow-listed files under `root`, refusing any symlink that leads outside the project (a link to
    ~/.ssh or / would otherwise be copied into the job's package)."""
    top = root.resolve()
    files: List[Path] = []
    for name in UPLOAD:
        src = root / name
        if not (src.exists() or src.is_symlink()):
            continue
        paths = [src] if not src.is_dir() else [src, *src.rglob("*")]
        for p in paths:
            if p.is_symlink() and not p.resolve().is_relative_to(top):
                raise JobsError(f"{p.relative_to(root)} is a link to {p.resolve()}, outside the project: the upload "
                                f"takes the project's own files only; remove the link")
            if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith((".pyc",)) \
                    and not any(part.endswith(".egg-info") for part in p.parts):
                files.append(p)
    return files


def stage_upload(root: Path, dest: Path, max_mb: float) -> int:
    """Copy the allow-listed project files into `dest`; returns the bytes copied. The size is checked before
    anything is copied (larger than max_mb: refused)."""
    files = upload_files(root)
    size = sum(f.stat().st_size for f in files)
    if size > max_mb * 2**20:
        biggest = max(files, key=lambda f: f.stat().st_size)
        raise JobsError(f"the upload would be {size / 2**20:.1f} MB, over --max-upload-mb={max_mb:g} "
                        f"(largest: {biggest.relative_to(root)}); keep data and runs outside {', '.join(UPLOAD)}")
    for name in UPLOAD:
        if (root / name).is_dir():
            (dest / name).mkdir(parents=True, exist_ok=True)
    for f in files:
        target = dest / f.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)  # a link inside the project is copied as the file it names
    return size


def build_entrypoint(command: str, config: str, overrides: List[str], python: str = "python") -> str:
    """The shell command the job runs, e.g. `python -m ncl_ray train conf/x.yaml k=v`."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r} ({', '.join(COMMANDS)})")
    return " ".join([shlex.quote(python), "-m", "ncl_ray", command, shlex.quote(config)]
                    + [shlex.quote(o) for o in overrides])


def load_runtime_env(path: Optional[str], working_dir: str) -> dict:
    env = yaml.safe_load(Path(path).read_text()) if path else {}
    env = dict(env or {})
    env["working_dir"] = working_dir
    return env


def use_token(token_file: Optional[str]) -> bool:
    """Turn on Ray's token authentication for this client when a token is at hand: `--token-file`, else
    RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token. Returns whether one is used."""
    if token_file:
        path = Path(token_file).expanduser()
        if not path.is_file() or not path.read_text().strip():
            raise JobsError(f"--token-file {token_file}: no token there (copy the head's ~/.ray/auth_token)")
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(path.absolute())
    elif not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
              or (Path.home() / ".ray" / "auth_token").is_file()):
        return False  # no token to send: a cluster that wants one says so (_auth_error)
    os.environ["RAY_AUTH_MODE"] = "token"
    return True


def _auth_error(e: Exception, address: str) -> Optional[JobsError]:
    text = str(e).replace(address, "")  # a port such as 44019 holds "401": only the status counts
    if re.search(r"\b401\b", text) or "Authentication required" in text:
        return JobsError(f"the cluster at {address} requires Ray's token: pass --token-file PATH (a copy of the "
                         f"head's ~/.ray/auth_token) or set RAY_AUTH_TOKEN")
    if "403" in text or "Authentication failed" in text:
        return JobsError(f"the cluster at {address} refused the token given (--token-file, RAY_AUTH_TOKEN or "
                         f"~/.ray/auth_token): it is not the head's")
    return None


def _client(address: Optional[str], token_file: Optional[str] = None):
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise JobsError("no cluster address: pass --address http://HEAD:8265 or set RAY_ADDRESS")
    use_token(token_file)
    from ray.job_submission import JobSubmissionClient

    saved = os.environ.pop("RAY_ADDRESS", None)  # Ray's client prefers $RAY_ADDRESS to the address it is given
    try:
        return JobSubmissionClient(address)
    except Exception as e:  # ConnectionError, or a ValueError for a malformed address
        auth = _auth_error(e, address)
        if auth is not None:
            raise auth from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise JobsError(f"cannot reach the Ray dashboard at {address}: {first[:300]}") from None
    finally:
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved


def _job_call(fn, job_id: str, address: str):
    """A client call about one job; an unknown id becomes a JobsError naming it."""
    try:
        return fn(job_id)
    except RuntimeError as e:
        if "does not exist" in str(e) or "404" in str(e):
            raise JobsError(f"no job '{job_id}' on {address} "
                            "(python -m ncl_ray.runtime.jobs list shows the jobs)") from None
        raise


def wait(client, job_id: str, follow: bool = True, timeout: float = 0) -> str:
    """Stream logs (if `follow`) and wait until the job ends; returns its final status."""
    start, printed = time.time(), 0
    while True:
        status = str(client.get_job_status(job_id).value)
        if follow:
            logs = client.get_job_logs(job_id)
            sys.stdout.write(logs[printed:])
            sys.stdout.flush()
            printed = len(logs)
        if status in TERMINAL:
            return status
        if timeout and time.time() - start > timeout:
            return status
        time.sleep(1.0)


PATH_KEYS = ("data.root", "data.manifest", "data.cache_dir", "run.storage_path")


def check_job_config(command: str, config: str, overrides: List[str], root: Path) -> None:
    """Validate the config on this machine before uploading, and refuse relative paths: inside a job they
    resolve against the job's temporary working directory, so data and runs would be lost with it."""
    if command == "eval":
        return
    from omegaconf import OmegaConf

    from ncl_ray.config.schema import Config, ConfigError, load_config

    path = root / config if not Path(config).is_absolute() else Path(config)
    try:
        load_config(str(path), overrides)
        raw = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path),
                              OmegaConf.from_dotlist(list(overrides)))
    except ConfigError as e:
        raise JobsError(f"config error: {e}") from None
    manifest = OmegaConf.select(raw, "data.dataset") == "manifest"  # then data.root is not read, else data.manifest
    used = [k for k in PATH_KEYS if k != ("data.root" if manifest else "data.manifest")]
    relative = [f"{k}={OmegaConf.select(raw, k)}" for k in used
                if OmegaConf.select(raw, k) and "://" not in str(OmegaConf.select(raw, k))
                and not Path(str(OmegaConf.select(raw, k))).is_absolute()]
    if relative:
        raise JobsError(f"relative paths in a job resolve inside its temporary working directory and are lost: "
                        f"{', '.join(relative)}; pass absolute paths on storage every node sees, e.g. "
                        f"run.storage_path=/mnt/shared/runs data.root=/mnt/shared/data "
                        f"data.cache_dir=/mnt/shared/cache")


def submit(args) -> int:
    check_job_config(args.command, args.config, args.overrides, Path(args.working_dir))
    client = _client(args.address, args.token_file)
    entrypoint = build_entrypoint(args.command, args.config, args.overrides, args.python)
    with tempfile.TemporaryDirectory(prefix="ncl-ray-upload-") as staged:
        size = stage_upload(Path(args.working_dir), Path(staged), args.max_upload_mb)
        print(f"uploading {size / 2**20:.1f} MB ({', '.join(UPLOAD)})")
        job_id = client.submit_job(
            entrypoint=entrypoint, submission_id=args.job_id,
            runtime_env=load_runtime_env(args.runtime_env, staged),
            entrypoint_num_cpus=args.cpus, entrypoint_num_gpus=args.gpus or None,
            metadata={"project": "ncl-ray", "command": args.command, "config": args.config})
    print(f"submitted {job_id}: {entrypoint}")
    if args.no_wait:
        return 0
    status = wait(client, job_id, follow=not args.quiet, timeout=args.timeout)
    print(f"job {job_id}: {status}")
    if status == "FAILED":
        info = client.get_job_info(job_id)
        print(f"reason: {info.message}", file=sys.stderr)
        logs = client.get_job_logs(job_id)
        if args.quiet:
            print(logs[-5000:], file=sys.stderr)
        if "No module named" in logs or "command not found" in logs:
            print(f"hint: the job ran '{args.python}', which lacks ncl-ray's dependencies; pass --python with the "
                  f"cluster's interpreter (e.g. --python /opt/venv/bin/python) or install the project on every "
                  f"node (jobs/cluster.yaml)", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


def main(argv: Optional[List[str]] = None) -> int:
    common = argparse.ArgumentParser(add_help=False)  # before or after the action: `list --address X` works too
    common.add_argument("--address", default=argparse.SUPPRESS, help="Ray dashboard address (default: $RAY_ADDRESS)")
    common.add_argument("--token-file", default=argparse.SUPPRESS, help="the cluster's Ray token (default: "
                        "$RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")
    p = argparse.ArgumentParser(prog="python -m ncl_ray.runtime.jobs", description=__doc__.split("\n")[0],
                                parents=[common])
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("submit", help="submit train, eval or tune", parents=[common])
    s.add_argument("command", choices=list(COMMANDS), help="the ncl-ray command to run on the cluster")
    s.add_argument("config", help="config YAML (or checkpoint folder for eval), relative to the project")
    s.add_argument("overrides", nargs="*", help="key=value")
    s.add_argument("--runtime-env", default=str(ROOT / "jobs" / "runtime_env.yaml"))
    s.add_argument("--working-dir", default=str(ROOT), help="project folder whose allow-listed files are uploaded")
    s.add_argument("--max-upload-mb", type=float, default=20, help="refuse larger uploads (default 20)")
    s.add_argument("--gpus", type=float, default=0, help="GPUs for the driver (workers ask for their own)")
    s.add_argument("--cpus", type=float, default=0.1, help="CPUs reserved for the driver")
    s.add_argument("--python", default="python", help="interpreter on the cluster")
    s.add_argument("--job-id", help="submission id (default: generated)")
    s.add_argument("--no-wait", action="store_true", help="return after submitting")
    s.add_argument("--quiet", action="store_true", help="wait without streaming logs")
    s.add_argument("--timeout", type=float, default=0, help="stop waiting after this many seconds")
    for name, help_ in (("status", "print a job's status"), ("logs", "print a job's log"),
                        ("stop", "stop a running job")):
        q = sub.add_parser(name, help=help_, parents=[common])
        q.add_argument("job_id", help="submission id printed by submit (or shown by list)")
    sub.add_parser("list", help="list the cluster's jobs", parents=[common])
    args = p.parse_args(argv)
    args.address, args.token_file = getattr(args, "address", None), getattr(args, "token_file", None)
    try:
        try:
            return _run(args)
        except JobsError:
            raise
        except Exception as e:  # an authentication failure after connecting, in any call
            auth = _auth_error(e, args.address or os.environ.get("RAY_ADDRESS", ""))
            if auth is None:
                raise
            raise auth from None
    except JobsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.action == "submit":
        return submit(args)
    client = _client(args.address, args.token_file)
    address = args.address or os.environ.get("RAY_ADDRESS")
    if args.action == "status":
        print(_job_call(client.get_job_status, args.job_id, address).value)
    elif args.action == "logs":
        print(_job_call(client.get_job_logs, args.job_id, address))
    elif args.action == "stop":
        print("stopped" if _job_call(client.stop_job, args.job_id, address) else "not running")
    else:
        for job in client.list_jobs():
            print(f"{job.submission_id}\t{job.status}\t{job.entrypoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
