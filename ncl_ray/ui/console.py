"""What a user reads: one progress line per phase (done/total, rate, ETA) and our own log lines; Ray's chatter
goes to files in the run folder.

    setup_console()                           # before anything: our INFO lines, everyone else's warnings
    attach_run_log(run_dir)                   # everything (Ray's INFO included) also to run_dir/logs/driver.log
    bar = Progress("decode", total=1000, unit="videos")
    bar.update(250, "3 skipped"); bar.close()

On a terminal the progress line is redrawn in place; elsewhere (CI, job logs, pipes) it prints a plain line at
most every `every_s` seconds and once at the end, so logs stay short and readable.
"""

import logging
import sys
import time
from pathlib import Path
from typing import Optional, TextIO

OURS = "ncl_ray"


# Ray warnings that say nothing actionable to a user of this project (they stay in the log files):
# token auth on a private instance is what we want; progress bars are off because we draw our own
MUTED = ("Token authentication is enabled", "Progress bars disabled", "Experiment has been interrupted")


class _OnlyOurs(logging.Filter):
    """Console: our INFO lines, and warnings or errors from anyone (minus MUTED)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(OURS):
            return True
        return record.levelno >= logging.WARNING and not record.getMessage().startswith(MUTED)


NOISY = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve")  # Ray's loggers with console handlers of their own


class _Muted(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(MUTED)


# Raylet messages the driver prints straight to stdout (not through logging): with fractional CPU requests on a
# small machine the raylet starts more worker processes at once than it expects, which is how this project runs
RAYLET_NOISE = ("PYTHON worker processes have been started",
                "ServeController.graceful_shutdown failed")  # serve's controller, killed by its own shutdown
raylet_log = logging.getLogger("raylet")  # where those lines go instead: driver.log (INFO), not the console


def quiet_raylet_lines() -> None:
    """Route RAYLET_NOISE lines that Ray's error listener would print to stdout into the log file instead
    (idempotent). Ray prints them from a background thread through `ray._private.worker.print_to_stdstream`,
    which it looks up at each call: that name is wrapped here, and every other line passes unchanged."""
    from ray._private import worker

    original = worker.print_to_stdstream
    if getattr(original, "_ncl_quiet", False):
        return

    def filtered(data, ignore_prefix: bool):
        if data.get("pid") == "raylet":
            noise = [x for x in data.get("lines", []) if any(n in x for n in RAYLET_NOISE)]
            for line in noise:
                raylet_log.info("%s", line.strip())
            data = {**data, "lines": [x for x in data.get("lines", []) if x not in noise]}
            if not data["lines"]:
                return
        original(data, ignore_prefix)

    filtered._ncl_quiet = True
    worker.print_to_stdstream = filtered


def mute_ray_handlers() -> None:
    """Ray's logger prints through its own handler (it does not propagate): drop the MUTED lines there too."""
    for name in ("ray", "ray.data"):
        for h in logging.getLogger(name).handlers:
            if not any(isinstance(f, _Muted) for f in h.filters):
                h.addFilter(_Muted())


def setup_console(verbose: bool = False, stream: Optional[TextIO] = None) -> None:
    """Console logging: `ncl-ray: message` for our loggers at INFO; other libraries (Ray) at WARNING unless
    `verbose`. Idempotent."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "_ncl_console", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._ncl_console, handler._ncl_verbose = True, verbose
    handler.setFormatter(logging.Formatter("%(message)s" if not verbose else
                                           "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if not verbose:
        handler.addFilter(_OnlyOurs())
    root.addHandler(handler)
    if not verbose:
        logging.getLogger("ray").setLevel(logging.WARNING)  # Ray's logger has its own console handler
    for noisy in NOISY:  # their own console handlers stay quiet
        lg = logging.getLogger(noisy)
        if not verbose and noisy == "ray.serve":
            lg.setLevel(logging.WARNING)  # "Connecting to existing Serve app ...", deployment updates
        for h in lg.handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) and not verbose:
                h.setLevel(logging.WARNING)


def follow_config(verbose: bool) -> None:
    """The console a command set up, switched to the loaded config's `run.verbose` (from its file or the
    command line, in any spelling YAML reads as true); a library caller without our console keeps its own."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_ncl_console", False)]
    if ours and getattr(ours[0], "_ncl_verbose", False) != bool(verbose):
        setup_console(verbose=bool(verbose), stream=ours[0].stream)


