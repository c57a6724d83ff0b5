"""Fixtures of the system tier shared by several modules."""

import pytest

from serving import start_server


@pytest.fixture(scope="session")
def served(tmp_path_factory, tiny_run):
    """One `ncl-ray serve` of the tiny run for every module that talks to the search service (test_serve.py
    first, whose index test expects the first added version)."""
    yield from start_server(tmp_path_factory, tiny_run)
