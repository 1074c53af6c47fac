"""CPU a request of each thread of the gateway, at concurrency 1 and 64 (issue 14, third pass).

Added latency at concurrency 1 is either CPU (the event loop's, or a thread's the request
waits for) or waiting (thread hand-offs, the GIL, timers). This runs the stub, the uvloop
forwarder and one gateway (as bench/run.py does), loads each at c=1 and at c=64, and reads
every thread's user and system time from /proc before and after: the event loop's CPU a
request at c=1 beside the added latency says how much of that latency is CPU.

    python -m bench.thread_cpu [--count 2000] [--modes v1,api]

Threads are named by the order the gateway starts them (bot.py, then the SQLite store):
0 the event loop, 1 the log writer, 2 SQLite's writer, 3 its reader, 4 its checkpointer;
further ones (uvloop's workers) are summed as "other".
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from . import run as R

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
NAMES = ["event loop", "log writer", "SQLite writer", "SQLite reader", "checkpointer"]


def thread_ticks(pid: int) -> list[tuple[int, int]]:
    """(tid, user + system ticks) of each thread, in the order the threads were started."""
    out = []
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        out.append((tid, int(fields[11]) + int(fields[12])))  # utime, stime
    return out


def measure(target: R.Target, pid: int, concurrency: int, count: int) -> dict[str, float]:
    before = dict(thread_ticks(pid))
    result = R.loadgen(target, concurrency=concurrency, count=count, seconds=60, warmup=0)
    after = thread_ticks(pid)
    done = result["ok"] + result["errors"]
    row: dict[str, float] = {"p50": result["latency"]["p50"], "p99": result["latency"]["p99"]}
    for index, (tid, ticks) in enumerate(after):
        name = NAMES[index] if index < len(NAMES) else "other"
        row[name] = row.get(name, 0.0) + (ticks - before.get(tid, 0)) * TICK_MS / done
    row["total"] = sum(v for k, v in row.items() if k not in ("p50", "p99"))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--modes", default="v1,api")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gw-threads-"))
    stub_args = argparse.Namespace(stub_delay_ms=0.0, chunks=16, chunk_delay_ms=0.0)
    try:
        stub, stub_port = R.start_stub(tmp, stub_args)
        forwarder, forwarder_port = R.start_forwarder(tmp, stub_port, uvloop=True)
        gateway = R.Gateway("gateway", tmp / "gateway", stub_port, "INFO")
        gateway.setup()
        targets = {
            "direct": (R.Target("direct", f"http://{R.HOST}:{stub_port}{R.V1_PATH}", "openai"),
                       stub.pid),
            "forwarder": (R.Target("forwarder", f"http://{R.HOST}:{forwarder_port}{R.V1_PATH}",
                                   "openai"), forwarder.pid),
            "v1": (R.Target("v1", gateway.base + R.V1_PATH, "openai", gateway.user_key),
                   gateway.pid),
            "api": (R.Target("api", gateway.base + R.CHAT_PATH, "api", gateway.user_key),
                    gateway.pid),
        }
        names = ["direct", "forwarder", *args.modes.split(",")]
        columns = ["event loop", "log writer", "SQLite writer", "other", "total"]
        print("| target | c | latency p50 / p99 (ms) | CPU ms a request: "
              + " / ".join(columns) + " |")
        print("|---|---|---|---|")
        for concurrency in (1, 64):
            for name in names:
                target, pid = targets[name]
                R.loadgen(target, concurrency=concurrency, count=200, seconds=30)  # warm-up
                row = measure(target, pid, concurrency, args.count)
                cpu = " / ".join(f"{row.get(c, 0.0):.2f}" for c in columns)
                print(f"| {name} | {concurrency} | {row['p50']:.2f} / {row['p99']:.2f} | {cpu} |",
                      flush=True)
        return 0
    finally:
        R.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
