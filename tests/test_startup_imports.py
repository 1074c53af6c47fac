"""What a gateway's start imports: nothing that only some configurations use (each costs start-up
time, issue 14). A gateway on SQLite without proxies, whose web UI has rendered no page yet,
needs neither the PostgreSQL driver, the SOCKS client, nor the Markdown and template engines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LATER = ("asyncpg", "python_socks", "markdown_it", "jinja2", "aiohttp_jinja2", "prometheus_client",
         "cryptography")


def test_the_gateway_imports_only_what_every_start_needs() -> None:
    probe = ("import sys, bot, web.app; "
             f"print(sorted(m for m in {LATER!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout
