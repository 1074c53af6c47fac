"""Where the gateway's time goes, from a py-spy profile in raw (collapsed) format.

    python -m bench.profile_summary bench/results/profile-api-json-0.txt [...]

``python -m bench.run --py-spy .venv/bin/py-spy --py-spy-format raw`` records one such file per
gateway measurement under load. Each sample is attributed to the innermost frame that belongs to a
known part of the hot path (auth, account choice, storing a turn, JSON, SSE, logging, ...), so
that, for example, logging done inside the upstream call counts as logging, and a socket write
made while sending an SSE event counts as SSE. Samples of the
SQLite worker threads are counted apart: they run SQL outside the GIL most of the time.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

# (category, frame patterns), checked from the innermost frame outwards; first match wins.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("logging (upstream log line, access log)", ("logging/", "AccessLogger.")),
    ("JSON encode/decode", ("json/encoder", "json/decoder", "json/__init__", "dumps (",
                            "loads (")),
    ("SQLite calls from the event loop (aiosqlite hop)", ("aiosqlite/",)),
    ("auth: key lookup, touch", ("Gateway.authenticate", "Gateway._touch", "PrincipalRepo.by_key",
                                 "hash_key")),
    ("acting_as / principals", ("Gateway.acting_as", "PrincipalRepo.")),
    ("storing the turn (transaction)", ("create_with_turn", "append_turn", "Store.transaction",
                                        "log_usage")),
    ("reading history / conversation", ("recent_turns", "ConversationRepo.get", "_conversation (",
                                        "_turn (", "build_messages", "ChatService._messages")),
    ("account choice", ("AccountPool.", "Account.")),
    ("SSE out: writing events to the caller", ("_SseListener", "_ChunkWriter", "_Progress")),
    ("SSE in: reading the upstream stream", ("_read_stream", "sse_data", "StreamReader.",
                                             "streams.py")),
    ("upstream client (aiohttp client request/response)", (
        "aiohttp/client", "aiohttp/connector", "ClientSession.", "ClientRequest.",
        "ClientResponse.", "complete (core/upstream", "_read_json")),
    ("request parsing (params, body)", ("read_params", "Params.", "_read_body", "chat_request",
                                        "parse_completion_request", "BaseRequest.")),
    ("building the reply (enriched, success, models)", ("enriched", "success (", "public (",
                                                        "_completion (")),
    ("uuid / clocks", ("uuid", "utc_now", "iso (", "strftime")),
]
# Checked only when no specific part above matched: where the low-level work was done for.
GENERIC: list[tuple[str, tuple[str, ...]]] = [
    ("other gateway code (chat service, handlers)", ("core/", "web/")),
    ("aiohttp server (HTTP parsing, responses, middlewares)", (
        "aiohttp/web", "aiohttp/http", "aiohttp/base_protocol", "aiohttp/helpers",
        "aiohttp/payload")),
    ("event loop, transports, selector", ("asyncio/", "selectors")),
]

_THREAD = re.compile(r"^thread \((?:0x)?[0-9a-fA-F]+\): (?P<name>.*)$")


def categorise(frames: list[str]) -> str:
    for table in (CATEGORIES, GENERIC):
        for frame in reversed(frames):
            for name, patterns in table:
                if any(p in frame for p in patterns):
                    if any("._title (" in f for f in frames):
                        return f"title request: {name}"
                    return name
    return "other"


def summarise(path: Path) -> tuple[int, collections.Counter[str], collections.Counter[str],
                                   collections.Counter[str]]:
    main: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = "?"
        if frames and (m := _THREAD.match(frames[0])):
            thread = m.group("name")
            frames = frames[1:]
        total += count
        threads[thread] += count
        if thread == "MainThread":
            main[categorise(frames)] += count
            leaves[frames[-1] if frames else "?"] += count
    return total, threads, main, leaves


def report(path: Path, top: int) -> str:
    total, threads, main, leaves = summarise(path)
    main_total = sum(main.values()) or 1
    lines = [f"## {path.name}: {total} samples; threads: " + ", ".join(
        f"{name} {count * 100 / max(1, total):.0f}%" for name, count in threads.most_common())]
    lines.append("| part of the hot path (main thread) | share |")
    lines.append("|---|---|")
    for name, count in main.most_common():
        lines.append(f"| {name} | {count * 100 / main_total:.1f}% |")
    lines.append("")
    lines.append(f"Top {top} innermost frames (main thread):")
    for frame, count in leaves.most_common(top):
        lines.append(f"  {count * 100 / main_total:5.1f}%  {frame}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profiles", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print("\n\n".join(report(p, args.top) for p in args.profiles))


if __name__ == "__main__":
    main()
