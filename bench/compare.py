"""Before/after: two gateways side by side, measured in alternation, in the same run.

    python -m bench.compare --a /path/to/checkout-before --b /path/to/checkout-after
        [--a-log-level INFO] [--b-log-level INFO] [--a-extra-config TOML] [--b-extra-config TOML]
        [--reps 6] [--seconds 3] [--count 3000] [--modes api/json,api/stream,v1/json,v1/stream]
        [--follow-ups]

``v1/json-history`` sends a made-up history of 9 exchanges without ``X-Conversation-Id``;
``v1/json-agent`` runs agent sessions of 19 calls (histories of 9 exchanges on average) that
send the replies as they came.

On a shared machine requests/s drift with other people's work by more than most optimisations
gain. Here both gateways (each its own ``bot.py``, database and folder, against one stub) are
loaded one after the other, short runs, many times, and each B run is compared with the A run
next to it: the median of those paired ratios (and their range) is the figure to trust. Each run
also reports the CPU the gateway process spent per request.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import run as bench

MODES = ("api/json", "api/stream", "v1/json", "v1/stream")


def _gateway(name: str, root: Path, tmp: Path, stub_port: int, log_level: str,
             extra: str) -> bench.Gateway:
    gateway = bench.Gateway(name, tmp / name, stub_port, log_level,
                            extra_config=extra.replace("\\n", "\n"), root=root.resolve())
    gateway.setup()
    return gateway


def _target(gateway: bench.Gateway, mode: str) -> tuple[bench.Target, bool]:
    api, kind = mode.split("/")
    target = (bench.Target(gateway.name, gateway.base + bench.CHAT_PATH, "api", gateway.user_key)
              if api == "api" else
              bench.Target(gateway.name, gateway.base + bench.V1_PATH, "openai",
                           gateway.user_key))
    return target, kind.startswith("stream")


def measure(gateway: bench.Gateway, mode: str, args: argparse.Namespace, tmp: Path,
            serial: list[int]) -> dict[str, Any]:
    target, stream = _target(gateway, mode)
    conversations = None
    history = 0
    if args.follow_ups:
        serial[0] += 1
        conversations = bench.create_conversations(
            gateway, args.conversations, tmp / f"conversations-{serial[0]}.txt")
        history = (1 + args.count // args.conversations // 2) if target.kind == "openai" else 0
    agent_turns = 0
    if mode.endswith("-agent"):  # agent sessions (bench/loadgen.py --agent-turns)
        agent_turns = 19
    elif mode.endswith("-history"):  # a made-up history, no X-Conversation-Id
        history = 9
    result = bench.loadgen(target, stream=stream, concurrency=args.concurrency,
                           count=args.count, seconds=args.seconds, warmup=args.warmup,
                           conversations=conversations, history=history,
                           agent_turns=agent_turns)
    cpu = result["cpu"].get(f"cpu_s_{gateway.name}", 0.0)
    result["gateway_cpu_ms_per_request"] = cpu * 1000 / max(1, result["requests_incl_warmup"])
    return result


def _latency(runs: list[dict[str, Any]]) -> str:
    p50 = statistics.median(r["latency"]["p50"] for r in runs)
    p99 = statistics.median(r["latency"]["p99"] for r in runs)
    return f"{p50:.2f} / {p99:.2f}"


def compare(args: argparse.Namespace) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="gw-compare-"))
    rows: list[str] = []
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        _, stub_port = bench.start_stub(tmp, argparse.Namespace(
            stub_delay_ms=args.stub_delay_ms, chunks=args.chunks, chunk_delay_ms=0.0))
        a = _gateway("gateway-a", args.a, tmp, stub_port, args.a_log_level, args.a_extra_config)
        b = _gateway("gateway-b", args.b, tmp, stub_port, args.b_log_level, args.b_extra_config)
        serial = [0]
        modes = [m for m in args.modes.split(",") if m]
        for rep in range(args.reps):
            for mode in modes:
                # Alternate who goes first, so neither always follows the other's load.
                order = (a, b) if rep % 2 == 0 else (b, a)
                for gateway in order:
                    print(f"  rep {rep + 1}/{args.reps} {mode} {gateway.name}", file=sys.stderr,
                          flush=True)
                    raw.setdefault(mode, {}).setdefault(gateway.name, []).append(
                        measure(gateway, mode, args, tmp, serial))
    finally:
        bench.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    rows.append("| mode | A req/s | B req/s | B/A req/s | A CPU ms/req | B CPU ms/req | B/A CPU "
                "| A p50 / p99 ms | B p50 / p99 ms | errors |")
    rows.append("|---|---|---|---|---|---|---|---|---|---|")
    for mode, by in raw.items():
        ra, rb = by.get("gateway-a", []), by.get("gateway-b", [])
        rps_ratio = [y["rps"] / x["rps"] for x, y in zip(ra, rb, strict=False) if x["rps"]]
        cpu_ratio = [y["gateway_cpu_ms_per_request"] / x["gateway_cpu_ms_per_request"]
                     for x, y in zip(ra, rb, strict=False) if x["gateway_cpu_ms_per_request"]]
        errors = sum(r["errors"] for r in ra + rb)
        rows.append(
            f"| {mode} | {statistics.median(r['rps'] for r in ra):.0f} "
            f"| {statistics.median(r['rps'] for r in rb):.0f} | {bench.spread(rps_ratio)} "
            f"| {statistics.median(r['gateway_cpu_ms_per_request'] for r in ra):.2f} "
            f"| {statistics.median(r['gateway_cpu_ms_per_request'] for r in rb):.2f} "
            f"| {bench.spread(cpu_ratio)} | {_latency(ra)} | {_latency(rb)} | {errors} |")
    noise = bench._noise()
    a_extra = f", {args.a_extra_config}" if args.a_extra_config else ""
    b_extra = f", {args.b_extra_config}" if args.b_extra_config else ""
    header = (f"A = {args.a} ({args.a_log_level}{a_extra}), B = {args.b} ({args.b_log_level}"
              f"{b_extra}); "
              f"{'follow-ups' if args.follow_ups else 'new conversations'}, "
              f"c={args.concurrency}, {args.reps} paired runs of {args.count} requests "
              f"(≤ {args.seconds} s); other processes used {noise} of the cores.")
    return header + "\n\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", type=Path, default=bench.ROOT, help="checkout A (before)")
    parser.add_argument("--b", type=Path, default=bench.ROOT, help="checkout B (after)")
    parser.add_argument("--a-log-level", default="INFO")
    parser.add_argument("--b-log-level", default="INFO")
    parser.add_argument("--a-extra-config", default="")
    parser.add_argument("--b-extra-config", default="")
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--follow-ups", action="store_true")
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument("--stub-delay-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=16)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    bench.stop_on_sigterm()
    try:
        text = compare(args)
    finally:
        bench.stop_all()
    print(text)
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
