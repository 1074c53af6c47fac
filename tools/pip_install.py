"""``pip install -r FILE`` that says what it is doing: the Makefile's installer.

A plain quiet install sits silent for minutes while llama-cpp-python compiles llama.cpp. This
runs pip verbosely, keeps its whole output in a log file, and shows only what a person waiting
wants: which package is being built, how far the build is (the compiler's own percentage or
step count), how long it has taken, and at the end the total time. On a failure it shows the
end of the log and where the rest is.

    python tools/pip_install.py -r requirements-local.txt [--log .venv/install.log]

Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import time
from pathlib import Path

PROGRESS = re.compile(r"^\s*\[\s*(\d+)%\]|^\s*\[(\d+)/(\d+)\]")
"""A build step: make's ``[ 42%] Building ...`` or ninja's ``[12/80] ...``."""
BUILDING = re.compile(r"Building wheel for (\S+) \(")
SHOWN = re.compile(r"^(Successfully installed|Using cached \S+\.whl|ERROR:|error:)")
EVERY_S = 20.0
"""A progress line at least this often while a build runs, even when its percentage stays."""
TAIL_LINES = 40


def elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def percent(line: str) -> int | None:
    """How far a build is, from one line of its output; None for other lines."""
    match = PROGRESS.match(line)
    if match is None:
        return None
    if match.group(1) is not None:
        return int(match.group(1))
    done, total = int(match.group(2)), int(match.group(3))
    return 100 * done // total if total else None


class Reporter:
    """Turns pip's verbose lines into the few a person reads."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.package = ""
        self.build_started = 0.0
        self.shown_percent = -1
        self.shown_at = 0.0

    def line(self, line: str, now: float) -> str | None:
        building = BUILDING.search(line)
        if building and line.rstrip().endswith("started"):
            self.package, self.build_started = building.group(1), now
            self.shown_percent, self.shown_at = -1, now
            return f"  building {self.package} from source (once: pip caches the wheel)"
        if building and line.rstrip().endswith(("done", "finished with status 'done'")):
            return f"  built {self.package} in {elapsed(now - self.build_started)}"
        if SHOWN.match(line):
            return "  " + line.strip()[:300]
        step = percent(line)
        if step is None or not self.package:
            return None
        if step >= self.shown_percent + 5 or now - self.shown_at >= EVERY_S:
            self.shown_percent, self.shown_at = step, now
            return f"  {self.package}: {step}% built ({elapsed(now - self.build_started)})"
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-r", dest="requirements", required=True)
    parser.add_argument("--log", default=".venv/install.log")
    args = parser.parse_args(argv)
    log_path = Path(args.log)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"Installing {args.requirements} (pip's full output: {log_path})", flush=True)
    reporter = Reporter(started)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    command = [sys.executable, "-m", "pip", "install", "-v", "--progress-bar", "off",
               "-r", args.requirements]
    with log_path.open("w", encoding="utf-8") as log, subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            errors="replace", bufsize=1) as pip:
        assert pip.stdout is not None
        for line in pip.stdout:
            log.write(line)
            tail.append(line.rstrip())
            shown = reporter.line(line, time.monotonic())
            if shown is not None:
                print(shown, flush=True)
    took = elapsed(time.monotonic() - started)
    if pip.returncode != 0:
        print("\n".join(tail), file=sys.stderr)
        print(f"FAILED: installing {args.requirements} (after {took}); the whole output is in "
              f"{log_path}", file=sys.stderr)
        return pip.returncode
    print(f"Installed {args.requirements} in {took}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
