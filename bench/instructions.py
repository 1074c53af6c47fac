"""Instructions per request under callgrind: the gateway beside the bare forwarders.

    python -m bench.instructions                  # make bench-instructions, ~10 minutes
        [--modes v1/json,v1/stream,api/json,api/stream,api/json-follow-up,...]
        [--count 200] [--warmup 40] [--concurrency 8] [--gateway-root DIR]
        [--extra-config TOML] [--quick]

Requests per second move with the machine's load; the instructions a process executes to serve
a request hardly do. Each hop (the aiohttp forwarder on asyncio, the same on uvloop, the
gateway with its real config and SQLite file) runs under ``valgrind --tool=callgrind`` with
instrumentation off while it starts. Then, for each mode: instrumentation on, a warm-up, the
counters zeroed, ``--count`` requests from the load generator (outside valgrind, against the
stub upstream which also runs outside), the counters dumped once the processes are idle again
(work a load leaves behind, such as ``/api/chat``'s batched titles, is that load's).
Instructions per request are the dump's total (every thread of the process: the event loop,
SQLite's and the log's threads) over the requests. The ratios are taken against the
forwarder's figure for the same kind of request (``/v1`` JSON or stream: the forwarder has no
``/api/chat``), as the throughput ratios of ``bench/run.py`` are.

Modes: ``v1/json``, ``v1/stream``, ``api/json``, ``api/stream``, each with ``-follow-up`` for a
follow-up in a stored conversation (the forwarder's request then carries a history of the
same size as in bench/run.py's case 3); ``v1/json-history`` and ``v1/stream-history``: a new
conversation whose request carries that history, without ``X-Conversation-Id`` (what an agent
framework sends, a made-up history that no stored turn ends: every request a new conversation
to the gateway); ``v1/json-agent``: agent sessions (``bench/loadgen.py --agent-turns``), each
call sending the session's history with the replies as they came, so the gateway continues
the conversation it recognises. Target (issue 14): at most 1.8 times the forwarder's
instructions on ``v1/json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import run as bench

MODES = ("v1/json", "v1/stream", "api/json", "api/stream", "v1/json-follow-up",
         "v1/stream-follow-up", "api/json-follow-up", "api/stream-follow-up",
         "v1/json-history", "v1/stream-history", "v1/json-agent")
TARGET_V1_JSON = 1.8
CALLGRIND = ("valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
             "--separate-threads=yes")
"""Each thread's counts in a file of its own (``callgrind.out.PID.DUMP-THREAD``): the total is
their sum, and the event loop's thread (the first) is told apart from SQLite's and the log's."""


