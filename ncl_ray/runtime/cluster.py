"""Connecting to Ray and sizing work to the resources a cluster actually has.

    init_ray(cfg.run.ray_address)   # the configured cluster, $RAY_ADDRESS, or a private local instance

A plain `ray.init()` joins whatever cluster the default temp dir names (a `ray start` head, possibly one that
is gone, where it retries forever). Commands here never do that: without an address they start their own
private instance (`address="local"`), and with one they join exactly that cluster. Inside `ray job submit`,
Ray sets RAY_ADDRESS for the entrypoint, so jobs join their cluster.
"""

import contextlib
import logging
import os
import socket
import time
from typing import List, Optional, Tuple

log = logging.getLogger(__name__)


class ResourceError(RuntimeError):
    """The cluster cannot host the requested workers; the message names the keys to change."""


def resolve_address(configured: str = "") -> str:
    """`configured` if set, else $RAY_ADDRESS, else "local" (a new private instance)."""
    return configured or os.environ.get("RAY_ADDRESS", "") or "local"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Ray kills idle worker processes above its soft limit after 1 s, and the train workers, controller and data
# coordinator fill that limit on a small node: every epoch's read and decode tasks then start fresh processes
# (seconds of imports each). A minute keeps them between epochs. Clusters set this on `ray start`.
IDLE_WORKER_MS = 60_000


# Ray binds a node's GCS, raylet, object manager, workers and dashboard agent to the node's IP address, which it
# takes from the routable interface unless clusters are switched off, as on macOS/Windows: then it is 127.0.0.1
# (ray/_private/services.py get_node_ip_address reads ray_constants.ENABLE_RAY_CLUSTER; the processes it starts
# read the same variable). A private instance needs no other machine, so it keeps every socket on loopback.
LOOPBACK_FLAG = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def loopback_only():
    """While a private instance starts: Ray's no-cluster setting, in this process (Ray reads it when it picks
    the node's address) and in the environment its processes inherit. Restored afterwards, so that this process
    can later start or join real multi-node clusters (a `ray start --address` with the setting off refuses)."""
    from ray._private import ray_constants

    before_env, before_const = os.environ.get(LOOPBACK_FLAG), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_FLAG] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if before_env is None:
            os.environ.pop(LOOPBACK_FLAG, None)
        else:
            os.environ[LOOPBACK_FLAG] = before_env
        ray_constants.ENABLE_RAY_CLUSTER = before_const


def token_path() -> str:
    """Where Ray keeps its authentication token (RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token)."""
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")


def secure_token_file(path: Optional[str] = None) -> bool:
    """Make Ray's token file readable by its owner only (Ray writes it 0644: any local user could read the
    token). Returns True when the mode was changed; files of other users are left alone."""
    path = path or token_path()
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_uid != os.getuid() or not st.st_mode & 0o077:
        return False
    os.chmod(path, 0o600)
    return True


FOOTER_ENV, FOOTER_ACTORS = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "1"
# Ray Train's preemption watcher is one more actor process per run that polls the cluster for nodes being drained
# (spot instances); a private instance is this one machine, which nothing drains
PREEMPTION_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def init_ray(address: str = "", num_cpus: Optional[float] = None, verbose: bool = True) -> None:
    """Join `address` (or $RAY_ADDRESS), else start a private local instance.

    A private instance listens on loopback only (every socket of every process it starts: see LOOPBACK_FLAG)
    and keeps Ray's token authentication. It gets its dashboard on a free loopback port, and every worker is
    told that address
    (RAY_API_SERVER_ADDRESS): Ray Train's helper actors look the cluster up by auto-detection, which fails
    with "Found multiple active Ray instances" when someone else's Ray runs on the same machine.
    Unless `verbose`, worker output is not forwarded to the console (it stays in Ray's log files) and Ray's
    own INFO messages are kept off it. Ray Data reads Parquet footers with a pool of 32 actors per read, one
    process each: on one machine, where a clip cache has a few files, the pool is FOOTER_ACTORS (a value the
    user set in $RAY_DATA_PARQUET_FOOTER_NUM_ACTORS wins). Ray Train's preemption watcher is off there (PREEMPTION_ENV;
    a user's own setting wins): nothing drains the nodes of one machine.
    """
    import ray

    from ncl_ray.ui.console import follow_config, mute_ray_handlers, quiet_raylet_lines

    follow_config(verbose)
    mute_ray_handlers()
    if not verbose:
        quiet_raylet_lines()
    if not ray.is_initialized():
        target = resolve_address(address)
        if target == "local":
            log.info("Ray: starting a private local instance (loopback only)")
            port = _free_port()
            api = f"http://127.0.0.1:{port}"
            os.environ.setdefault(FOOTER_ENV, FOOTER_ACTORS)  # the driver's reads, and the workers it starts
            os.environ.setdefault(PREEMPTION_ENV, "0")  # read by Ray Train's controller (propagated from here)
            with loopback_only():
                ray.init(address="local", num_cpus=num_cpus, log_to_driver=verbose, include_dashboard=True,
                         logging_level=logging.INFO if verbose else logging.WARNING,
                         dashboard_host="127.0.0.1", dashboard_port=port,
                         runtime_env={"env_vars": {"RAY_API_SERVER_ADDRESS": api,
                                                      FOOTER_ENV: os.environ[FOOTER_ENV],
                                                      PREEMPTION_ENV: os.environ[PREEMPTION_ENV]}},
                         _system_config={"idle_worker_killing_time_threshold_ms": IDLE_WORKER_MS})
            os.environ["RAY_API_SERVER_ADDRESS"] = api  # the driver's own state-API calls
            secure_token_file()
            PRIVATE[:] = [True]
            if not verbose:  # removed when the command succeeds (end_private_session)
                PRIVATE_SESSION[:] = [ray._private.worker._global_node.get_session_dir_path()]
        else:
            log.info("Ray: joining %s", target)
            ray.init(address=target, log_to_driver=verbose,
                     logging_level=logging.INFO if verbose else logging.WARNING)
    quiet_data_progress()


