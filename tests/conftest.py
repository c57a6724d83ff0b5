import os
import secrets
import tempfile

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray's token authentication stays on in the tests too, with a token of the test session's own (never the
# user's ~/.ray/auth_token); heads started by tests carry their own (raynodes.Head.client_env)
_token = os.path.join(tempfile.mkdtemp(prefix="ncl-ray-test-auth-"), "auth_token")
with open(os.open(_token, os.O_WRONLY | os.O_CREAT, 0o600), "w") as _f:
    _f.write(secrets.token_hex(32))
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN_PATH"] = _token
os.environ.pop("RAY_AUTH_TOKEN", None)
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture
def ray_local():
    """A real local Ray instance (4 logical CPUs on 2 cores: Train workers take fractions, Data keeps the rest)."""
    import ray

    from ncl_ray.runtime.cluster import init_ray

    os.environ.pop("RAY_ADDRESS", None)
    init_ray("", num_cpus=4)
    yield ray
    ray.shutdown()
    os.environ.pop("RAY_API_SERVER_ADDRESS", None)


@pytest.fixture(scope="session")
def bystander():
    """Someone else's Ray head on this machine (own temp dir, 3 CPUs), started before the Ray tests and
    checked alive after them (tests/test_zz_shared_machine.py): the suite must never stop what it did not start."""
    from raynodes import Head

    head = Head(num_cpus=3, prefix="nrb")
    yield head
    head.stop()
