"""Helpers of the HTTP API suite: one way to call any endpoint by GET (query), POST JSON or
POST form, with the key sent as ``Authorization: Bearer`` or as the original's ``user=`` /
``client=`` / ``admin=`` parameter, and assertions on the one error shape."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDictProxy

from core.gateway import Gateway
from web.app import create_app

Via = Literal["get", "json", "form"]
VIAS: tuple[Via, ...] = ("get", "json", "form")
KEY_RE = re.compile(r"gw_[A-Za-z0-9_-]{43}")
MakeApi = Callable[..., Awaitable[tuple["Api", Gateway]]]
"""The ``custom_api`` fixture: the app over settings of a test's choosing."""


@asynccontextmanager
async def serving(gateway: Gateway) -> AsyncIterator[str]:
    """The app on a free port of 127.0.0.1, as a real client reaches it: its root URL."""
    runner = web.AppRunner(create_app(gateway))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@dataclass
class Result:
    status: int
    headers: CIMultiDictProxy[str]
    text: str
    content_type: str
    data: Any = field(default=None)

    @property
    def body(self) -> dict[str, Any]:
        assert isinstance(self.data, dict), f"not a JSON object ({self.status}): {self.text!r}"
        return self.data


def as_text(value: Any) -> str:
    """How a query string or a form carries a value: booleans as "true"/"false"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Api:
    """The app under test, seen the way a user of the original project calls it."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def call(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        via: Via = "json",
        key_as: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Result:
        """One request. ``key_as`` ("user", "client", "admin") sends the key as that parameter
        instead of the Bearer header."""
        params = dict(params or {})
        all_headers = dict(headers or {})
        if key is not None:
            if key_as:
                params[key_as] = key
            else:
                all_headers["Authorization"] = f"Bearer {key}"
        if via == "get":
            query = {name: as_text(value) for name, value in params.items()}
            resp = await self.client.get(path, params=query, headers=all_headers)
        elif via == "form":
            form = {name: as_text(value) for name, value in params.items()}
            resp = await self.client.post(path, data=form, headers=all_headers)
        else:
            resp = await self.client.post(path, json=params, headers=all_headers)
        async with resp:
            text = await resp.text()
            result = Result(resp.status, resp.headers, text, resp.content_type)
        if result.content_type == "application/json":
            result.data = json.loads(text)
        return result

    async def ok(self, path: str, params: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> dict[str, Any]:
        result = await self.call(path, params, **kwargs)
        assert result.status == 200, result.text
        body = result.body
        assert body["status"] in ("success", "ok"), body
        return body

    async def error(self, path: str, params: Mapping[str, Any] | None = None, *, status: int,
                    code: str | None = None, **kwargs: Any) -> Result:
        result = await self.call(path, params, **kwargs)
        assert_error(result, status, code)
        return result

    # -- shortcuts -----------------------------------------------------------------------

    async def add_user(self, key: str, username: str, *, path: str = "/api/client/add-user",
                       via: Via = "json", **params: Any) -> tuple[str, dict[str, Any]]:
        body = await self.ok(path, {"username": username, **params}, key=key, via=via)
        assert KEY_RE.fullmatch(body["api_key"]), body
        return body["api_key"], body["user"]

    async def chat(self, key: str, prompt: str | None = None, **params: Any) -> dict[str, Any]:
        if prompt is not None:
            params["prompt"] = prompt
        body = await self.ok("/api/chat", params, key=key)
        assert body["status"] == "success"
        return body


def assert_error(result: Result, status: int, code: str | None = None) -> None:
    """The one error shape, with the expected status, never a 500 or a stack trace."""
    assert result.status == status, f"expected {status}, got {result.status}: {result.text}"
    assert result.content_type == "application/json", result.text
    body = result.body
    assert body["status"] == "error", body
    assert set(body) == {"status", "message", "code"}, body
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body["code"], str) and body["code"], body
    assert "Traceback" not in result.text
    if code is not None:
        assert body["code"] == code, body


@dataclass
class People:
    admin: str
    client: str
    client_id: int
    other_client: str
    other_client_id: int


async def user_key(api: Api, people: People, username: str = "ann", *,
                   plus: bool = False) -> str:
    """A plain user created by the admin, returning its key."""
    key, user = await api.add_user(people.admin, username, plus=plus)
    assert user["role"] == "user" and user["plus"] is plus
    return key


def sse_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event, data)`` pairs of a server-sent event stream, checking its framing."""
    assert raw.endswith("\n\n"), raw[-200:]
    events = []
    for block in raw[:-2].split("\n\n"):
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith(
            "data: "), block
        events.append((lines[0].removeprefix("event: "), json.loads(lines[1][len("data: "):])))
    return events