def attach_run_log(run_dir: Path, name: str = "driver.log") -> Path:
    """Every log record (ours and Ray's, INFO and up) also goes to run_dir/logs/<name>."""
    path = Path(run_dir) / "logs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_ncl_file", False):
            root.removeHandler(h)
            h.close()
    handler = logging.FileHandler(path)
    handler._ncl_file = True
    handler.setLevel(logging.INFO)
    if root.getEffectiveLevel() > logging.INFO:  # a caller that never set up the console (a library user)
        root.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    for name_ in NOISY:
        logging.getLogger(name_).addHandler(handler) if not logging.getLogger(name_).propagate else None
    return path


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A progress line: `label  done/total unit  rate/s  ETA m:ss  extra`."""

    def __init__(self, label: str, total: int, unit: str = "", stream: Optional[TextIO] = None,
                 every_s: float = 15.0, tty: Optional[bool] = None):
        self.label, self.total, self.unit = label, max(0, int(total)), unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s
        self.start = time.time()
        self.done, self.extra = 0, ""
        self._last_print, self._last_done, self._width, self.closed = 0.0, -1, 0, False
        self._printed = ""  # the (count, extra) of the last plain line: never printed twice
        self._base: Optional[tuple] = None  # (time, count) of the first update: a resumed run's steps are not new

    def line(self) -> str:
        now = time.time()
        elapsed = now - self.start
        t0, d0 = self._base or (self.start, 0)
        rate = (self.done - d0) / (now - t0) if now - t0 > 0.5 and self.done > d0 else 0.0
        parts = [f"{self.label:<9s}", f"{self.done}/{self.total}" + (f" {self.unit}" if self.unit else "")]
        if self.total:
            parts.append(f"{100.0 * self.done / self.total:3.0f}%")
        unit = (self.unit or "it").rstrip("s") if self.unit != "s" else "s"
        if rate >= 0.5:
            parts.append(f"{rate:.1f} {self.unit or 'it'}/s")
        elif rate > 0:
            parts.append(f"{1 / rate:.1f} s/{unit}")
        if 0 < self.done < self.total and rate > 0:
            parts.append(f"ETA {format_duration((self.total - self.done) / rate)}")
        elif self.done >= self.total:
            parts.append(f"in {format_duration(elapsed)}")
        if self.extra:
            parts.append(self.extra)
        return "  ".join(parts)

    def update(self, done: int, extra: str = "", force: bool = False) -> None:
        """Set the count; `force` prints a plain line now (e.g. when the phase changes)."""
        self.done, self.extra = min(int(done), self.total) if self.total else int(done), extra
        now = time.time()
        if self._base is None:
            self._base = (now, self.done)
        if self.tty:
            text = self.line()
            self.stream.write("\r" + text + " " * max(0, self._width - len(text)))
            self._width = len(text)
            self.stream.flush()
        elif force or (self.done != self._last_done
                       and (now - self._last_print >= self.every_s or self._last_done < 0)):
            self._print()

    def _print(self) -> None:
        if self._printed == repr((self.done, self.extra)):  # the same count and state: only the rate would differ
            return
        self.stream.write(self.line() + "\n")
        self.stream.flush()
        self._last_print, self._last_done, self._printed = time.time(), self.done, repr((self.done, self.extra))

    def close(self, extra: Optional[str] = None) -> None:
        if self.closed:
            return
        if extra is not None:
            self.extra = extra
        if self.tty:
            self.update(self.done, self.extra)
            self.stream.write("\n")
            self.stream.flush()
        elif self._last_done != self.done or self.extra:
            self._print()
        self.closed = True
