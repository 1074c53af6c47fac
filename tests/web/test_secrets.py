"""Secrets stay secret: the access log masks key, token and password parameters, nothing else
logs them, and the database file holds no issued key and no access_token in plain text."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from core.gateway import Gateway
from tests.fakes.upstream import FakeUpstream
from web.access_log import RedactingAccessLogger, SecretFilter, redact_text
from web.app import create_app

from .support import Api, People, user_key

ACCESS_TOKEN = "sk-own-token-ZZZ-5f1c2d9e8b7a"
PASSWORD = "pw-Correct-Horse-Battery-9"
EMAIL = "very.private@example.org"


async def test_access_log_masks_secret_parameters(
    gateway: Gateway, admin_key: str, aiohttp_client: Any, upstream_a: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # Set up as bot.py does. Started here: aiohttp_client's server_kwargs never reach the runner.
    server_log = logging.getLogger("aiohttp.server")
    secret_filter = SecretFilter()
    server_log.addFilter(secret_filter)
    server = TestServer(create_app(gateway))
    await server.start_server(access_log_class=RedactingAccessLogger)
    client = await aiohttp_client(server)
    api = Api(client)
    user, _ = await api.add_user(admin_key, "ann")
    requests = [
        ("/api/chat", {"user": user, "access_token": ACCESS_TOKEN, "prompt": "own key"}),
        ("/api/recall", {"client": user, "limit": "5"}),
        ("/api/client/users", {"admin": admin_key, "search": "ann"}),
        ("/api/recall", {"api_key": user}),
        ("/api/recall", {"key": user}),
        ("/api/access-token", {"email": EMAIL, "password": PASSWORD}),
        ("/api/recall", {"User": user, "Access_Token": ACCESS_TOKEN}),
    ]
    statuses = []
    for path, params in requests:
        result = await api.call(path, params, via="get")
        statuses.append(result.status)
    assert statuses == [200, 200, 200, 200, 200, 501, 401]
    # The own-key chat really used the token upstream, so it passed through the gateway.
    assert upstream_a.chat_requests(titles=False)[-1].api_key == ACCESS_TOKEN
    # A request line too long for aiohttp's parser is logged by aiohttp itself, raw bytes and
    # all: the key near its start must be masked there too.
    unparsed = await api.call("/api/recall", {"user": user, "access_token": ACCESS_TOKEN,
                                              "pad": "p" * 9000}, via="get")
    assert unparsed.status == 400
    try:
        await client.close()  # waits for every handler, and so for every access-log line
    finally:
        server_log.removeFilter(secret_filter)
    assert any(r.name == "aiohttp.server" and "user=***" in (r.exc_text or "")
               for r in caplog.records), "the unparsable request was not logged"

    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(access) == len(requests) + 2  # and the add-user POST, and the unparsable one
    joined = "\n".join(access)
    for path, _ in requests:
        assert any(f"GET {path}?" in line for line in access), path
    assert "limit=5" in joined and "search=ann" in joined and "prompt=own" in joined
    assert joined.count("***") >= 9
    everything = "\n".join(f"{r.getMessage()} {r.exc_text}" for r in caplog.records) + (
        caplog.text)
    for secret in (user, admin_key, ACCESS_TOKEN, PASSWORD, EMAIL):
        assert secret not in everything
        assert secret.replace("@", "%40") not in everything


def test_free_text_masking_skips_nothing_a_pattern_would_catch() -> None:
    # The patterns run only where a cheap test says they can match (issue 14): each kind of
    # secret is still caught alone, in any case, and with (?i)'s non-ASCII look-alikes
    # ('\u017f' matches 's', '\u212a' 'k') that a plain substring test would miss.
    key = "gw_" + "A1b2" * 6
    assert redact_text('127.0.0.1 "POST /v1/chat/completions" 200 1.0ms') == (
        '127.0.0.1 "POST /v1/chat/completions" 200 1.0ms')
    assert redact_text(f"sent {key} once") == "sent gw_*** once"
    assert redact_text("auth BEARER abc.def-ghi") == "auth BEARER ***"
    assert redact_text("GET /x?Access_Token=tok1&a=1") == "GET /x?Access_Token=***&a=1"
    assert redact_text("ba\u017fic dXNlcjpwYXNz") == "ba\u017fic ***"
    assert redact_text("api_\u212aey=secret1") == "api_\u212aey=***"


@pytest.mark.sqlite_only  # reads SQLite's files; tests/core/test_keys.py covers PostgreSQL
async def test_database_holds_no_key_or_token_in_plain_text(
    api: Api, people: People, gateway: Gateway, settings: Any, upstream_a: FakeUpstream,
) -> None:
    issued = [people.admin, people.client, people.other_client]
    ann = await user_key(api, people, "ann")
    issued.append(ann)
    key, _ = await api.add_user(people.client, "bob", userid="b-1")
    issued.append(key)
    body = await api.ok("/api/chat", {"prompt": "created on first use", "user_id": "c-1",
                                      "username": "cat"}, key=people.client)
    assert body["api_user"] == "cat"
    rotated = (await api.ok("/api/rotate-key", key=ann))["api_key"]
    issued.append(rotated)
    rotated2 = (await api.ok("/api/rotate-key", {"userid": "b-1"}, key=people.client))["api_key"]
    issued.append(rotated2)
    first = await api.chat(rotated, "remember this prompt")
    await api.chat(rotated, "and this one", conversation_id=first["conversation_id"])
    own = await api.chat(rotated2, "bring your own key", access_token=ACCESS_TOKEN)
    assert own["mode"] == "own_key"
    await api.chat(rotated2, "own key again", access_token=ACCESS_TOKEN,
                   conversation_id=own["conversation_id"])
    assert {r.api_key for r in upstream_a.chat_requests(titles=False)} >= {ACCESS_TOKEN}

    db = Path(settings.storage.path)

    def stored() -> bytes:
        files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
        assert db in files
        return b"".join(p.read_bytes() for p in files)

    def check(data: bytes) -> None:
        # Proof that these are the right files: what must be stored is there.
        assert b"remember this prompt" in data and b"own key again" in data
        for secret in (*issued, ACCESS_TOKEN):
            assert secret.encode() not in data, secret[:10]
            assert secret[10:].encode() not in data, secret[:10]

    check(stored())  # while open: the main file and its WAL
    await gateway.close()
    check(stored())  # after the WAL is checkpointed into the main file