PRIVATE_SESSION: List[str] = []  # the session folder of the private instance this process started, if any
PRIVATE: List[bool] = []  # [True] once this process started a private instance


def map_with_pool(ds, fn, **kwargs):
    """`ds.map_batches(fn, **kwargs)` for an actor pool. On a private instance (one machine) a dead actor is not
    restarted: it died of this machine's memory, and a restart would fail the same way (Ray also prints a raw
    warning about restarting actors built from the object store). On a cluster, Ray Data's default (restart,
    e.g. after a node loss). Ray 2.60 takes max_restarts only as a remote argument, which it marks deprecated."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(fn, **kwargs, **({"max_restarts": 0} if PRIVATE else {}))


def end_private_session(succeeded: bool) -> None:
    """After a command that succeeded: stop the private instance it started and remove its session folder (Ray's
    sockets and logs, 2-6 MB; a run keeps its copy of the logs). After a failure, or with run.verbose, the
    folder stays for the logs."""
    if not PRIVATE_SESSION or not succeeded:
        return
    import shutil

    import ray

    session = PRIVATE_SESSION.pop()
    ray.shutdown()
    shutil.rmtree(session, ignore_errors=True)
    root = os.path.dirname(session)
    for name in os.listdir(root):  # session_latest and the metrics discovery file point into it
        link = os.path.join(root, name)
        if os.path.islink(link) and os.readlink(link).startswith(session):
            os.unlink(link)


def quiet_data_progress() -> None:
    """Ray Data progress bars flood job logs; our own per-epoch lines say what matters."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    from ncl_ray.ui.console import mute_ray_handlers

    mute_ray_handlers()


def session_logs() -> Optional[str]:
    """The logs folder of the Ray session this driver belongs to (on this node), if known."""
    try:
        import ray

        return os.path.join(ray._private.worker._global_node.get_session_dir_path(), "logs")
    except Exception:
        return None


def copy_session_logs(dest: str, since: float = 0.0) -> Optional[str]:
    """Copy this node's Ray logs (workers, Ray Data, Train controller) written since `since` (a time.time()) into
    `dest`; returns it, or None. On a long-lived cluster only the files this run touched travel, not its history."""
    import shutil

    src = session_logs()
    if not src or not os.path.isdir(src):
        return None

    sockets = shutil.ignore_patterns("*.sock", "*.lock")

    def skip(folder, names):
        old = {n for n in names if os.path.isfile(os.path.join(folder, n))
               and os.path.getmtime(os.path.join(folder, n)) < since}
        return old | set(sockets(folder, names))

    try:
        shutil.copytree(src, dest, dirs_exist_ok=True, ignore=skip, ignore_dangling_symlinks=True)
    except shutil.Error:
        pass  # files that rotate away while copying
    return dest


def check_training_resources(num_workers: int, cpus_per_worker: float, use_gpu: bool) -> None:
    """Refuse at once a run whose workers can never be placed (Ray would otherwise wait forever)."""
    import ray

    total = ray.cluster_resources()
    need_cpu = num_workers * cpus_per_worker
    if total.get("CPU", 0) < need_cpu:
        raise ResourceError(f"train.num_workers={num_workers} x train.cpus_per_worker={cpus_per_worker} needs "
                            f"{need_cpu:g} CPUs; the cluster has {total.get('CPU', 0):g}. Lower one of them.")
    if use_gpu and total.get("GPU", 0) < num_workers:
        raise ResourceError(f"train.num_workers={num_workers} with train.use_gpu=true needs {num_workers} GPUs; "
                            f"the cluster has {total.get('GPU', 0):g}. Lower train.num_workers or set "
                            f"train.use_gpu=false.")
    if total.get("CPU", 0) - need_cpu < 1:
        log.warning("after the training workers (%g CPUs) less than one CPU is left for Ray Data; lower "
                    "train.cpus_per_worker if decoding does not start", need_cpu)


def actor_pool(use_gpu: bool, wait_s: float = 60.0) -> Tuple[int, float]:
    """(actors, CPUs per actor) for a batch-inference pool that leaves one whole CPU free for the Ray Data
    read tasks feeding it: on a 2-CPU cluster with a job supervisor, a pool of CPUs - 1 one-CPU actors takes
    every CPU and the reads never run."""
    import ray

    free = ray.available_resources()
    deadline = time.time() + wait_s
    while free.get("CPU", 0) < 1.1 and time.time() < deadline:  # a finished trainer may still hold its CPUs
        time.sleep(0.5)
        free = ray.available_resources()
    if use_gpu:
        return max(1, int(free.get("GPU", 0))), 1.0
    spare = free.get("CPU", 0) - 1.0
    if spare >= 1:
        return int(spare), 1.0
    if spare >= 0.1:
        return 1, round(spare, 2)
    raise ResourceError(f"evaluation needs at least 1.1 free CPUs (one actor plus the reads); "
                        f"{free.get('CPU', 0):g} were free after waiting {wait_s:g} s")
