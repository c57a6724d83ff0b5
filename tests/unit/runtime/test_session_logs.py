"""A run copies only the Ray logs written while it ran: a long-lived cluster's history stays where it is."""

import os
import time

from ncl_ray.runtime import cluster


def test_only_files_written_since_the_start_are_copied(tmp_path, monkeypatch):
    logs = tmp_path / "session" / "logs"
    (logs / "old_job").mkdir(parents=True)
    (logs / "old_job" / "worker-1.out").write_text("yesterday")
    (logs / "raylet.out").write_text("the cluster's history")
    (logs / "gcs.sock").write_text("")
    week_ago = time.time() - 7 * 86400
    for f in (logs / "old_job" / "worker-1.out", logs / "raylet.out"):
        os.utime(f, (week_ago, week_ago))
    start = time.time() - 1
    (logs / "worker-2.out").write_text("this run")
    (logs / "raylet.out").write_text("the cluster's history\nand this run's lines")  # appended: modified now
    monkeypatch.setattr(cluster, "session_logs", lambda: str(logs))
    dest = tmp_path / "run" / "logs" / "ray"
    assert cluster.copy_session_logs(str(dest), since=start) == str(dest)
    copied = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert copied == ["raylet.out", "worker-2.out"]