class Callgrind:
    """One process under callgrind: instrumentation on, counters zeroed, dumped and read."""

    def __init__(self, child: bench.Child, folder: Path) -> None:
        self.child = child
        self.folder = folder

    def control(self, *options: str) -> None:
        done = subprocess.run(["callgrind_control", *options, str(self.child.pid)],
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0 or "OK" not in done.stdout:
            raise RuntimeError(f"callgrind_control {' '.join(options)} failed: "
                               f"{done.stdout[-500:]} {done.stderr[-500:]}")

    def dumps(self) -> set[Path]:
        return set(self.folder.glob(f"callgrind.out.{self.child.pid}.*"))

    def measure(self, load: Any) -> tuple[int, int, dict[str, Any]]:
        """Instructions executed by the process while ``load()`` runs (all its threads, and
        the first thread's: the event loop's), and the load's result."""
        before = self.dumps()
        self.control("--zero")
        result = load()
        self.control("--dump")
        new = self.dumps() - before
        if not new:
            raise RuntimeError(f"no callgrind dump appeared for {self.child.name}")
        total = main = 0
        for path in new:
            summary = next((line for line in path.read_text(errors="replace").splitlines()
                            if line.startswith("summary:")), None)
            if summary is None:
                raise RuntimeError(f"no summary line in {path}")
            total += int(summary.split()[1])
            if path.name.endswith("-01"):
                main += int(summary.split()[1])
        return total, main, result


def _launcher(folder: Path) -> tuple[str, ...]:
    return (*CALLGRIND, f"--callgrind-out-file={folder}/callgrind.out.%p")


def measure_target(name: str, hop: Callgrind, targets: dict[str, bench.Target],
                   modes: list[str], args: argparse.Namespace,
                   conversations: dict[str, Path]) -> dict[str, dict[str, Any]]:
    hop.control("--instr=on")
    history = 1 + bench.FULL.c64_count // bench.FULL.conversations // 2
    out: dict[str, dict[str, Any]] = {}
    for mode in modes:
        api, kind = mode.split("/")
        stream = kind.startswith("stream")
        follow_up = kind.endswith("-follow-up")
        target = targets.get(api)
        if target is None or (kind.endswith(("-history", "-agent"))
                              and target.kind != "openai"):
            continue
        convs = conversations.get(mode) if follow_up else None
        hist = history if (follow_up or kind.endswith("-history")) \
            and target.kind == "openai" else 0
        # Sessions whose histories average the same size as the -history modes'.
        agent = 2 * history + 1 if kind.endswith("-agent") else 0
        if follow_up and name == "gateway" and convs is None:
            continue

        def load(count: int, warmup: int = 0, target: bench.Target = target,
                 stream: bool = stream, convs: Path | None = convs,
                 hist: int = hist, agent: int = agent) -> dict[str, Any]:
            return bench.loadgen(target, stream=stream, concurrency=args.concurrency,
                                 count=count, seconds=3600, warmup=warmup,
                                 conversations=convs, history=hist, agent_turns=agent)

        print(f"  {name} {mode}: warm-up {args.warmup}, then {args.count} requests",
              file=sys.stderr, flush=True)
        load(args.warmup)
        started = time.perf_counter()
        instructions, main, result = hop.measure(lambda load=load: load(args.count))
        requests = result["ok"] + result["errors"]
        out[mode] = {"instructions": instructions, "requests": requests,
                     "errors": result["errors"], "per_request": instructions / max(1, requests),
                     "event_loop_per_request": main / max(1, requests),
                     "seconds": time.perf_counter() - started}
        if result["errors"]:
            print(f"  ! {name} {mode}: {result['errors']} errors {result['error_sample'][:1]}",
                  file=sys.stderr)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    modes = [m for m in args.modes.split(",") if m]
    tmp = Path(tempfile.mkdtemp(prefix="gw-instructions-"))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    ref_modes = sorted({m.split("/")[1] for m in modes})  # the forwarder has only /v1
    try:
        _, stub_port = bench.start_stub(tmp, argparse.Namespace(
            stub_delay_ms=0.0, chunks=args.chunks, chunk_delay_ms=0.0))
        if args.references_from:
            # The forwarders' figures do not change with the gateway: taken from a past run.
            past = json.loads(args.references_from.read_text())["results"]
            results.update({k: v for k, v in past.items() if k != "gateway"})
        for name, uvloop in (() if args.references_from else
                             (("forwarder", False), ("forwarder-uvloop", True))):
            child, port = bench.start_forwarder(tmp, stub_port, name, uvloop=uvloop,
                                                launcher=_launcher(tmp), timeout=300)
            target = bench.Target(name, f"http://{bench.HOST}:{port}{bench.V1_PATH}", "openai")
            try:
                results[name] = measure_target(name, Callgrind(child, tmp), {"v1": target},
                                               [f"v1/{m}" for m in ref_modes], args, {})
            finally:
                child.stop()
        gateway = bench.Gateway("gateway", tmp / "gateway", stub_port, args.gateway_log_level,
                                extra_config=args.extra_config.replace("\\n", "\n"),
                                launcher=_launcher(tmp), start_timeout=300)
        if args.gateway_root:
            gateway.root = args.gateway_root.resolve()
        gateway.setup()
        try:
            conversations: dict[str, Path] = {}
            assert gateway.child is not None
            hop = Callgrind(gateway.child, tmp)
            for mode in modes:
                if mode.endswith("-follow-up"):
                    # Made before the counters are zeroed; each mode continues its own.
                    conversations[mode] = bench.create_conversations(
                        gateway, args.conversations, tmp / f"conversations-{len(conversations)}")
            targets = {"api": bench.Target("gateway", gateway.base + bench.CHAT_PATH, "api",
                                           gateway.user_key),
                       "v1": bench.Target("gateway", gateway.base + bench.V1_PATH, "openai",
                                          gateway.user_key)}
            results["gateway"] = measure_target("gateway", hop, targets, modes, args,
                                                conversations)
        finally:
            gateway.stop()
    finally:
        bench.stop_all()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"modes": modes, "results": results}


