"""Runs first: start an unrelated Ray head that every later test must leave alone (checked in test_zz_...)."""

import pytest

pytestmark = pytest.mark.ray


def test_unrelated_ray_head_is_up(bystander):
    assert len(bystander.pids) >= 3
