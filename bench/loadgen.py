"""The load generator: an aiohttp client, bounded in count and in time, 127.0.0.1 only.

    python -m bench.loadgen --url URL --kind openai|api|get [--stream] [--key KEY]
        [--concurrency 64] [--count 2000] [--max-seconds 10] [--warmup 50]
        [--conversations FILE] [--history 0]

Kinds: ``openai`` posts an OpenAI Chat Completions body (a follow-up names its conversation in the
``X-Conversation-Id`` header); ``api`` posts the gateway's ``/api/chat`` body (``prompt``,
``stream``, ``conversation_id``); ``get`` sends GETs (``{conversation}`` in the URL is replaced by
the next conversation id). ``--conversations`` is a file of ids, one a line, taken round robin.

It prints one JSON object: counts, errors (with a sample), elapsed time, requests/s and latency
percentiles in ms: ``latency`` (to the end of the body), and for streams ``ttfb`` (first body
bytes) and ``first_token`` (first chunk carrying reply text). It is meant to run in its own
process, so that it does not share an event loop with what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_OPENAI_TEXT = re.compile(rb'"content":"[^"]')
_API_TEXT = re.compile(rb"event: delta")
REQUEST_TIMEOUT_S = 60.0


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK:
        raise SystemExit(f"loadgen: only 127.0.0.1 is allowed, not {host!r}")


def percentiles(values: list[float]) -> dict[str, float | None]:
    """Nearest-rank percentiles, in the unit given."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None, "n": 0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        index = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        return ordered[index]

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": ordered[-1],
            "mean": sum(ordered) / len(ordered), "n": len(ordered)}


@dataclass
class Spec:
    url: str
    kind: str
    stream: bool = False
    key: str | None = None
    conversations: list[str] = field(default_factory=list)
    history: int = 0
    model: str = "bench-model"
    agent_turns: int = 0
    """openai, not streamed: each worker runs sessions of this many calls as an agent
    framework does, every call sending the session's whole history (the replies as they
    came) and no X-Conversation-Id."""


@dataclass
class Sample:
    latency: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    first_token: list[float] = field(default_factory=list)
    ok: int = 0
    errors: int = 0
    error_sample: list[str] = field(default_factory=list)
    bytes: int = 0

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_sample) < 3:
            self.error_sample.append(text[:300])


def _history(n: int) -> list[dict[str, str]]:
    messages = []
    for i in range(n):
        messages.append({"role": "user", "content": f"Earlier question number {i}: what next?"})
        messages.append({"role": "assistant", "content": "An earlier answer, of some length, "
                         "that the model gave to that question." * 3})
    return messages


def build(spec: Spec, i: int, messages: list[dict[str, str]] | None = None,
          ) -> tuple[str, str, dict[str, str], bytes | None]:
    """Method, URL, headers and body of request number ``i`` (``messages``: an agent
    session's, for an openai body)."""
    headers: dict[str, str] = {}
    if spec.key:
        headers["Authorization"] = f"Bearer {spec.key}"
    conversation = spec.conversations[i % len(spec.conversations)] if spec.conversations else None
    prompt = f"Benchmark prompt {i}: reply with a short sentence, please."
    if spec.kind == "get":
        url = spec.url.replace("{conversation}", conversation or "")
        return "GET", url, headers, None
    headers["Content-Type"] = "application/json"
    body: dict[str, Any]
    if spec.kind == "api":
        body = {"prompt": prompt}
        if spec.stream:
            body["stream"] = True
        if conversation:
            body["conversation_id"] = conversation
    else:
        body = {"model": spec.model, "messages": messages if messages is not None else
                [*_history(spec.history), {"role": "user", "content": prompt}]}
        if spec.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if conversation:
            headers["X-Conversation-Id"] = conversation
    return "POST", spec.url, headers, json.dumps(body).encode()


