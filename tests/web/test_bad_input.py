"""Hostile input gets a 400 in the usual shape, on /api and /v1, and nothing is logged as an
error: JSON nested 100,000 deep, lone surrogates, bytes a key cannot hold in the Authorization
header, multipart without a boundary, numbers past 64 bits."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.web.test_auth import AUTHED

from .support import Api, People, Result, assert_error, user_key

DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"prompt": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001


@pytest.fixture
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


async def post_raw(client: TestClient, path: str, body: bytes, *, key: str | None = None,
                   content_type: str = "application/json") -> Result:
    headers = {"Content-Type": content_type}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    async with client.post(path, data=body, headers=headers) as resp:
        text = await resp.text()
        result = Result(resp.status, resp.headers, text, resp.content_type)
    if result.content_type == "application/json":
        result.data = json.loads(text)
    return result


def assert_openai_400(result: Result) -> None:
    assert result.status == 400, result.text
    error = result.body["error"]
    assert error["type"] == "invalid_request_error" and error["message"], error


async def test_deep_json_is_refused_before_authentication(
    api: Api, people: People, no_errors_logged: None,
) -> None:
    for path in [*AUTHED, "/api/access-token"]:
        for body in (DEEP, DEEP_OBJECT):
            result = await post_raw(api.client, path, body)
            assert_error(result, 400, "malformed_json")
    # /v1 checks the key first (as OpenAI does), then the body.
    member = await user_key(api, people)
    for body in (DEEP, b'{"messages": [{"role": "user", "content": ' + DEEP + b"}]}"):
        assert_openai_400(await post_raw(api.client, "/v1/chat/completions", body, key=member))


async def test_lone_surrogates_are_refused(api: Api, people: People,
                                           no_errors_logged: None) -> None:
    member = await user_key(api, people)
    body = b'{"prompt": "hi \\ud800 there"}'
    assert_error(await post_raw(api.client, "/api/chat", body, key=member), 400,
                 "malformed_json")
    # The same code point sent as UTF-8 bytes (which Python's JSON decoder lets through).
    raw = b'{"prompt": "hi \xed\xa0\x80 there"}'
    assert_error(await post_raw(api.client, "/api/chat", raw, key=member), 400,
                 "malformed_json")
    # ... in a key or a nested field, and on /v1
    nested = b'{"conversation_id": "\\udfff", "prompt": "x"}'
    assert_error(await post_raw(api.client, "/api/recall", nested, key=member), 400)
    v1 = b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud800"}]}]}'
    assert_openai_400(await post_raw(api.client, "/v1/chat/completions", v1, key=member))
    # A real pair (an emoji) is fine.
    ok = await api.chat(member, "smile \U0001F600")
    assert ok["api_prompt"] == "smile \U0001F600"
    # Percent-encoded in a query, yarl decodes the surrogate's bytes as U+FFFD: no 500.
    async with api.client.get("/api/recall?conversation_id=%ED%A0%80",
                              headers={"Authorization": f"Bearer {member}"}) as resp:
        assert resp.status == 404


async def raw_request(client: TestClient, head: bytes) -> tuple[int, bytes]:
    """A request written byte by byte as given (no client library would send these bytes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(head)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("path", ["/api/recall", "/v1/models"])
async def test_bytes_a_key_cannot_hold_are_a_400(api: Api, people: People, path: str,
                                                  no_errors_logged: None) -> None:
    member = await user_key(api, people)
    for bad in (member[:20].encode() + b"\xff\xfe" + member[20:].encode(),
                member.encode() + "\u00e9".encode()):
        status, body = await raw_request(
            api.client, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close"
            b"\r\nAuthorization: Bearer " + bad + b"\r\n\r\n")
        assert status == 400, body
        data = json.loads(body)
        assert "error" in data if path.startswith("/v1") else data["code"] == "malformed_key"


async def test_multipart_without_a_boundary_is_a_400(
    api: Api, people: People, no_errors_logged: None,
) -> None:
    member = await user_key(api, people)
    result = await post_raw(api.client, "/api/chat", b"prompt=hi", key=member,
                            content_type="multipart/form-data")
    assert_error(result, 400, "malformed_form")
    # The web UI's forms too: sign-in reads its form before anything else.
    async with api.client.post("/login", data=b"key=x",
                               headers={"Content-Type": "multipart/form-data"}) as resp:
        assert resp.status == 400


async def test_numbers_past_64_bits(api: Api, people: People, no_errors_logged: None) -> None:
    member = await user_key(api, people)
    huge = "9" * 30
    # An admin names a user by userid, else by numeric id: a number no id can be is no user.
    await api.error("/api/client/remove-user", {"userid": huge}, key=people.admin,
                    status=404, code="user_not_found")
    await api.error("/api/client/update-user", {"userid": "\u00b2", "plus": True},
                    key=people.admin, status=404, code="user_not_found")
    for params in ({"offset": huge}, {"limit": huge}):
        await api.error("/api/recall", params, key=member, status=400,
                        code="invalid_parameter")
    body = b'{"prompt": "x", "temperature": 1' + b"0" * 400 + b"}"
    assert_error(await post_raw(api.client, "/api/chat", body, key=member), 400,
                 "invalid_parameter")
    body = b'{"prompt": "x", "max_tokens": 1' + b"0" * 400 + b"}"
    assert_error(await post_raw(api.client, "/api/chat", body, key=member), 400,
                 "invalid_parameter")


async def test_json_past_64_levels_is_refused_and_a_long_flat_history_is_not(
        api: Api, people: People, no_errors_logged: None) -> None:
    """Depths the JSON parser reads (it stops near 1,024) but the gateway does not take past
    64; a history of many messages holds many brackets and is not deep."""
    member = await user_key(api, people)
    for depth, refused in ((64, False), (65, True), (900, True)):
        prompt = b"[" * (depth - 1) + b"]" * (depth - 1)  # the body object is the first level
        result = await post_raw(api.client, "/api/chat", b'{"prompt": ' + prompt + b"}",
                                key=member)
        assert_error(result, 400)  # at 64, a prompt that is not text
        assert ("nested deeper than 64 levels" in result.body["message"]) is refused
    history = [{"role": ("user", "assistant")[n % 2], "content": f"message {n}"}
               for n in range(199)]
    body = json.dumps({"messages": history}).encode()
    assert body.count(b"{") > 64
    result = await post_raw(api.client, "/v1/chat/completions", body, key=member)
    assert result.status == 200, result.text


async def test_v1_refuses_depth_beside_a_plain_history_and_inside_content_parts(
        api: Api, people: People, no_errors_logged: None) -> None:
    """/v1 walks only what is not a plain history (whose depth it knows): the rest is still
    held to 64 levels, a field beside the messages as well as a message's content parts."""
    member = await user_key(api, people)
    history = [{"role": ("user", "assistant")[n % 2], "content": f"message {n}"}
               for n in range(9)]
    def nested(levels: int) -> Any:
        return json.loads("[" * levels + "]" * levels)

    for depth, refused in ((64, False), (65, True), (900, True)):  # levels in all
        beside = {"messages": history, "metadata": {"x": nested(depth - 2)}}
        inside = {"messages": [*history[:-1], {"role": "user", "content": [
            {"type": "text", "text": "hi", "extra": nested(depth - 5)}]}]}
        for body in (beside, inside):
            result = await post_raw(api.client, "/v1/chat/completions",
                                    json.dumps(body).encode(), key=member)
            if refused:
                assert_openai_400(result)
                assert "nested deeper than 64 levels" in result.body["error"]["message"]
            else:
                assert result.status == 200, result.text
