"""/api/chat as a user of the original calls it: new conversations round robin over the accounts,
follow-ups pinned to theirs, the enriched reply, plus tiers, reply_only/pretty, and bad input."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from core.config import ChatSettings
from tests.fakes.upstream import FakeUpstream, Hang, Reply, Status

from .support import VIAS, Api, MakeApi, People, Via, user_key

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)")
READABLE = re.compile(r"\d{4}-\d\d-\d\d \| \d\d:\d\d:\d\d")


def user_messages(fake: FakeUpstream) -> list[list[dict[str, str]]]:
    """The ``messages`` of every non-title chat request the fake received, in order."""
    return [r.messages for r in fake.chat_requests(titles=False)]


@pytest.mark.parametrize("via", VIAS)
async def test_round_robin_and_follow_up_reaches_first_account(
    api: Api, people: People, upstream_a: FakeUpstream, upstream_b: FakeUpstream, via: Via,
) -> None:
    ann = await user_key(api, people)
    first = await api.ok("/api/chat", {"prompt": "hello"}, key=ann, via=via)
    second = await api.ok("/api/chat", {"prompt": "another topic"}, key=ann, via=via)
    assert (first["account"], first["model"]) == ("A", "model-a")
    assert (second["account"], second["model"]) == ("B", "model-b")
    assert first["reply"] == "reply 1 from A" and second["reply"] == "reply 1 from B"
    assert first["conversation_id"] != second["conversation_id"]

    follow = await api.ok("/api/chat", {"prompt": "tell me more",
                                        "conversation_id": first["conversation_id"]},
                          key=ann, via=via)
    assert follow["account"] == "A" and follow["reply"] == "reply 2 from A"
    assert follow["conversation_id"] == first["conversation_id"]
    assert follow["parent_id"] == first["message"]["id"]
    assert follow["is_new_conversation"] is False
    assert follow["conversation_title"] == first["conversation_title"] == "Fake Title"

    last = upstream_a.chat_requests(titles=False)[-1]
    assert last.api_key == "sk-account-a"
    assert last.model == "model-a"
    assert last.messages == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "reply 1 from A"},
        {"role": "user", "content": "tell me more"},
    ]
    # B saw only its own conversation, with its own key; every call carried the right key.
    assert user_messages(upstream_b) == [[{"role": "user", "content": "another topic"}]]
    assert {r.api_key for r in upstream_a.chat_requests()} == {"sk-account-a"}
    assert {r.api_key for r in upstream_b.chat_requests()} == {"sk-account-b"}
    # Each new conversation asked its own account for a title, the follow-up did not.
    assert len(upstream_a.chat_requests(titles=True)) == 1
    assert len(upstream_b.chat_requests(titles=True)) == 1

    follow2 = await api.ok("/api/chat", {"prompt": "and then?",
                                         "conversation_id": second["conversation_id"]},
                           key=ann, via=via)
    assert follow2["account"] == "B" and follow2["last_message_prompt"] == "another topic"


async def test_enrichment_fields(api: Api, people: People) -> None:
    key, user = await api.add_user(people.client, "bob", userid="discord-42")
    before = datetime.now(UTC)
    new = await api.chat(key, "What is the answer?")
    after = datetime.now(UTC)

    assert new["status"] == "success"
    assert uuid.UUID(new["conversation_id"]) and uuid.UUID(new["message"]["id"])
    assert new["message"]["content"]["parts"][0] == new["reply"] == "reply 1 from A"
    assert new["message"]["author"]["role"] == "assistant"
    assert new["parent_id"] is None
    assert new["model"] == "model-a"
    assert new["conversation_title"] == "Fake Title"
    assert new["api_user"] == "bob"
    assert new["api_client_id"] == people.client_id == user["client_id"]
    assert new["api_prompt"] == "What is the answer?"
    # The fake counts words as tokens: 4 in the prompt, 4 in "reply 1 from A".
    assert new["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}
    origin = new["api_prompt_time_origin"]
    assert ISO_UTC.fullmatch(origin), origin
    moment = datetime.fromisoformat(origin.replace("Z", "+00:00"))
    assert moment.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= moment <= after
    assert READABLE.fullmatch(new["api_prompt_time_origin_readable"])
    assert new["api_prompt_time_origin_readable"] == moment.strftime("%Y-%m-%d | %H:%M:%S")
    taken = new["api_response_time_taken"]
    assert isinstance(taken, int | float) and 0 <= taken <= (after - before).total_seconds()
    assert "last_message_prompt" not in new and "last_message_reply" not in new

    follow = await api.chat(key, "Why?", conversation_id=new["conversation_id"])
    assert follow["last_message_prompt"] == "What is the answer?"
    assert follow["last_message_reply"] == "reply 1 from A"
    assert follow["api_prompt"] == "Why?"
    assert follow["message"]["content"]["parts"][0] == "reply 2 from A"
    assert follow["parent_id"] == new["message"]["id"]
    assert follow["message"]["id"] != new["message"]["id"]

    third = await api.chat(key, "And?", conversation_id=new["conversation_id"])
    assert third["last_message_prompt"] == "Why?"
    assert third["last_message_reply"] == "reply 2 from A"
    assert third["parent_id"] == follow["message"]["id"]


async def test_admin_made_user_has_no_client(api: Api, people: People) -> None:
    ann = await user_key(api, people)
    body = await api.chat(ann, "hi")
    assert body["api_user"] == "ann" and body["api_client_id"] is None


async def test_reply_only_as_json_boolean_or_string(api: Api, people: People) -> None:
    ann = await user_key(api, people)
    for via, value in (("json", True), ("json", "true"), ("json", "True"), ("get", "true"),
                       ("form", "true")):
        result = await api.call("/api/chat", {"prompt": "hi", "reply_only": value}, key=ann,
                                via=via)
        assert result.status == 200, result.text
        assert result.content_type == "text/plain", (via, value)
        assert re.fullmatch(r"reply \d from [AB]", result.text), result.text
    for via, value in (("json", False), ("json", "false"), ("get", "false"), ("form", "false")):
        body = await api.ok("/api/chat", {"prompt": "hi", "reply_only": value}, key=ann,
                            via=via)
        assert body["reply"].startswith("reply "), (via, value)


async def test_bad_boolean_is_400(api: Api, people: People, upstream_a: FakeUpstream) -> None:
    ann = await user_key(api, people)
    await api.error("/api/chat", {"prompt": "hi", "reply_only": "perhaps"}, key=ann,
                    status=400, code="invalid_parameter")
    await api.error("/api/chat", {"prompt": "hi", "stream": [1]}, key=ann,
                    status=400, code="invalid_parameter")
    assert upstream_a.requests == []


async def test_pretty_json_is_indented(api: Api, people: People) -> None:
    ann = await user_key(api, people)
    result = await api.call("/api/chat", {"prompt": "hi", "pretty": True}, key=ann)
    assert result.status == 200 and result.text.startswith("{\n  ")
    assert result.body["reply"] == "reply 1 from A"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.mark.parametrize("via", VIAS)
async def test_reply_only_pretty_is_sanitised_html(api: Api, people: People,
                                                   upstream_a: FakeUpstream, via: Via) -> None:
    upstream_a.enqueue(Reply(
        "# Title\n\nSome **bold** text.\n\n<script>alert('x')</script>\n\n"
        '<img src="x" onerror="alert(1)">\n\n[click](javascript:alert(2)) '
        "[safe](https://example.org)\n\n```\ncode\n```\n"
    ))
    ann = await user_key(api, people)
    result = await api.call("/api/chat", {"prompt": "hi", "reply_only": "true",
                                          "pretty": "true"}, key=ann, via=via)
    assert result.status == 200, result.text
    assert result.content_type == "text/html"
    parser = _Tags()
    parser.feed(result.text)
    tags = [tag for tag, _ in parser.tags]
    assert "h1" in tags and "strong" in tags and "pre" in tags
    assert "script" not in tags and "img" not in tags
    for tag, attrs in parser.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert not (attrs.get("href") or "").lower().startswith("javascript"), (tag, attrs)
    hrefs = [attrs.get("href") for tag, attrs in parser.tags if tag == "a"]
    assert "https://example.org" in hrefs
    assert "<script" not in result.text.lower()
    assert "default-src 'none'" in result.headers["Content-Security-Policy"]


async def test_missing_prompt_sends_default_prompt(api: Api, people: People,
                                                   upstream_a: FakeUpstream,
                                                   upstream_b: FakeUpstream) -> None:
    ann = await user_key(api, people)
    default = ChatSettings().default_prompt
    for params, via in (({}, "get"), ({"prompt": ""}, "json"), ({"prompt": "   "}, "form"),
                        ({"prompt": None}, "json")):
        body = await api.ok("/api/chat", params, key=ann, via=via)
        assert body["api_prompt"] == default, params
    sent = user_messages(upstream_a) + user_messages(upstream_b)
    assert sent == [[{"role": "user", "content": default}]] * 4


# ----------------------------------------------------------------------------- plus tiers


async def test_plus_choices_for_a_free_user(api: Api, people: People, upstream_a: FakeUpstream,
                                            upstream_plus: FakeUpstream) -> None:
    ann = await user_key(api, people)
    assert (await api.chat(ann, "a", plus=False))["account"] == "A"
    assert (await api.chat(ann, "b", plus="false"))["account"] == "B"
    # "any" without plus rights quietly means the free tier.
    assert (await api.chat(ann, "c", plus="any"))["account"] in {"A", "B"}
    for value, via in ((True, "json"), ("true", "get"), ("TRUE", "form")):
        await api.error("/api/chat", {"prompt": "d", "plus": value}, key=ann, via=via,
                        status=403, code="plus_not_allowed")
    for value in ("maybe", "2", "yes please"):
        await api.error("/api/chat", {"prompt": "e", "plus": value}, key=ann, status=400,
                        code="invalid_parameter")
    assert upstream_plus.requests == []


async def test_plus_user_reaches_plus_account(api: Api, people: People,
                                              upstream_plus: FakeUpstream) -> None:
    pat = await user_key(api, people, "pat", plus=True)
    body = await api.chat(pat, "deep question", plus=True)
    assert (body["account"], body["model"]) == ("P", "model-plus")
    assert body["reply"] == "reply 1 from P"
    [call] = upstream_plus.chat_requests(titles=False)
    assert call.api_key == "sk-account-plus"
    follow = await api.chat(pat, "more", conversation_id=body["conversation_id"])
    assert follow["account"] == "P"
    # "any" takes both tiers in turn.
    accounts = [(await api.chat(pat, f"q{i}", plus="any"))["account"] for i in range(3)]
    assert sorted(accounts) == ["A", "B", "P"]
    # Plus taken away: the plus conversation cannot be followed up any more.
    await api.ok("/api/client/update-user", {"userid": str(body_user_id(body)),
                                             "plus": False}, key=people.admin)
    await api.error("/api/chat", {"prompt": "again", "conversation_id": body["conversation_id"]},
                    key=pat, status=403, code="plus_not_allowed")


def body_user_id(body: dict[str, object]) -> int:
    """The principal id behind a chat answer (admin-made users have no userid)."""
    value = body["api_user_id"]
    assert isinstance(value, str) and value.isdigit()
    return int(value)


async def test_granting_plus_through_update_user(api: Api, people: People) -> None:
    key, _ = await api.add_user(people.client, "bob", userid="u-1")
    await api.error("/api/chat", {"prompt": "x", "plus": True}, key=key, status=403)
    body = await api.ok("/api/client/update-user", {"userid": "u-1", "plus": "true"},
                        key=people.client, via="get")
    assert body["user"]["plus"] is True
    assert (await api.chat(key, "x", plus=True))["account"] == "P"


# ----------------------------------------------------------------------------- conversations


async def test_follow_up_of_unknown_or_foreign_conversation_is_404(api: Api,
                                                                   people: People) -> None:
    ann = await user_key(api, people, "ann")
    ben = await user_key(api, people, "ben")
    mine = await api.chat(ann, "mine")
    await api.error("/api/chat", {"prompt": "x", "conversation_id": mine["conversation_id"]},
                    key=ben, status=404, code="conversation_not_found")
    await api.error("/api/chat", {"prompt": "x", "conversation_id": str(uuid.uuid4())},
                    key=ann, status=404, code="conversation_not_found")
    await api.error("/api/chat", {"prompt": "x", "conversation_id": "c" * 500},
                    key=ann, status=400, code="invalid_parameter")


# ----------------------------------------------------------------------------- bad input


async def test_malformed_or_non_object_body_is_400(api: Api, people: People,
                                                   upstream_a: FakeUpstream) -> None:
    ann = await user_key(api, people)
    bodies = [
        (b'{"prompt": "hi"', "application/json"),
        (b"not json at all", "application/json"),
        (b'["prompt", "hi"]', "application/json"),
        (b'"just a string"', "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"[1, 2]", "text/plain"),
        (b'{"prompt": ', "application/x-www-form-urlencoded"),
    ]
    for raw, content_type in bodies:
        for path in ("/api/chat", "/api/recall", "/api/client/add-user"):
            resp = await api.client.post(path, data=raw, headers={
                "Content-Type": content_type, "Authorization": f"Bearer {ann}"})
            async with resp:
                assert resp.status == 400, (raw, await resp.text())
                body = await resp.json()
            assert body["status"] == "error" and body["code"] == "malformed_json", raw
    assert upstream_a.requests == []


async def test_body_over_limit_is_413(custom_api: MakeApi, upstream_a: FakeUpstream) -> None:
    api, gateway = await custom_api(server={"max_body_bytes": 2048})
    key = await gateway.create_admin("root")
    assert (await api.chat(key, "x" * 1000))["reply"] == "reply 1 from A"
    big = "x" * 4096
    for via in ("json", "form"):
        await api.error("/api/chat", {"prompt": big}, key=key, via=via, status=413)
    resp = await api.client.post("/api/chat", data=b"{" + b" " * 5000 + b"}",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {key}"})
    async with resp:
        assert resp.status == 413
        body = await resp.json()
    assert body["status"] == "error" and body["code"] == "body_too_large"
    assert len(upstream_a.chat_requests(titles=False)) == 1


async def test_prompt_over_limit_is_413(custom_api: MakeApi, upstream_a: FakeUpstream) -> None:
    api, gateway = await custom_api(chat={"max_prompt_chars": 50})
    key = await gateway.create_admin("root")
    for via in VIAS:
        await api.error("/api/chat", {"prompt": "y" * 51}, key=key, via=via, status=413,
                        code="prompt_too_large")
    assert upstream_a.requests == []
    assert (await api.chat(key, "y" * 50))["api_prompt"] == "y" * 50


# ----------------------------------------------------------------------------- own key


async def test_access_token_uses_the_callers_credential(api: Api, people: People,
                                                        upstream_a: FakeUpstream,
                                                        upstream_b: FakeUpstream) -> None:
    """Own-key conversations use the caller's credential at the first account's base URL."""
    ann = await user_key(api, people)
    own = await api.chat(ann, "mine", access_token="tok-ann")
    assert own["mode"] == "own_key" and own["account"] is None
    assert own["model"] == "model-a" and own["conversation_title"] == "Fake Title"
    assert {r.api_key for r in upstream_a.chat_requests()} == {"tok-ann"}
    cid = own["conversation_id"]
    follow = await api.chat(ann, "more", access_token="tok-ann", conversation_id=cid, via="get")
    assert follow["mode"] == "own_key" and follow["last_message_prompt"] == "mine"
    assert upstream_a.chat_requests(titles=False)[-1].messages[0] == {"role": "user",
                                                                       "content": "mine"}
    # Mixing modes on a follow-up is a conflict, either way round.
    await api.error("/api/chat", {"prompt": "x", "conversation_id": cid}, key=ann,
                    status=409, code="mode_mismatch")
    pooled = await api.chat(ann, "pool")
    await api.error("/api/chat", {"prompt": "x", "conversation_id": pooled["conversation_id"],
                                  "access_token": "tok-ann"}, key=ann, status=409,
                    code="mode_mismatch")
    # user_plus picks the plus model for the caller's own credential.
    plus = await api.chat(ann, "big", access_token="tok-ann", user_plus="true")
    assert plus["model"] == "model-plus"
    assert upstream_a.chat_requests(titles=False)[-1].model == "model-plus"
    # Only the pooled conversation used the account's own key.
    assert pooled["account"] == "A"
    keys = [r.api_key for r in upstream_a.chat_requests(titles=False)]
    assert keys == ["tok-ann", "tok-ann", "sk-account-a", "tok-ann"]
    assert upstream_b.requests == []


async def test_refused_access_token_is_the_callers_problem_not_the_accounts(
    api: Api, people: People, upstream_a: FakeUpstream,
) -> None:
    ann = await user_key(api, people)
    upstream_a.enqueue(Status(401))
    await api.error("/api/chat", {"prompt": "x", "access_token": "expired"}, key=ann,
                    status=400, code="access_token_rejected")
    upstream_a.enqueue(Status(429, headers={"Retry-After": "3"}))
    result = await api.error("/api/chat", {"prompt": "x", "access_token": "busy"}, key=ann,
                             status=429, code="upstream_rate_limited")
    assert result.headers["Retry-After"] == "3"
    body = await api.ok("/api/admin/accounts", key=people.admin)
    assert all(a["health"] == "healthy" for a in body["accounts"])
    assert (await api.ok("/api/recall", key=ann))["total"] == 0


# ----------------------------------------------------------------------------- titles


async def test_title_falls_back_to_the_prompt(api: Api, people: People,
                                              upstream_a: FakeUpstream,
                                              upstream_b: FakeUpstream) -> None:
    ann = await user_key(api, people)
    upstream_a.enqueue_title(Status(500))
    body = await api.chat(ann, "How do   magnets work?")
    assert body["conversation_title"] == "How do magnets work?"
    upstream_b.enqueue_title('Title: "Magnets, explained"')
    body = await api.chat(ann, "again")
    assert body["conversation_title"] == "Magnets, explained"
    listing = await api.ok("/api/recall", key=ann)
    assert [c["title"] for c in listing["conversations"]] == ["Magnets, explained",
                                                              "How do magnets work?"]


async def test_slow_title_does_not_hold_the_reply(custom_api: MakeApi,
                                                  upstream_a: FakeUpstream) -> None:
    api, gateway = await custom_api(chat={"title_timeout_s": 0.2})
    admin = await gateway.create_admin("root")
    upstream_a.enqueue_title(Hang())
    body = await api.chat(admin, "a question about tides")
    assert body["reply"] == "reply 1 from A"
    assert body["conversation_title"] == "a question about tides"


async def test_caller_over_the_rate_limit_gets_429(custom_api: MakeApi,
                                                   upstream_a: FakeUpstream) -> None:
    api, gateway = await custom_api(limits={"user_requests_per_minute": 2})
    admin = await gateway.create_admin("root")
    ann, _ = await api.add_user(admin, "ann")
    await api.chat(ann, "one")
    await api.chat(ann, "two")
    calls = len(upstream_a.requests)
    result = await api.error("/api/chat", {"prompt": "three"}, key=ann, status=429,
                             code="rate_limited")
    assert 1 <= int(result.headers["Retry-After"]) <= 60
    assert len(upstream_a.requests) == calls
    # The limit is per caller: another key is not held back.
    assert (await api.chat(admin, "mine"))["status"] == "success"


async def test_errors_stay_json_with_reply_only(api: Api, people: People) -> None:
    ann = await user_key(api, people)
    for via in VIAS:
        await api.error("/api/chat", {"prompt": "x", "plus": "true", "reply_only": "true",
                                      "pretty": "true"}, key=ann, via=via, status=403,
                        code="plus_not_allowed")
        await api.error("/api/chat", {"prompt": "x", "reply_only": "true",
                                      "conversation_id": "gone"}, key=ann, via=via,
                        status=404)
