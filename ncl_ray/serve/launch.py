"""`ncl-ray serve RUN_OR_CHECKPOINT [--host 127.0.0.1] [--port 8000] [--index exact|hnsw] [key=value ...]`.

The gallery is the checkpoint's evaluation export (the test split with NCL biases from the training-query bank);
when there is none yet it is built first (`ncl-ray eval` with none and ncl), then kept as version 1 of the
checkpoint's versioned index (`CHECKPOINT/index/`), which `ncl-ray index add` extends.
"""

import logging
import time
from pathlib import Path
from typing import List, Sequence

log = logging.getLogger("ncl_ray.serve")
TOKEN_ENV = "NCL_RAY_SERVE_TOKEN"


def ensure_index(checkpoint: str, overrides: List[str]) -> Path:
    """CHECKPOINT/index with a CURRENT version, built from the eval export (made now if missing). A checkpoint
    fetched from object storage uses the `eval/` exports beside it in the bucket first."""
    from ncl_ray.runtime import storage
    from ncl_ray.serve.versions import current, home_of, refresh, seed_from_export

    home = home_of(checkpoint)
    remote = storage.origin(checkpoint)  # the checkpoint's URI when it was fetched, else ""
    refresh(home)  # a fetched checkpoint's index is the one in the bucket
    if current(home) is not None:
        return home
    exports = sorted(Path(checkpoint).glob("eval/*bank-train*/export/index.json"))
    if not exports and remote:  # `ncl-ray eval URI` wrote its export beside the checkpoint in the bucket
        files = [f for f, _, _ in storage.listing(storage.join(remote, "eval"))]
        names = sorted(f.split("/")[0] for f in files
                       if f.count("/") == 2 and f.endswith("/export/index.json") and "bank-train" in f.split("/")[0])
        if names:
            exports = [Path(storage.fetch(storage.join(remote, "eval", names[0], "export"))) / "index.json"]
    if not exports:
        from ncl_ray.evaluation.checkpoint_eval import evaluate_checkpoint as evaluate

        log.info("no evaluation export yet: embedding the test split for the gallery")
        evaluate(checkpoint, ["eval.methods=[none,ncl]", *overrides])
        exports = sorted(Path(checkpoint).glob("eval/*bank-train*/export/index.json"))
    if not exports:
        raise FileNotFoundError(f"{checkpoint}: no export with training-bank biases to serve")
    seed_from_export(home, exports[0].parent)
    return home


def check_port_free(host: str, port: int) -> None:
    """ValueError naming --host/--port when nothing could listen there now (in use, or not an address here)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ValueError(f"cannot listen on {host}:{port} ({e.strerror}): pick another --port, or stop what "
                             f"uses it") from None


def read_token_file(path: str) -> str:
    """The token in `path` (surrounding whitespace dropped). Like Ray's own token file, it must be private: a
    file that other users can read (or write) is refused, naming its mode."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ValueError(f"--token-file {path}: {e.strerror}") from None
    with os.fdopen(fd) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"--token-file {path}: not a regular file")
        if st.st_mode & 0o077:
            raise ValueError(f"--token-file {path}: other users can access it (mode {stat.S_IMODE(st.st_mode):04o}); "
                             f"chmod 600 {path}")
        return f.read(4096).strip()


def resolve_token(token: str, token_file: str) -> str:
    """The serve token from --token-file, $NCL_RAY_SERVE_TOKEN or --token (in that order; --token warns: any
    local user sees it in `ps`); "" when none is given."""
    import os

    if token_file:
        return read_token_file(token_file)
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    if token:
        log.warning("--token on the command line is visible to every local user (ps, /proc); prefer "
                    "--token-file FILE (mode 600) or $%s", TOKEN_ENV)
    return token


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1 (for Ray Serve's proxy behind the front)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_run(target: str, host: str, port: int, kind: str, overrides: List[str], token: str = "",
              allow_hosts: Sequence[str] = (), token_file: str = "") -> int:
    """Serve a run's index. Beyond loopback a token is required (--token-file, $NCL_RAY_SERVE_TOKEN or --token),
    checked before Ray starts; Host headers other than loopback, the bound address and `allow_hosts` are
    refused. The settings reach the deployments as their constructor arguments."""
    import os

    from ray import serve

    from ncl_ray.serve.guard import allowed_hosts, needs_token

    token = resolve_token(token, token_file)
    if needs_token(host) and not token:
        raise ValueError(f"--host {host} listens beyond loopback: pass --token-file FILE (or set {TOKEN_ENV}); "
                         f"clients then send 'Authorization: Bearer <token>' and the page is opened as "
                         f"http://HOST:PORT/#token=...")
    if token and (len(token) < 16 or any(c.isspace() or not c.isprintable() for c in token)):
        raise ValueError("the serve token must be at least 16 printable characters without spaces (e.g. python -c "
                         "'import secrets; print(secrets.token_urlsafe())' > FILE; chmod 600 FILE)")

    from ncl_ray.config.schema import from_dict
    from ncl_ray.runtime.checkpoint import load_checkpoint, resolve_checkpoint
    from ncl_ray.runtime.cluster import init_ray
    from ncl_ray.serve.app import build_app

    check_port_free(host, port)  # before Ray starts: a busy port is one line, not Serve's traceback
    checkpoint = resolve_checkpoint(target)
    cfg = from_dict(load_checkpoint(checkpoint)["config"])
    from ncl_ray.evaluation.export import read_index
    from ncl_ray.serve.versions import current, home_of, refresh, remote_home

    refresh(home_of(checkpoint))
    live = current(home_of(checkpoint))
    if live is not None:  # a version that fails its checks is named before Ray starts
        read_index(live)
    # Ray's C++ failure-signal handler turns SIGTERM into an abort with a stack dump; a service stops cleanly
    # (the setting is read when ray is imported, and passed to the core worker when it connects)
    from ray._private import ray_constants

    os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = "1"
    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    init_ray(cfg.run.ray_address, verbose=cfg.run.verbose)
    import signal

    def stop(signum, frame):  # SIGTERM (a service manager, `kill`) stops like Ctrl-C, at any point from here
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # after ray.init, which installs its own (sys.exit(15))
    started, front = False, None
    try:
        home = ensure_index(checkpoint, overrides)
        # beyond loopback, Ray Serve's proxy stays on 127.0.0.1 behind front.py, which hides the proxy's own
        # /-/routes (Ray answers it outside any application, so outside the guard)
        if not cfg.run.verbose:  # Serve's INFO lines ("Started Serve in namespace ...") stay off the console
            import logging

            logging.getLogger("ray.serve").setLevel(logging.WARNING)
        public = needs_token(host)
        internal = free_port() if public else port
        serve.start(http_options={"host": "127.0.0.1" if public else host, "port": internal})
        started = True
        # an index in the bucket is served from there: a replica on any node reads CURRENT and fetches it
        serve.run(build_app(checkpoint, remote_home(home) or str(home), kind, use_gpu=cfg.train.use_gpu,
                            hosts=sorted(allowed_hosts(host, allow_hosts)), token=token),
                  name="ncl-ray", route_prefix="/", blocking=False)
        if public:
            from ncl_ray.serve.front import Front

            front = Front(host, port, internal)
        print(f"serving {home} on http://{host}:{port}/  (search page at /, API: /search?q=...&k=10&method="
              f"ncl|none, /healthz, POST /reload); Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        if front is not None:
            front.stop()
        if started:
            serve.shutdown()
    return 0
