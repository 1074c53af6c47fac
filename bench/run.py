"""The benchmark of issue 6: what the gateway costs, measured against a stub upstream reached
directly and through a bare forwarder, in the same run.

    python -m bench.run            # the full benchmark (make bench), ~15 minutes
    python -m bench.run --quick    # tiny counts, same code paths (make bench-quick), < 1 minute

Every process is separate and listens on 127.0.0.1 only: the stub upstream, the bare forwarder,
the gateway (``python bot.py --config <generated toml>``, a real SQLite file in a temporary
folder, one account pointing at the stub, INFO logging to a file as ``make run`` does) and the
load generator. Each case runs several repetitions, interleaving the targets, and reports the
medians. It prints one markdown table and writes it, with every raw figure and the machine, to
``bench/results/`` (JSON and markdown).

Cases: 1. added latency at concurrency 1; 2. throughput at concurrency 64; 3. follow-ups at
concurrency 64 over 500 conversations; 4. recall and throughput on a database seeded with 10,000
users, 100,000 conversations and 1,000,000 turns, against an empty one; 5. resident memory after
start, 1,000 and 20,000 requests; 6. start-up time to the first answered request; 7. PostgreSQL:
throughput of one gateway process and of two on one database (a throwaway cluster, as the
tests start it).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_ROOT = ROOT
"""Where ``bot.py`` runs from: this checkout, or another one (``--gateway-root``) to compare."""
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
SOURCES = ("bot.py", "discord_bot.py", "core", "web", "cogs")
"""Compiled before any gateway starts, as ``make run`` does (see its ``bytecode`` step)."""
HOST = "127.0.0.1"
MODEL = "bench-model"
CHAT_PATH = "/api/chat"
V1_PATH = "/v1/chat/completions"
ADDED_P50_MS, ADDED_P99_MS = 0.7, 2.0
"""Added latency at concurrency 1 (issue 14's targets; issue 6 asked 1 and 3 ms)."""


# ------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Plan:
    """How much of everything: the full benchmark, or the quick one that only checks it runs."""

    reps: int
    c1_count: int
    c1_seconds: float
    c1_warmup: int
    c64_count: int
    c64_seconds: float
    c64_warmup: int
    conversations: int
    seed_users: int
    seed_conversations: int
    seed_turns: int
    recall_count: int
    memory_steps: tuple[int, ...]
    startups: int
    concurrency: int = 64


FULL = Plan(reps=3, c1_count=2000, c1_seconds=8, c1_warmup=100, c64_count=8000,
            c64_seconds=8, c64_warmup=300, conversations=500, seed_users=10_000,
            seed_conversations=100_000, seed_turns=1_000_000, recall_count=1000,
            memory_steps=(1000, 5000, 10_000, 20_000), startups=5)
QUICK = Plan(reps=1, c1_count=20, c1_seconds=2, c1_warmup=3, c64_count=100, c64_seconds=2,
             c64_warmup=10, conversations=20, seed_users=100, seed_conversations=1000,
             seed_turns=10_000, recall_count=20, memory_steps=(50, 200), startups=1)


# ------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Child:
    """A child process of the benchmark, stopped (TERM, then KILL) by ``stop()``."""

    alive: ClassVar[list[Child]] = []

    def __init__(self, name: str, argv: list[str], log_dir: Path, cwd: Path = ROOT) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        Child.alive.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        if self in Child.alive:
            Child.alive.remove(self)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def rss_kib(self) -> dict[str, int]:
        fields: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    fields[name] = int(value.split()[0])
        return fields


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the benchmark dies, however it dies, so no
    stub, forwarder or gateway outlives it (Linux; elsewhere the ``finally`` blocks do it)."""
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_all() -> None:
    for child in list(reversed(Child.alive)):
        with contextlib.suppress(Exception):
            child.stop()


def http(method: str, url: str, *, key: str | None = None, body: Any = None,
         headers: dict[str, str] | None = None, timeout: float = 30.0,
         ) -> tuple[int, dict[str, str], bytes]:
    """One small request with the standard library (set-up and polling, never measured)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def wait_until(probe: Callable[[], bool], child: Child, timeout: float = 30.0,
               pause: float = 0.002) -> float:
    """Seconds from the child's start until ``probe()`` is true."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited ({child.proc.returncode}):\n{child.tail()}")
        with contextlib.suppress(OSError):
            if probe():
                return time.perf_counter() - child.started
        time.sleep(pause)
    raise RuntimeError(f"{child.name} not ready after {timeout} s:\n{child.tail()}")


def port_open(port: int) -> Callable[[], bool]:
    def probe() -> bool:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    return probe


def openai_body(prompt: str = "hello", stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


def start_stub(tmp: Path, args: argparse.Namespace) -> tuple[Child, int]:
    port = free_port()
    child = Child("stub", [PY, "-m", "bench.stub_upstream", "--port", str(port),
                           "--delay-ms", str(args.stub_delay_ms), "--chunks", str(args.chunks),
                           "--chunk-delay-ms", str(args.chunk_delay_ms)], tmp)
    wait_until(port_open(port), child)
    return child, port


def start_forwarder(tmp: Path, stub_port: int, name: str = "forwarder", *,
                    uvloop: bool = False, launcher: tuple[str, ...] = (),
                    timeout: float = 30.0) -> tuple[Child, int]:
    """The bare forwarder (on uvloop's loop with ``uvloop``), run by ``launcher`` (valgrind)."""
    port = free_port()
    child = Child(name, [*launcher, PY, "-m", "bench.forwarder", "--port", str(port),
                         "--upstream", f"http://{HOST}:{stub_port}",
                         *(["--uvloop"] if uvloop else [])], tmp)
    wait_until(port_open(port), child, timeout=timeout)
    return child, port


@dataclass
class Gateway:
    """One gateway: its folder, config, database and keys; started and stopped at will."""

    name: str
    folder: Path
    stub_port: int
    log_level: str
    port: int = 0
    child: Child | None = None
    admin_key: str = ""
    user_key: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    extra_config: str = ""
    storage_url: str = ""
    """A PostgreSQL URL (case 7); empty: a SQLite file in the gateway's folder."""
    root: Path = field(default_factory=lambda: GATEWAY_ROOT)
    """The checkout whose ``bot.py`` runs."""
    launcher: tuple[str, ...] = ()
    """What runs ``python bot.py`` (valgrind, for bench/instructions.py); empty: run it."""
    start_timeout: float = 60.0

    @property
    def db(self) -> Path:
        return self.folder / "gateway.db"

    @property
    def config(self) -> Path:
        return self.folder / "bench.toml"

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def write_config(self) -> None:
        self.port = free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = [
            "# Generated by bench/run.py: one account, pointing at the stub upstream.",
            "[server]", f'host = "{HOST}"', f"port = {self.port}", "",
            "[storage]",
            f'url = "{self.storage_url}"' if self.storage_url else f'path = "{self.db}"', "",
            "[[accounts]]", 'name = "stub"', f'base_url = "http://{HOST}:{self.stub_port}/v1"',
            'api_key_env = ""', f'model = "{MODEL}"', 'tier = "free"', 'proxy = ""',
            # The default cap, written out: a cap near the load's concurrency would measure
            # the cap, not the gateway (an operator sizes it to the upstream, here the stub).
            "max_concurrency = 256", "timeout_s = 60", "context_tokens = 16000", "",
        ]
        if _has_setting("local_model", self.root):
            lines += ["[local_model]", 'enabled = "never"', ""]
        if self.extra_config:
            lines += ["# from --extra-config", self.extra_config, ""]
        self.config.write_text("\n".join(lines), encoding="utf-8")

    def create_admin(self) -> str:
        done = subprocess.run([PY, "bot.py", "--config", str(self.config), "--log-level",
                               "WARNING", "create-admin", "bench-admin"], cwd=self.root,
                              capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0 or not done.stdout.strip():
            raise RuntimeError(f"create-admin failed: {done.stderr[-2000:]}")
        self.admin_key = done.stdout.strip().splitlines()[-1].strip()
        return self.admin_key

    def start(self) -> float:
        """Start the gateway; seconds until /healthz answers 200."""
        self.child = Child(self.name, [*self.launcher, PY, "bot.py", "--config",
                                       str(self.config), "--log-level", self.log_level],
                           self.folder, self.root)
        return wait_until(lambda: http("GET", self.base + "/healthz", timeout=2)[0] == 200,
                          self.child, timeout=self.start_timeout)

    def add_user(self, name: str = "bench-user") -> str:
        status, _, body = http("POST", self.base + "/api/client/add-user", key=self.admin_key,
                               body={"username": name, "userid": name})
        if status != 200:
            raise RuntimeError(f"add-user answered {status}: {body[:300]!r}")
        self.user_key = json.loads(body)["api_key"]
        return self.user_key

    def setup(self) -> None:
        self.write_config()
        self.create_admin()
        self.start()
        self.add_user()

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None

    @property
    def pid(self) -> int:
        assert self.child is not None
        return self.child.pid


def _has_setting(name: str, root: Path) -> bool:
    """Whether the gateway's settings know ``name`` (a top-level table), read from its source:
    the generated configuration must hold no key the gateway would refuse."""
    source = (root / "core" / "config.py").read_text(encoding="utf-8")
    return f"\n    {name}: " in source


def probe_v1(gateway: Gateway) -> tuple[bool, str]:
    """Whether /v1/chat/completions answers here, streamed and not."""
    url = gateway.base + V1_PATH
    status, _, body = http("POST", url, key=gateway.user_key, body=openai_body())
    if status == 404 and b"chat.completion" not in body:
        return False, "route absent (404)"
    if status != 200:
        return False, f"HTTP {status}: {body[:200]!r}"
    status, _, body = http("POST", url, key=gateway.user_key, body=openai_body(stream=True))
    if status != 200 or b"[DONE]" not in body:
        return False, f"stream: HTTP {status}: {body[-200:]!r}"
    return True, "ok"


# ------------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Target:
    """Something to load: the stub directly, the forwarder, or one of the gateway's APIs."""

    name: str
    url: str
    kind: str  # loadgen kind: openai, api, get
    key: str | None = None


CLK_TCK = os.sysconf("SC_CLK_TCK")
OTHERS_CORES: list[float] = []
"""CPU (in cores) that other processes of the machine used during each measurement."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (every core) since boot."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLK_TCK


class CpuMeter:
    """CPU used during a measurement by each of our processes, by the load generator, and by
    everything else on the machine (other users' work: the noise)."""

    def __init__(self) -> None:
        self.children = {c.name: (c.pid, cpu_seconds(c.pid)) for c in Child.alive}
        self.rusage = _children_cpu()
        self.busy = system_busy_seconds()
        self.started = time.perf_counter()

    def read(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.started
        ours = {name: cpu_seconds(pid) - before for name, (pid, before) in self.children.items()}
        ours["loadgen"] = _children_cpu() - self.rusage
        busy = system_busy_seconds() - self.busy
        return {**{f"cpu_s_{k}": v for k, v in ours.items()},
                "cpu_s_others": max(0.0, busy - sum(ours.values())),
                "others_cores": max(0.0, busy - sum(ours.values())) / elapsed if elapsed else 0.0}


def settle(limit_s: float = 30.0, window_s: float = 0.2) -> float:
    """Wait until our processes are idle (together under a tenth of a core for ``window_s``),
    at most ``limit_s``; returns the seconds waited. What a load leaves behind (the
    gateway's batched titles of new ``/api/chat`` conversations, asked after the replies) is
    that load's cost: counted in its CPU a request, and kept out of the next measurement."""
    started = time.perf_counter()
    last = sum(cpu_seconds(c.pid) for c in Child.alive)
    while time.perf_counter() - started < limit_s:
        time.sleep(window_s)
        now = sum(cpu_seconds(c.pid) for c in Child.alive)
        if now - last < window_s / 10 + 1 / CLK_TCK:
            break
        last = now
    return time.perf_counter() - started


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def loadgen(target: Target, *, stream: bool = False, concurrency: int = 1, count: int = 100,
            seconds: float = 10.0, warmup: int = 0, conversations: Path | None = None,
            history: int = 0, agent_turns: int = 0) -> dict[str, Any]:
    argv = [PY, "-m", "bench.loadgen", "--url", target.url, "--kind", target.kind,
            "--concurrency", str(concurrency), "--count", str(count),
            "--max-seconds", str(seconds), "--warmup", str(warmup), "--history", str(history),
            "--agent-turns", str(agent_turns)]
    if stream:
        argv.append("--stream")
    if target.key:
        argv += ["--key", target.key]
    if conversations is not None:
        argv += ["--conversations", str(conversations)]
    meter = CpuMeter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                          timeout=seconds + 3 * 60 + warmup, check=False)
    settled = settle()
    cpu = meter.read()
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed on {target.name}: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["target"] = target.name
    # Includes the warm-up, as the load generator's process does, and the work the load left
    # behind (settle()).
    result["cpu"] = cpu
    result["settle_s"] = settled
    OTHERS_CORES.append(cpu["others_cores"])
    result["requests_incl_warmup"] = result["ok"] + result["errors"] + warmup
    if result["errors"]:
        print(f"  ! {target.name}: {result['errors']} errors, e.g. {result['error_sample'][:1]}",
              file=sys.stderr)
    return result


async def _create_conversations(url: str, key: str, n: int) -> list[str]:
    ids: list[str] = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem, session.post(url, json={"prompt": f"Conversation {i}: hello"}) as r:
                data = await r.json(content_type=None)
                if r.status != 200:
                    raise RuntimeError(f"creating a conversation: HTTP {r.status}: {data}")
                ids.append(data["conversation_id"])

        await asyncio.gather(*(one(i) for i in range(n)))
    return ids


def create_conversations(gateway: Gateway, n: int, path: Path) -> Path:
    ids = asyncio.run(_create_conversations(gateway.base + CHAT_PATH, gateway.user_key, n))
    path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------- summaries


def med(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over repetitions of each figure of one (target, mode), and the figures of each
    repetition (``*_runs``), so that ratios can be taken within a repetition."""
    out: dict[str, Any] = {
        "reps": len(runs),
        "rps": med([r["rps"] for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "ok": sum(r["ok"] for r in runs),
        "rps_runs": [r["rps"] for r in runs],
    }
    for metric in ("latency", "ttfb", "first_token"):
        if metric in runs[0]:
            out[metric] = {p: med([r[metric][p] for r in runs]) for p in ("p50", "p90", "p99")}
            out[f"{metric}_runs"] = {p: [r[metric][p] for r in runs] for p in ("p50", "p99")}
    if "cpu" in runs[0]:
        names = [k.removeprefix("cpu_s_") for k in runs[0]["cpu"] if k.startswith("cpu_s_")]
        out["cpu_ms_per_request"] = {
            name: med([r["cpu"].get(f"cpu_s_{name}", 0.0) * 1000
                       / max(1, r["requests_incl_warmup"]) for r in runs]) for name in names}
        out["others_cores"] = med([r["cpu"]["others_cores"] for r in runs])
        out["others_cores_max"] = max(r["cpu"]["others_cores"] for r in runs)
    return out


def paired(a: dict[str, Any] | None, b: dict[str, Any] | None, path: tuple[str, ...],
           fn: Callable[[float, float], float]) -> list[float]:
    """``fn(a_i, b_i)`` for each repetition i that both measured (same rep: same conditions)."""
    if not a or not b:
        return []

    def values(summary: dict[str, Any]) -> list[float | None]:
        node: Any = summary
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        return list(node) if isinstance(node, list) else []

    return [fn(x, y) for x, y in zip(values(a), values(b), strict=False)
            if x is not None and y is not None and (y or fn is _diff)]


def _diff(x: float, y: float) -> float:
    return x - y


def _ratio(x: float, y: float) -> float:
    return x / y


def spread(values: list[float], digits: int = 2, pct: bool = False) -> str:
    """The median, with the range over repetitions when there are several."""
    if not values:
        return "n/a"
    show = _pct if pct else (lambda v: f"{v:.{digits}f}")
    text = show(statistics.median(values))
    if len(values) > 1:
        text += f" ({show(min(values))}…{show(max(values))})"
    return text


def cell(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def pair(a: float | None, b: float | None, digits: int = 2) -> str:
    if a is None or b is None:
        return "n/a"
    return f"{a:.{digits}f} / {b:.{digits}f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**yes**" if ok else "**no**")


class Table:
    COLUMNS = ("case", "measure", "direct", "forwarder", "forwarder (uvloop)",
               "gateway /api/chat", "gateway /v1", "target", "met")

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []

    def add(self, case: str, measure: str, direct: str = "", forwarder: str = "",
            api: str = "", v1: str = "", target: str = "", met: str = "",
            uvloop: str = "") -> None:
        self.rows.append(dict(zip(self.COLUMNS, (case, measure, direct, forwarder, uvloop, api,
                                                 v1, target, met), strict=True)))

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.COLUMNS) + " |",
                 "|" + "|".join("---" for _ in self.COLUMNS) + "|"]
        for row in sorted(self.rows, key=lambda r: r["case"]):
            lines.append("| " + " | ".join(row[c] or "" for c in self.COLUMNS) + " |")
        return "\n".join(lines)


# ------------------------------------------------------------------------------- the cases


@dataclass
class Bench:
    plan: Plan
    args: argparse.Namespace
    tmp: Path
    stub_port: int = 0
    forwarder_port: int = 0
    uvloop_port: int = 0
    results: dict[str, Any] = field(default_factory=dict)
    table: Table = field(default_factory=Table)
    v1: bool = False
    v1_note: str = ""

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def references(self) -> list[Target]:
        return [Target("direct", f"http://{HOST}:{self.stub_port}{V1_PATH}", "openai"),
                Target("forwarder", f"http://{HOST}:{self.forwarder_port}{V1_PATH}", "openai"),
                Target("uvloop", f"http://{HOST}:{self.uvloop_port}{V1_PATH}", "openai")]

    def gateway_targets(self, gateway: Gateway, key: str | None = None) -> list[Target]:
        key = key or gateway.user_key
        targets = [Target("api", gateway.base + CHAT_PATH, "api", key)]
        if self.v1:
            targets.append(Target("v1", gateway.base + V1_PATH, "openai", key))
        return targets

    def new_gateway(self, name: str) -> Gateway:
        return Gateway(name, self.tmp / name, self.stub_port, self.args.gateway_log_level,
                       extra_config=self.args.extra_config.replace("\\n", "\n"))

    def repeat(self, label: str, targets: list[Target], modes: tuple[bool, ...],
               run: Callable[[Target, bool], dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Every (target, mode) ``reps`` times, targets interleaved; medians per pair."""
        raw: dict[str, list[dict[str, Any]]] = {}
        for rep in range(self.plan.reps):
            for stream in modes:
                for target in targets:
                    key = f"{target.name}/{'stream' if stream else 'json'}"
                    self.log(f"  case {label} rep {rep + 1}/{self.plan.reps}: {key}")
                    raw.setdefault(key, []).append(run(target, stream))
        self.results.setdefault("raw", {})[label] = raw
        return {key: summarise(runs) for key, runs in raw.items()}

    # -- case 1 -------------------------------------------------------------------------

    def case1(self, gateway: Gateway) -> None:
        self.log("case 1: added latency at concurrency 1")
        p = self.plan
        summary = self.repeat("1", self.references() + self.gateway_targets(gateway),
                              (False, True), lambda t, s: loadgen(
                                  t, stream=s, concurrency=1, count=p.c1_count,
                                  seconds=p.c1_seconds, warmup=p.c1_warmup))
        self.results["case1"] = summary
        t = self.table
        for stream, metrics in ((False, (("latency", "latency"),)),
                                (True, (("ttfb", "first byte"), ("first_token", "first token"),
                                        ("latency", "end")))):
            mode = "stream" if stream else "json"
            for metric, label in metrics:
                values = {n: summary.get(f"{n}/{mode}", {}).get(metric) for n in
                          ("direct", "forwarder", "uvloop", "api", "v1")}

                def fmt(v: dict[str, float] | None) -> str:
                    return pair(v["p50"], v["p99"]) if v else "n/a"

                word = "stream" if stream else "non-stream"
                t.add("1", f"{word} {label} p50 / p99 (ms), c=1", fmt(values["direct"]),
                      fmt(values["forwarder"]), fmt(values["api"]), fmt(values["v1"]),
                      uvloop=fmt(values["uvloop"]))

                def added(name: str, metric: str = metric, mode: str = mode,
                          ) -> tuple[str, float | None, float | None]:
                    gw = summary.get(f"{name}/{mode}")
                    ref = summary.get(f"direct/{mode}")
                    a50 = paired(gw, ref, (f"{metric}_runs", "p50"), _diff)
                    a99 = paired(gw, ref, (f"{metric}_runs", "p99"), _diff)
                    if not a50 or not a99:
                        return "n/a", None, None
                    return (f"{spread(a50)} / {spread(a99)}", statistics.median(a50),
                            statistics.median(a99))

                f_txt = added("forwarder")[0]
                uv_txt = added("uvloop")[0]
                api_txt, api50, api99 = added("api")
                v1_txt, v150, v199 = added("v1")
                checks = [x50 <= ADDED_P50_MS and x99 <= ADDED_P99_MS
                          for x50, x99 in ((api50, api99), (v150, v199))
                          if x50 is not None and x99 is not None]
                t.add("1", f"{word} {label}: added vs direct, p50 / p99 (ms)", "—", f_txt,
                      api_txt, v1_txt, f"≤ {ADDED_P50_MS:g} / ≤ {ADDED_P99_MS:g}",
                      verdict(all(checks) if checks else None),
                      uvloop=uv_txt)

        self.case1_follow_ups(gateway)

    def case1_follow_ups(self, gateway: Gateway) -> None:
        """Added latency of a follow-up at concurrency 1: no title request, a stored history."""
        p = self.plan
        history = 1 + p.c1_count // p.conversations // 2
        made = [0]

        def run(target: Target, stream: bool) -> dict[str, Any]:
            if target.name == "direct":
                return loadgen(target, stream=stream, concurrency=1, count=p.c1_count,
                               seconds=p.c1_seconds, warmup=p.c1_warmup, history=history)
            made[0] += 1
            conversations = create_conversations(
                gateway, p.conversations, self.tmp / f"c1-conversations-{made[0]}.txt")
            return loadgen(target, stream=stream, concurrency=1, count=p.c1_count,
                           seconds=p.c1_seconds, warmup=p.c1_warmup, conversations=conversations,
                           history=history if target.kind == "openai" else 0)

        summary = self.repeat("1-follow-up", self.references()[:1] + self.gateway_targets(
            gateway), (False, True), run)
        self.results["case1_follow_up"] = summary
        for stream, metric, label in ((False, "latency", "latency"),
                                      (True, "first_token", "first token"),
                                      (True, "latency", "end")):
            mode = "stream" if stream else "json"
            word = "stream" if stream else "non-stream"
            cells = {}
            checks = []
            for name in ("api", "v1"):
                gw, ref = summary.get(f"{name}/{mode}"), summary.get(f"direct/{mode}")
                a50 = paired(gw, ref, (f"{metric}_runs", "p50"), _diff)
                a99 = paired(gw, ref, (f"{metric}_runs", "p99"), _diff)
                cells[name] = f"{spread(a50)} / {spread(a99)}" if a50 and a99 else "n/a"
                if a50 and a99:
                    checks.append(statistics.median(a50) <= ADDED_P50_MS
                                  and statistics.median(a99) <= ADDED_P99_MS)
            self.table.add("1", f"follow-up {word} {label}: added vs direct, p50 / p99 (ms)",
                           "—", "", cells["api"], cells["v1"],
                           f"≤ {ADDED_P50_MS:g} / ≤ {ADDED_P99_MS:g}",
                           verdict(all(checks) if checks else None))

    # -- cases 2 and 3 --------------------------------------------------------------------

    def throughput_rows(self, case: str, summary: dict[str, Any], what: str) -> None:
        for stream in (False, True):
            mode = "stream" if stream else "json"
            runs = {n: summary.get(f"{n}/{mode}")
                    for n in ("direct", "forwarder", "uvloop", "api", "v1")}
            rps = {n: (r or {}).get("rps") for n, r in runs.items()}
            ratios = {n: paired(runs[n], runs["forwarder"], ("rps_runs",), _ratio)
                      for n in ("api", "v1")}
            # The target (issue 14) is against the forwarder on uvloop, the faster yardstick.
            uv_ratios = {n: paired(runs[n], runs["uvloop"], ("rps_runs",), _ratio)
                         for n in ("api", "v1")}
            word = "stream" if stream else "non-stream"
            lat = {n: (r or {}).get("latency") for n, r in runs.items()}
            self.table.add(case, f"{what} {word}: requests/s, c={self.plan.concurrency}",
                           cell(rps["direct"], 0), cell(rps["forwarder"], 0), cell(rps["api"], 0),
                           cell(rps["v1"], 0), uvloop=cell(rps["uvloop"], 0))
            lats = {n: pair(v["p50"], v["p99"], 1) if v else "n/a" for n, v in lat.items()}
            self.table.add(case, f"{what} {word}: latency p50 / p99 (ms)", lats["direct"],
                           lats["forwarder"], lats["api"], lats["v1"], uvloop=lats["uvloop"])
            cpu = {n: (r or {}).get("cpu_ms_per_request", {}) for n, r in runs.items()}
            hop = {"direct": "stub", "forwarder": "forwarder", "uvloop": "forwarder-uvloop",
                   "api": "gateway", "v1": "gateway"}
            cpus = {n: cell(cpu[n].get(h), 2) if cpu[n] else "n/a" for n, h in hop.items()}
            self.table.add(case, f"{what} {word}: CPU ms per request of the hop's process "
                                 "(stub for direct)", cpus["direct"], cpus["forwarder"],
                           cpus["api"], cpus["v1"], uvloop=cpus["uvloop"])
            self.table.add(case, f"{what} {word}: ratio to forwarder (same repetition)", "",
                           "1", spread(ratios["api"]), spread(ratios["v1"]))
            checks = [statistics.median(r) >= 0.6 for r in uv_ratios.values() if r]
            self.table.add(case, f"{what} {word}: ratio to forwarder on uvloop (same "
                                 "repetition)", "", "", spread(uv_ratios["api"]),
                           spread(uv_ratios["v1"]), "≥ 0.6",
                           verdict(all(checks) if checks else None), uvloop="1")

    def case2(self, gateway: Gateway, label: str = "2", table: bool = True,
              references: bool = True) -> dict[str, Any]:
        self.log(f"case {label}: throughput at concurrency {self.plan.concurrency}")
        targets = (self.references() if references else []) + self.gateway_targets(gateway)
        summary = self.repeat(label, targets, (False, True), lambda t, s: self._c64(t, s, gateway))
        if table:
            self.throughput_rows(label, summary, "new conversation")
        return summary

    def _c64(self, target: Target, stream: bool, gateway: Gateway,
             conversations: Path | None = None, history: int = 0) -> dict[str, Any]:
        p = self.plan
        spy = self._spy_start(gateway, target, stream, conversations is not None)
        try:
            return loadgen(target, stream=stream, concurrency=p.concurrency, count=p.c64_count,
                           seconds=p.c64_seconds, warmup=p.c64_warmup,
                           conversations=conversations, history=history)
        finally:
            self._spy_stop(spy)

    def case3(self, gateway: Gateway) -> None:
        p = self.plan
        # Each gateway run continues fresh conversations, so the stored history stays the
        # size one run gives it (count / conversations turns at most): the references send a
        # history of the mean size, and so does /v1, whose caller owns the context.
        history = 1 + p.c64_count // p.conversations // 2
        self.log(f"case 3: follow-ups over {p.conversations} conversations (history ~{history})")
        made = [0]

        def run(target: Target, stream: bool) -> dict[str, Any]:
            if target.name in ("direct", "forwarder", "uvloop", "v1-history"):
                return self._c64(target, stream, gateway, history=history)
            made[0] += 1
            conversations = create_conversations(
                gateway, p.conversations, self.tmp / f"conversations-{made[0]}.txt")
            return self._c64(target, stream, gateway, conversations,
                             history=history if target.kind == "openai" else 0)

        # What agent frameworks send: the whole context each time and no X-Conversation-Id,
        # so that each request is, to the gateway, a new conversation carrying a history.
        agents = [Target("v1-history", gateway.base + V1_PATH, "openai", gateway.user_key)] \
            if self.v1 else []
        summary = self.repeat("3", self.references() + self.gateway_targets(gateway) + agents,
                              (False, True), run)
        self.results["case3"] = summary
        self.results["case3_history_pairs"] = history
        self.throughput_rows("3", summary, f"follow-up ({p.conversations} conversations)")
        if agents:
            self.history_rows("3", summary)

    def history_rows(self, case: str, summary: dict[str, Any]) -> None:
        """/v1 requests carrying the history without X-Conversation-Id, against the uvloop
        forwarder given the same body."""
        for stream in (False, True):
            mode = "stream" if stream else "json"
            ours, uv = summary.get(f"v1-history/{mode}"), summary.get(f"uvloop/{mode}")
            ratios = paired(ours, uv, ("rps_runs",), _ratio)
            word = "stream" if stream else "non-stream"
            self.table.add(case, f"/v1 with the history and no X-Conversation-Id (agent "
                                 f"frameworks) {word}: requests/s, c={self.plan.concurrency}",
                           "", "", "", cell((ours or {}).get("rps"), 0),
                           uvloop=cell((uv or {}).get("rps"), 0))
            self.table.add(case, f"/v1 with the history and no X-Conversation-Id {word}: ratio "
                                 "to forwarder on uvloop (same repetition)", "", "", "",
                           spread(ratios), "≥ 0.6",
                           verdict(statistics.median(ratios) >= 0.6 if ratios else None),
                           uvloop="1")

    # -- case 4 ---------------------------------------------------------------------------

    def case4(self) -> None:
        p = self.plan
        self.log("case 4: storage at scale")
        gateways: dict[str, Gateway] = {}
        info: dict[str, Any] = {}
        try:
            for name, (users, convs, turns) in (
                ("empty", (0, 0, 0)),
                ("seeded", (p.seed_users, p.seed_conversations, p.seed_turns)),
            ):
                gw = self.new_gateway(f"gateway-{name}")
                gw.folder.mkdir(parents=True)
                self.log(f"  seeding the {name} database ({users:,} users, {convs:,} "
                         f"conversations, {turns:,} turns)")
                keys = gw.folder / "seed.json"
                started = time.perf_counter()
                done = subprocess.run(
                    [PY, "-m", "bench.seed", "--db", str(gw.db), "--users", str(users),
                     "--conversations", str(convs), "--turns", str(turns),
                     "--keys-out", str(keys)],
                    cwd=GATEWAY_ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                    capture_output=True, text=True, timeout=1800, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"seed failed: {done.stderr[-2000:]}")
                seeded = json.loads(keys.read_text())
                info[name] = {"counts": seeded["counts"], "bytes": seeded["bytes"],
                              "seed_seconds": round(time.perf_counter() - started, 1)}
                (gw.folder / "probe.txt").write_text("\n".join(seeded["probe_conversations"]))
                gw.extra = seeded
                gw.write_config()
                gw.create_admin()
                gw.start()
                gw.add_user()
                gateways[name] = gw
            self.results["case4_databases"] = info

            recall: dict[str, dict[str, Any]] = {}
            for rep in range(p.reps):
                for name, gw in gateways.items():
                    probe = gw.extra["probe_key"]
                    for what, target, convs in (
                        ("list", Target("recall-list", gw.base + "/api/recall", "get", probe),
                         None),
                        ("one", Target("recall-one", gw.base +
                                       "/api/recall?conversation_id={conversation}", "get",
                                       probe), gw.folder / "probe.txt"),
                        ("admin-all", Target("recall-all", gw.base + "/api/recall", "get",
                                             gw.admin_key), None),
                    ):
                        self.log(f"  case 4 rep {rep + 1}/{p.reps}: {name} recall {what}")
                        result = loadgen(target, concurrency=1, count=p.recall_count,
                                         seconds=p.c1_seconds, warmup=p.c1_warmup,
                                         conversations=convs)
                        recall.setdefault(f"{name}/{what}", {}).setdefault("runs", []).append(
                            result)
            recall_summary = {k: summarise(v["runs"]) for k, v in recall.items()}
            self.results.setdefault("raw", {})["4-recall"] = {k: v["runs"]
                                                              for k, v in recall.items()}

            throughput: dict[str, dict[str, Any]] = {}
            raw: dict[str, list[dict[str, Any]]] = {}
            for rep in range(p.reps):
                for stream in (False, True):
                    for name, gw in gateways.items():
                        for target in self.gateway_targets(gw):
                            key = f"{name}/{target.name}/{'stream' if stream else 'json'}"
                            self.log(f"  case 4 rep {rep + 1}/{p.reps}: {key}")
                            raw.setdefault(key, []).append(self._c64(target, stream, gw))
            throughput = {k: summarise(v) for k, v in raw.items()}
            self.results.setdefault("raw", {})["4-throughput"] = raw
            self.results["case4"] = {"recall": recall_summary, "throughput": throughput}
        finally:
            for gw in gateways.values():
                gw.stop()
                shutil.rmtree(gw.folder, ignore_errors=True)

        t = self.table
        sizes = {k: v["counts"] for k, v in info.items()}
        seeded_counts = sizes.get("seeded", {})
        t.add("4", f"seeded database: {seeded_counts.get('principals', 0):,} principals, "
                   f"{seeded_counts.get('conversations', 0):,} conversations, "
                   f"{seeded_counts.get('turns', 0):,} turns, "
                   f"{seeded_counts.get('usage', 0):,} usage rows, "
                   f"{info.get('seeded', {}).get('bytes', 0) / 2**20:,.0f} MiB "
                   f"(seeded in {info.get('seeded', {}).get('seed_seconds', 0)} s)")

        def change(x: float, y: float) -> float:
            return x / y - 1

        for what, label in (("list", "recall list (10 conversations)"),
                            ("one", "recall one (10 turns)"),
                            ("admin-all", "admin recall list, everyone's (info)")):
            empty, seeded = recall_summary.get(f"empty/{what}"), recall_summary.get(
                f"seeded/{what}")
            if not empty or not seeded:
                continue
            e, s = empty["latency"], seeded["latency"]
            c50 = paired(seeded, empty, ("latency_runs", "p50"), change)
            c99 = paired(seeded, empty, ("latency_runs", "p99"), change)
            text = (f"{pair(e['p50'], e['p99'])} → {pair(s['p50'], s['p99'])}; change "
                    f"{spread(c50, pct=True)} / {spread(c99, pct=True)}")
            met = None
            if what != "admin-all" and c50 and c99:
                met = statistics.median(c50) <= 0.2 and statistics.median(c99) <= 0.2
            t.add("4", f"{label} p50 / p99 (ms), c=1, empty → seeded", "", "", text, "",
                  "change ≤ 20%" if what != "admin-all" else "", verdict(met))
        for stream in (False, True):
            mode = "stream" if stream else "json"
            cells: dict[str, str] = {}
            checks = []
            for api in ("api", "v1"):
                empty = throughput.get(f"empty/{api}/{mode}")
                seeded = throughput.get(f"seeded/{api}/{mode}")
                changes = paired(seeded, empty, ("rps_runs",), change)
                if not empty or not seeded or not changes:
                    cells[api] = "n/a"
                    continue
                cells[api] = (f"{empty['rps']:.0f} → {seeded['rps']:.0f}; change "
                              f"{spread(changes, pct=True)}")
                checks.append(statistics.median(changes) >= -0.2)
            word = "stream" if stream else "non-stream"
            t.add("4", f"{word} new conversations: requests/s, empty → seeded, "
                       f"c={p.concurrency}", "", "", cells["api"], cells["v1"],
                  "change ≤ 20%", verdict(all(checks) if checks else None))

    # -- case 5 ---------------------------------------------------------------------------

    def case5(self) -> None:
        p = self.plan
        self.log("case 5: memory")
        gw = self.new_gateway("gateway-memory")
        try:
            gw.setup()
            samples = [{"requests": 0, **gw.child.rss_kib()}] if gw.child else []
            targets = self.gateway_targets(gw)
            modes = [(t, s) for t in targets for s in (False, True)]
            done = 0
            for step in p.memory_steps:
                todo = step - done
                share = [todo // len(modes) + (1 if i < todo % len(modes) else 0)
                         for i in range(len(modes))]
                for (target, stream), n in zip(modes, share, strict=True):
                    if n:
                        self.log(f"  case 5: {n} {target.name}/{'stream' if stream else 'json'}"
                                 f" (to {step})")
                        result = loadgen(target, stream=stream, concurrency=p.concurrency,
                                         count=n, seconds=600)
                        if result["ok"] != n:
                            self.log(f"  ! case 5: {n - result['ok']} requests failed")
                done = step
                assert gw.child is not None
                samples.append({"requests": step, **gw.child.rss_kib()})
        finally:
            gw.stop()
        self.results["case5"] = samples
        by = {s["requests"]: s["VmRSS"] / 1024 for s in samples}
        first, last = p.memory_steps[0], p.memory_steps[-1]
        growth = (by[last] - by[first]) / by[first] if by.get(first) else None
        series = " / ".join(f"{by[s['requests']]:.1f}" for s in samples)
        self.table.add("5", "gateway RSS (MiB) after start / " + " / ".join(
            f"{s:,}" for s in p.memory_steps) + " requests", "", "", series, "(same process)")
        self.table.add("5", f"RSS growth from {first:,} to {last:,} requests", "", "",
                       _pct(growth), "", "≤ 10%",
                       verdict(growth <= 0.10 if growth is not None else None))

    # -- case 6 ---------------------------------------------------------------------------

    def case7(self) -> None:
        """PostgreSQL with one gateway process, then two on the same database, each half the
        load; new conversations and follow-ups on /api/chat, beside SQLite's case 2 figure."""
        from tests.pg import PgCluster, find_bindir  # the suite's throwaway cluster

        self.log("case 7: PostgreSQL, one and two processes")
        bindir = find_bindir()
        if bindir is None:
            self.table.add("7", "PostgreSQL: no server binaries on this machine", "", "",
                           "n/a", "n/a")
            return
        cluster = PgCluster(bindir).start()
        try:
            subprocess.run([str(bindir / "createdb"), "-h", HOST, "-p", str(cluster.port),
                            "-U", "gateway", "bench"], check=True, capture_output=True)
            # Every process must seal own keys alike on a shared database.
            os.environ.setdefault("GATEWAY_SECRET_KEY",
                                  "Xk0ZJ9b7oQ3w3m2S2sGx1nYv6Jk8Qp8tTb6dM0c3Zq4=")
            first = self.new_gateway("pg-1")
            first.storage_url = cluster.url("bench")
            first.setup()
            second = self.new_gateway("pg-2")
            second.storage_url = first.storage_url
            second.write_config()
            second.start()
            conversations = create_conversations(first, self.plan.conversations,
                                                 self.tmp / "pg-conversations.json")
            p = self.plan
            raw: dict[str, list[float]] = {}

            def rps(gateways: list[Gateway], follow_ups: bool) -> float:
                share = max(1, p.concurrency // len(gateways))

                def one(gw: Gateway) -> dict[str, Any]:
                    return loadgen(Target("api", gw.base + CHAT_PATH, "api", first.user_key),
                                   concurrency=share, count=p.c64_count // len(gateways),
                                   seconds=p.c64_seconds, warmup=p.c64_warmup // len(gateways),
                                   conversations=conversations if follow_ups else None)

                with concurrent.futures.ThreadPoolExecutor(len(gateways)) as pool:
                    return sum(r["rps"] for r in pool.map(one, gateways))

            for rep in range(p.reps):
                for follow_ups in (False, True):
                    for label, gateways in (("1 process", [first]), ("2 processes",
                                                                     [first, second])):
                        key = f"{label}/{'follow-ups' if follow_ups else 'new'}"
                        self.log(f"  case 7 rep {rep + 1}/{p.reps}: {key}")
                        raw.setdefault(key, []).append(rps(gateways, follow_ups))
            self.results["case7"] = raw
            sqlite = (self.results.get("case2") or {}).get("api/json", {}).get("rps")
            for follow_ups in (False, True):
                what = "follow-ups" if follow_ups else "new conversations"
                if not follow_ups:
                    self.table.add("7", f"SQLite, 1 process (case 2): {what} non-stream, "
                                        f"requests/s, c={p.concurrency}", "", "",
                                   cell(sqlite, 0))
                for label in ("1 process", "2 processes"):
                    values = raw[f"{label}/{'follow-ups' if follow_ups else 'new'}"]
                    self.table.add("7", f"PostgreSQL, {label}: {what} non-stream, requests/s, "
                                        f"c={p.concurrency}", "", "",
                                   cell(statistics.median(values), 0))
            second.stop()
            first.stop()
        finally:
            cluster.stop()

    def case6(self, gateway: Gateway) -> None:
        """Start-up of a gateway on an existing database (the one cases 1-3 used)."""
        p = self.plan
        self.log("case 6: start-up time")
        gateway.stop()
        health, first_chat, forwarder = [], [], []
        for rep in range(p.startups):
            self.log(f"  case 6 rep {rep + 1}/{p.startups}")
            gateway.port = free_port()
            text = gateway.config.read_text()
            lines = [f"port = {gateway.port}" if line.startswith("port = ") else line
                     for line in text.splitlines()]
            gateway.config.write_text("\n".join(lines) + "\n")
            gateway.child = Child(gateway.name, [PY, "bot.py", "--config", str(gateway.config),
                                                 "--log-level", gateway.log_level], gateway.folder,
                                  gateway.root)
            try:
                chat_url = gateway.base + CHAT_PATH
                health.append(wait_until(
                    lambda: http("GET", gateway.base + "/healthz", timeout=2)[0] == 200,
                    gateway.child, pause=0.001))
                first_chat.append(wait_until(
                    lambda url=chat_url: http("POST", url, key=gateway.user_key,
                                 body={"prompt": "hi"}, timeout=10)[0] == 200,
                    gateway.child, pause=0.001))
            finally:
                gateway.stop()
            fwd, port = start_forwarder(self.tmp, self.stub_port, name="forwarder-startup")
            try:
                url = f"http://{HOST}:{port}{V1_PATH}"
                forwarder.append(wait_until(
                    lambda url=url: http("POST", url, body=openai_body(), timeout=2)[0] == 200,
                    fwd, pause=0.001))
            finally:
                fwd.stop()
        self.results["case6"] = {"health_s": health, "first_chat_s": first_chat,
                                 "forwarder_s": forwarder}
        self.table.add("6", "start-up to first answered request (ms): forwarder (a forwarded "
                            "request); gateway /healthz / first chat (new conversation)",
                       "", cell(_ms(med(forwarder)), 0),
                       f"{cell(_ms(med(health)), 0)} / {cell(_ms(med(first_chat)), 0)}")

    # -- profiling ------------------------------------------------------------------------

    def _spy_start(self, gateway: Gateway, target: Target, stream: bool,
                   follow_up: bool) -> subprocess.Popen[bytes] | None:
        if not self.args.py_spy or target.name not in ("api", "v1") or gateway.child is None:
            return None
        name = (f"{target.name}-{'stream' if stream else 'json'}"
                f"{'-followup' if follow_up else ''}")
        out = RESULTS / f"profile-{name}-{len(list(RESULTS.glob(f'profile-{name}*')))}"
        RESULTS.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(
            [self.args.py_spy, "record", "--pid", str(gateway.pid), "--rate", "250",
             "--format", self.args.py_spy_format, "--output", str(out) + (
                 ".svg" if self.args.py_spy_format == "flamegraph" else ".txt"),
             "--threads", "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def _spy_stop(spy: subprocess.Popen[bytes] | None) -> None:
        if spy is None:
            return
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(5)


def _noise() -> str:
    if not OTHERS_CORES:
        return "n/a"
    return (f"median {statistics.median(OTHERS_CORES):.2f}, max {max(OTHERS_CORES):.2f}")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.0f}%"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


# ------------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="utf-8") as meminfo:
        mem = f"{int(meminfo.readline().split()[1]) / 2**20:.1f} GiB"
    return {
        "cpu": model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory": mem,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "aiohttp": aiohttp.__version__,
        "sqlite": sqlite3.sqlite_version,
        "os": f"{platform.system()} {platform.release()}",
        "load_average_at_start": os.getloadavg(),
    }


def compile_sources(root: Path) -> None:
    """The gateway's bytecode, so that a start measures what ``make run``'s does, also where
    PYTHONDONTWRITEBYTECODE is set (Python then compiles every module at every start)."""
    subprocess.run([PY, "-m", "compileall", "-q",
                    *(name for name in SOURCES if (root / name).exists())],
                   cwd=root, check=True)


def _git_revision() -> str:
    if GATEWAY_ROOT != ROOT:
        return f"gateway from {GATEWAY_ROOT}"
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "core", "web", "bot.py"], cwd=ROOT,
                           capture_output=True, text=True, check=False)
    return done.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")


# ------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    if args.reps:
        plan = Plan(**{**plan.__dict__, "reps": args.reps})
    cases = {int(c) for c in args.cases.split(",")} if args.cases else set(range(1, 8))
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    bench = Bench(plan, args, tmp)
    started = time.perf_counter()
    info = machine()
    revision = _git_revision()
    compile_sources(GATEWAY_ROOT)
    bench.log(f"bench: {'quick' if args.quick else 'full'} run in {tmp}; {info['cpu']}, "
              f"{info['cores']} cores, Python {info['python']}")
    gateway: Gateway | None = None
    try:
        _, bench.stub_port = start_stub(tmp, args)
        _, bench.forwarder_port = start_forwarder(tmp, bench.stub_port)
        _, bench.uvloop_port = start_forwarder(tmp, bench.stub_port, "forwarder-uvloop",
                                               uvloop=True)
        gateway = bench.new_gateway("gateway")
        gateway.setup()
        bench.v1, bench.v1_note = probe_v1(gateway)
        bench.log(f"  /v1/chat/completions: {bench.v1_note}")
        if 1 in cases:
            bench.case1(gateway)
        if 2 in cases:
            bench.results["case2"] = bench.case2(gateway)
        if 3 in cases:
            bench.case3(gateway)
        if 6 in cases:
            bench.case6(gateway)
        gateway.stop()
        if 4 in cases:
            bench.case4()
        if 5 in cases:
            bench.case5()
        if 7 in cases:
            bench.case7()
    finally:
        if gateway is not None:
            gateway.stop()
        stop_all()
        if args.keep:
            bench.log(f"bench: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    table = bench.table.markdown()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    header = (f"Machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
              f"{info['memory']}, Python {info['python']}, aiohttp {info['aiohttp']}, "
              f"SQLite {info['sqlite']}, {info['os']}. Revision {revision}"
              f"{'' if _git_revision() == revision else ' (changed during the run)'}. "
              f"{'Quick' if args.quick else 'Full'} run, {plan.reps} repetition(s), medians; "
              f"stub delay {args.stub_delay_ms} ms, {args.chunks} chunks a streamed reply; "
              f"gateway log level {args.gateway_log_level}; /v1: {bench.v1_note}; "
              f"{'extra config: ' + repr(args.extra_config) + '; ' if args.extra_config else ''}"
              f"other processes used {_noise()} of the cores during the measurements; "
              f"{time.perf_counter() - started:.0f} s.")
    report = {
        "when": stamp, "quick": args.quick, "machine": info, "plan": plan.__dict__,
        "revision": revision,
        "options": {"stub_delay_ms": args.stub_delay_ms, "chunks": args.chunks,
                    "chunk_delay_ms": args.chunk_delay_ms,
                    "gateway_log_level": args.gateway_log_level, "cases": sorted(cases)},
        "v1": {"available": bench.v1, "note": bench.v1_note},
        "header": header, "table": table, "results": bench.results,
        "seconds": time.perf_counter() - started,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"bench-{'quick-' if args.quick else ''}{args.label + '-' if args.label else ''}{stamp}"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1, default=str))
    (RESULTS / f"{name}.md").write_text(header + "\n\n" + table + "\n")
    if not (args.cases or args.gateway_root or args.extra_config or args.label or args.py_spy):
        shutil.copyfile(RESULTS / f"{name}.json",
                        RESULTS / f"latest{'-quick' if args.quick else ''}.json")
    print(header + "\n\n" + table)
    print(f"\nwritten: {RESULTS / name}.json and .md", file=sys.stderr)
    return report


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` block stops its children."""

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)


def _check_quick(report: dict[str, Any]) -> list[str]:
    """Quick mode is for CI: it fails when a case breaks (errors, missing figures)."""
    problems = []
    for label, pairs in report["results"].get("raw", {}).items():
        for key, runs in pairs.items():
            for r in runs:
                if r["errors"] or not r["ok"]:
                    problems.append(f"case {label} {key}: {r['errors']} errors "
                                    f"{r['error_sample'][:1]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the gateway's benchmark (issue 6)")
    parser.add_argument("--quick", action="store_true", help="tiny counts (CI, < 1 minute)")
    parser.add_argument("--cases", help="comma-separated subset of 1-7")
    parser.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    parser.add_argument("--stub-delay-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=16, help="content chunks a streamed reply")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--gateway-log-level", default="INFO")
    parser.add_argument("--py-spy", help="py-spy binary: profile the gateway under load")
    parser.add_argument("--py-spy-format", default="flamegraph",
                        choices=("flamegraph", "raw", "speedscope"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--gateway-root", type=Path,
                        help="run bot.py from this checkout instead (to compare two versions)")
    parser.add_argument("--extra-config", default="",
                        help="TOML appended to the generated gateway config (\\n for newlines),"
                             " e.g. '[chat]\\nv1_titles = false'")
    parser.add_argument("--label", default="", help="a word for the result file names")
    args = parser.parse_args(argv)
    global GATEWAY_ROOT
    if args.gateway_root:
        GATEWAY_ROOT = args.gateway_root.resolve()

    stop_on_sigterm()
    try:
        report = run(args)
    finally:
        stop_all()
    if args.quick:
        problems = _check_quick(report)
        for problem in problems:
            print(f"bench-quick: {problem}", file=sys.stderr)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
