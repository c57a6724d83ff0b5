"""A private Ray instance keeps every listening socket of every process it starts on loopback."""

import os

import pytest

from sockets import descendants, listening, outside_loopback

pytestmark = [pytest.mark.ray]
FLAG_BEFORE = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")  # as this process was given it


def test_private_instance_listens_on_loopback_only(ray_local):
    @ray_local.remote
    def touch():
        return os.getpid()

    ray_local.get([touch.remote() for _ in range(4)])  # worker processes up, with their own servers
    pids = descendants(os.getpid())
    sockets = listening(pids)
    assert len(sockets) >= 8  # GCS, raylet, object manager, dashboard, agents, workers: the probe sees them
    assert outside_loopback(pids) == []
    assert ray_local.util.get_node_ip_address() == "127.0.0.1"


def test_the_loopback_setting_does_not_outlive_the_start(ray_local):
    """Later `ray start --address` children of this process (a second node) would refuse it."""
    from ray._private import ray_constants

    from ncl_ray.runtime.cluster import LOOPBACK_FLAG

    assert os.environ.get(LOOPBACK_FLAG) == FLAG_BEFORE
    assert ray_constants.ENABLE_RAY_CLUSTER is ray_constants.env_bool(LOOPBACK_FLAG, True)
