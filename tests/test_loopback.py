"""A private Ray instance keeps every listening socket of every process it starts on loopback."""

import os

import pytest

from sockets import descendants, listening, outside_loopback

pytestmark = [pytest.mark.ray]


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
