"""Console output: progress lines for terminals and for logs, and only our own INFO lines."""

import io
import logging
import time

from ncl_ray.ui.console import Progress, format_duration, setup_console


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_non_tty_prints_plain_lines_with_eta_and_a_final_line():
    out = io.StringIO()
    bar = Progress("decode", 100, "videos", stream=out, every_s=0.05)
    bar.update(10)
    bar.update(20)  # within every_s of the last line: not printed
    time.sleep(0.6)
    bar.update(50, "2 skipped")
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("decode") and "10/100 videos" in lines[0]
    assert len(lines) == 2 and "50/100" in lines[1] and "2 skipped" in lines[1] and "ETA" in lines[1]


def test_a_resumed_bar_counts_its_rate_from_where_it_started_and_never_repeats_its_last_line():
    """A run resumed at step 500 of 1000 does not claim 500 steps in its first second; the final render and the
    close that follow the last line do not print it again with another rate."""
    out = io.StringIO()
    bar = Progress("train", 1000, "steps", stream=out, every_s=0.0)
    bar.update(500, "epoch 6/10")
    assert "steps/s" not in out.getvalue() and "s/step" not in out.getvalue()  # no rate from one reading
    time.sleep(0.6)
    bar.update(506, "epoch 6/10")
    rate = float(out.getvalue().splitlines()[-1].split(" steps/s")[0].split()[-1])
    assert 5 < rate < 12  # 6 steps in about 0.6 s, not 506
    bar.update(1000, "epoch 10/10")
    bar.update(1000, "epoch 10/10", force=True)  # the watcher's last render
    bar.close()  # and the driver's close
    lines = out.getvalue().splitlines()
    assert sum("1000/1000" in line for line in lines) == 1, lines


def test_tty_redraws_one_line():
    out = _Tty()
    bar = Progress("train", 4, "steps", stream=out)
    for i in range(1, 5):
        bar.update(i, f"epoch {i}/4")
    bar.close()
    text = out.getvalue()
    assert text.count("\r") >= 4 and text.count("\n") == 1
    assert "4/4 steps" in text.rsplit("\r", 1)[1] and "in 0:00" in text


def test_console_keeps_ray_info_out_and_our_info_in():
    out = io.StringIO()
    setup_console(stream=out)
    logging.getLogger("ncl_ray.test").info("ours")
    logging.getLogger("other_library.data").info("Execution plan of Dataset ...")
    logging.getLogger("other_library").warning("Token authentication is enabled for this Ray cluster.")
    logging.getLogger("other_library.train").warning("a real warning")
    text = out.getvalue()
    assert "ours" in text and "Execution plan" not in text and "Token" not in text and "a real warning" in text
    setup_console()  # back to stderr for the other tests


def test_durations():
    assert format_duration(5) == "0:05" and format_duration(3725) == "1:02:05"


def test_the_console_follows_run_verbose_from_the_loaded_config():
    """`run.verbose` may come from a config file or any YAML spelling of true: the console follows the loaded
    value, not the raw command line; a caller without our console is left alone."""
    from ncl_ray.ui.console import follow_config

    root = logging.getLogger()
    kept = [h for h in root.handlers if getattr(h, "_ncl_console", False)]
    for h in kept:
        root.removeHandler(h)
    try:
        before = list(root.handlers)
        follow_config(True)  # nobody set up the console: nothing is added
        assert root.handlers == before
        out = io.StringIO()
        setup_console(stream=out)
        logging.getLogger("other.lib").info("quiet run")
        follow_config(True)
        logging.getLogger("other.lib").info("verbose run")
        follow_config(False)
        logging.getLogger("other.lib").info("quiet again")
        lines = out.getvalue().splitlines()
        assert len(lines) == 1 and "INFO other.lib: verbose run" in lines[0]
    finally:
        for h in [h for h in root.handlers if getattr(h, "_ncl_console", False)]:
            root.removeHandler(h)
        root.handlers.extend(kept)


def test_raylet_worker_start_notices_go_to_the_log_not_the_console(capsys, caplog):
    """Ray's error listener prints raylet messages straight to stdout; the start-up-concurrency notice (how
    fractional CPU requests on a small machine look to the raylet) goes to the run log, others still print."""
    from ray._private import worker

    from ncl_ray.ui.console import quiet_raylet_lines

    original = worker.print_to_stdstream
    try:
        quiet_raylet_lines()
        wrapped = worker.print_to_stdstream
        quiet_raylet_lines()  # idempotent: wrapped once
        assert wrapped is not original and worker.print_to_stdstream is wrapped
        notice = "WARNING: 8 PYTHON worker processes have been started on node: abc with address: 127.0.0.1"
        with caplog.at_level(logging.INFO, logger="raylet"):
            worker.print_to_stdstream({"lines": [notice], "pid": "raylet", "is_err": False}, ignore_prefix=False)
            worker.print_to_stdstream({"lines": ["WARNING: out of disk"], "pid": "raylet", "is_err": False},
                                      ignore_prefix=False)
        out = capsys.readouterr().out
        assert "PYTHON worker processes" not in out and "out of disk" in out
        assert any("PYTHON worker processes" in r.getMessage() for r in caplog.records)
    finally:
        worker.print_to_stdstream = original
