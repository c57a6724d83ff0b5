"""The Ray tier's one local instance: started by the first test that asks for it, stopped after the tier's last
test (before the system tier, whose tests start their own clusters and commands)."""

import os

import pytest

_STARTED: dict = {}  # {"env": the AWS variables as they were before the instance started}


@pytest.fixture
def ray_local(s3):
    """A real local Ray instance shared by the tier's tests (4 logical CPUs on 2 cores: Train workers take
    fractions, Data keeps the rest), started with only the standard AWS variables of the session's S3 server
    set, which its workers inherit as a cluster's nodes get theirs (a test may keep a run in a bucket)."""
    import ray

    from ncl_ray.runtime.cluster import init_ray

    if not ray.is_initialized():
        _STARTED["env"] = {k: os.environ.get(k) for k in s3.env}
        os.environ.update(s3.env)
        os.environ.pop("RAY_ADDRESS", None)
        init_ray("", num_cpus=4)
    return ray


def _stop() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    os.environ.pop("RAY_API_SERVER_ADDRESS", None)
    for k, v in _STARTED.pop("env", {}).items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def pytest_runtest_teardown(item, nextitem):
    """After the last test of this folder (or before one outside it), the instance is stopped."""
    here = os.path.dirname(__file__)
    if nextitem is None or os.path.dirname(str(nextitem.path)) != here:
        if _STARTED:
            _stop()