def _reference(results: dict[str, dict[str, dict[str, Any]]], name: str,
               mode: str) -> float | None:
    kind = mode.split("/")[1]
    ref = results.get(name, {}).get(f"v1/{kind}")
    return ref["per_request"] if ref else None


def table(report: dict[str, Any]) -> str:
    results = report["results"]
    lines = ["| mode | forwarder (asyncio) | forwarder (uvloop) | gateway | gateway's event loop "
             "| gateway / forwarder | gateway / uvloop forwarder | target |",
             "|---|---|---|---|---|---|---|---|"]
    for mode in report["modes"]:
        gw = results.get("gateway", {}).get(mode)
        if gw is None:
            continue
        fwd = _reference(results, "forwarder", mode)
        uv = _reference(results, "forwarder-uvloop", mode)
        per = gw["per_request"]

        def k(value: float | None) -> str:
            return "n/a" if value is None else f"{value / 1000:,.0f} k"

        def ratio(ref: float | None, per: float = per) -> str:
            return "n/a" if not ref else f"{per / ref:.2f}"

        target = ""
        if mode == "v1/json" and fwd and uv:
            target = (f"≤ {TARGET_V1_JSON}: asyncio {_verdict(per / fwd)}, "
                      f"uvloop {_verdict(per / uv)}")
        lines.append(f"| {mode} | {k(fwd)} | {k(uv)} | {k(per)} "
                     f"| {k(gw.get('event_loop_per_request'))} | {ratio(fwd)} | {ratio(uv)} "
                     f"| {target} |")
    return "\n".join(lines)


def _verdict(ratio: float) -> str:
    return "**yes**" if ratio <= TARGET_V1_JSON else "**no**"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--conversations", type=int, default=40,
                        help="conversations each follow-up mode continues")
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--gateway-log-level", default="INFO")
    parser.add_argument("--gateway-root", type=Path,
                        help="run bot.py from this checkout instead (to compare two versions)")
    parser.add_argument("--extra-config", default="")
    parser.add_argument("--references-from", type=Path, metavar="JSON",
                        help="take the forwarders' figures from this earlier result file")
    parser.add_argument("--label", default="")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="a few requests: checks that it runs, not a measure")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.warmup, args.conversations = 10, 2, 3
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("bench.instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    bench.stop_on_sigterm()
    try:
        report = run(args)
    finally:
        bench.stop_all()
    text = table(report)
    revision = bench._git_revision() if not args.gateway_root else str(args.gateway_root)
    header = (f"Instructions per request (callgrind, every thread of the process), revision "
              f"{revision}; {args.count} requests a mode after {args.warmup} of warm-up, "
              f"c={args.concurrency}; stub {args.chunks} chunks a streamed reply; gateway log "
              f"level {args.gateway_log_level}"
              f"{'; extra config ' + repr(args.extra_config) if args.extra_config else ''}; "
              f"{time.perf_counter() - started:.0f} s.")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"instructions-{args.label + '-' if args.label else ''}{stamp}"
    (bench.RESULTS / f"{name}.json").write_text(json.dumps(
        {**report, "header": header, "table": text, "args": {k: str(v) for k, v in
                                                              vars(args).items()}}, indent=1))
    (bench.RESULTS / f"{name}.md").write_text(header + "\n\n" + text + "\n")
    print(header + "\n\n" + text)
    errors = sum(m["errors"] for r in report["results"].values() for m in r.values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
