"""The rehearsal's plumbing: its report reader finds a child's JSON line among Ray's log lines (the shortened
`make rehearsal` itself: tests/system/test_rehearsal_run.py)."""

import pytest


def test_a_child_json_line_is_found_under_ray_log_lines():
    """The rehearsal and benchmarks read a child's JSON result from its output, where Ray may log after it."""
    from bench.report import last_json

    out = '(raylet) starting\n{"clips": 104, "wall_s": 29.2}\n(raylet) WARNING: 10 PYTHON worker processes\n'
    assert last_json(out) == {"clips": 104, "wall_s": 29.2}
    with pytest.raises(ValueError, match="no JSON line"):
        last_json("(raylet) only logs\n")
