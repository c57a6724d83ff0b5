import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture
def ray_local():
    """A real local Ray instance (4 logical CPUs on 2 cores: Train workers take fractions, Data keeps the rest)."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, ignore_reinit_error=False, log_to_driver=True)
    yield ray
    ray.shutdown()