async def one(session: aiohttp.ClientSession, spec: Spec, i: int, sample: Sample | None,
              messages: list[dict[str, str]] | None = None) -> bytes | None:
    """One request; the body of a non-streamed answer that succeeded, else None."""
    method, url, headers, body = build(spec, i, messages)
    data = None
    text_marker = _API_TEXT if spec.kind == "api" else _OPENAI_TEXT
    end_marker = b"event: done" if spec.kind == "api" else b"data: [DONE]"
    started = time.perf_counter()
    first = token = None
    try:
        async with session.request(method, url, headers=headers, data=body) as resp:
            if spec.stream and resp.status == 200:
                carry = b""
                ended = False
                size = 0
                async for chunk in resp.content.iter_any():
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    size += len(chunk)
                    window = carry + chunk
                    if token is None and text_marker.search(window):
                        token = now
                    if end_marker in window:
                        ended = True
                    carry = window[-24:]
                if not ended:
                    raise RuntimeError("stream ended without its end marker")
            else:
                data = await resp.read()
                size = len(data)
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
    except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
        if sample is not None:
            sample.error(f"{type(exc).__name__}: {exc}")
        return None
    end = time.perf_counter()
    if sample is None:
        return data
    sample.ok += 1
    sample.bytes += size
    sample.latency.append((end - started) * 1000)
    if spec.stream:
        sample.ttfb.append(((first or end) - started) * 1000)
        sample.first_token.append(((token or end) - started) * 1000)
    return data


class AgentSession:
    """One worker's agent: calls of ``turns`` each, the history growing by the question and
    the reply as it came; a new session after the last call, or after a failure."""

    def __init__(self, turns: int) -> None:
        self.turns = turns
        self.history: list[dict[str, str]] = []

    def messages(self, i: int) -> list[dict[str, str]]:
        if len(self.history) >= 2 * self.turns:
            self.history = []
        step = len(self.history) // 2
        return [*self.history, {"role": "user",
                                "content": f"Agent step {step} of request {i}: go on."}]

    def answered(self, messages: list[dict[str, str]], data: bytes | None) -> None:
        try:
            reply = json.loads(data or b"")["choices"][0]["message"]["content"]
        except (ValueError, LookupError, TypeError):
            self.history = []
            return
        self.history = [*messages, {"role": "assistant", "content": reply}]


async def drive(spec: Spec, *, concurrency: int, count: int, max_seconds: float,
                warmup: int = 0) -> dict[str, Any]:
    check_loopback(spec.url)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        counter = iter(range(10**9))

        async def phase(n: int, sample: Sample | None, deadline: float) -> None:
            remaining = n

            async def worker() -> None:
                nonlocal remaining
                agent = AgentSession(spec.agent_turns) if spec.agent_turns else None
                while remaining > 0 and time.perf_counter() <= deadline:
                    remaining -= 1
                    i = next(counter)
                    if agent is None:
                        await one(session, spec, i, sample)
                        continue
                    messages = agent.messages(i)
                    agent.answered(messages, await one(session, spec, i, sample, messages))

            await asyncio.gather(*(worker() for _ in range(concurrency)))

        if warmup:
            await phase(warmup, None, time.perf_counter() + max(5.0, max_seconds))
        sample = Sample()
        started = time.perf_counter()
        await asyncio.wait_for(phase(count, sample, started + max_seconds),
                               max_seconds + REQUEST_TIMEOUT_S + 5)
        elapsed = time.perf_counter() - started
    result: dict[str, Any] = {
        "kind": spec.kind, "stream": spec.stream, "concurrency": concurrency,
        "requested": count, "ok": sample.ok, "errors": sample.errors,
        "error_sample": sample.error_sample, "elapsed_s": elapsed,
        "rps": sample.ok / elapsed if elapsed > 0 else 0.0, "bytes": sample.bytes,
        "latency": percentiles(sample.latency),
    }
    if spec.stream:
        result["ttfb"] = percentiles(sample.ttfb)
        result["first_token"] = percentiles(sample.first_token)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--kind", choices=("openai", "api", "get"), default="openai")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--key")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--conversations", help="file of conversation ids, one a line")
    parser.add_argument("--history", type=int, default=0,
                        help="earlier user/assistant pairs in an openai body")
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--agent-turns", type=int, default=0,
                        help="openai, not streamed: sessions of this many calls, each sending "
                             "the history with the replies as they came")
    args = parser.parse_args(argv)
    if args.agent_turns and (args.kind != "openai" or args.stream):
        parser.error("--agent-turns is for --kind openai, not streamed")
    conversations: list[str] = []
    if args.conversations:
        with open(args.conversations, encoding="utf-8") as handle:
            conversations = [line.strip() for line in handle if line.strip()]
    spec = Spec(url=args.url, kind=args.kind, stream=args.stream, key=args.key,
                conversations=conversations, history=args.history, model=args.model,
                agent_turns=args.agent_turns)
    result = asyncio.run(drive(spec, concurrency=max(1, args.concurrency),
                               count=max(1, args.count), max_seconds=args.max_seconds,
                               warmup=args.warmup))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
