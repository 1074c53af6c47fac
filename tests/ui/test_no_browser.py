"""Without Chromium, the browser tests are skipped, never passed, and pytest's summary says so
loudly with the command that installs it; in CI (which installs it) its absence fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ONE_BROWSER_TEST = "tests/ui/test_access_token.py"


def run_without_browser(**env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CI"}
    environ |= {"UI_CHROMIUM": "/nonexistent/chromium", **env}
    return subprocess.run(
        [sys.executable, "-m", "pytest", ONE_BROWSER_TEST, "-p", "no:randomly", "-q",
         "--no-header"], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120,
        check=False)


def test_without_chromium_the_browser_tests_are_skipped_loudly() -> None:
    done = run_without_browser()
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert " passed" not in out and " skipped" in out
    assert "BROWSER TESTS DID NOT RUN" in out
    assert "To run them: sudo apt-get install chromium" in out


def test_in_ci_a_missing_chromium_fails() -> None:
    done = run_without_browser(CI="true")
    assert done.returncode == 1
    assert "/nonexistent/chromium is missing: sudo apt-get install chromium" in done.stdout
