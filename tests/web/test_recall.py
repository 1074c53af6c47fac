"""/api/recall and /api/remove-conversation: a caller's conversations newest first, paginated;
one conversation's turns oldest first; a client for its user; an admin for anyone (audit)."""

from __future__ import annotations

import pytest

from tests.fakes.upstream import FakeUpstream

from .support import VIAS, Api, People, Via, user_key


@pytest.mark.parametrize("via", VIAS)
async def test_list_newest_first_with_pagination(api: Api, people: People, via: Via) -> None:
    ann = await user_key(api, people)
    ids = [(await api.chat(ann, f"topic {i}"))["conversation_id"] for i in range(5)]
    body = await api.ok("/api/recall", key=ann, via=via)
    assert body["total"] == 5 and body["offset"] == 0
    assert [c["conversation_id"] for c in body["conversations"]] == ids[::-1]
    first = body["conversations"][0]
    assert first["title"] == "Fake Title" and first["turns"] == 1
    assert first["created"] and first["updated"]

    page = await api.ok("/api/recall", {"limit": 2, "offset": 1}, key=ann, via=via)
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)
    assert [c["conversation_id"] for c in page["conversations"]] == [ids[3], ids[2]]
    tail = await api.ok("/api/recall", {"limit": "2", "offset": "4"}, key=ann, via=via)
    assert [c["conversation_id"] for c in tail["conversations"]] == [ids[0]]
    beyond = await api.ok("/api/recall", {"offset": 10}, key=ann, via=via)
    assert beyond["conversations"] == [] and beyond["total"] == 5

    # A follow-up makes its conversation the newest.
    await api.chat(ann, "back to it", conversation_id=ids[1])
    body = await api.ok("/api/recall", {"limit": 1}, key=ann, via=via)
    assert [c["conversation_id"] for c in body["conversations"]] == [ids[1]]


async def test_bad_pagination_is_400(api: Api, people: People) -> None:
    ann = await user_key(api, people)
    for params in ({"limit": 0}, {"limit": "many"}, {"offset": -1}, {"limit": 10_000},
                   {"limit": True}, {"offset": "1.5"}):
        await api.error("/api/recall", params, key=ann, status=400, code="invalid_parameter")


@pytest.mark.parametrize("via", VIAS)
async def test_one_conversation_turns_oldest_first(api: Api, people: People, via: Via) -> None:
    ann = await user_key(api, people)
    first = await api.chat(ann, "one")
    cid = first["conversation_id"]
    second = await api.chat(ann, "two", conversation_id=cid)
    third = await api.chat(ann, "three", conversation_id=cid)
    body = await api.ok("/api/recall", {"conversation_id": cid}, key=ann, via=via)
    assert body["conversation_id"] == cid and body["conversation_title"] == "Fake Title"
    messages = body["messages"]
    assert [m["prompt"] for m in messages] == ["one", "two", "three"]
    assert [m["reply"] for m in messages] == ["reply 1 from A", "reply 2 from A",
                                              "reply 3 from A"]
    assert [m["id"] for m in messages] == [first["message"]["id"], second["message"]["id"],
                                           third["message"]["id"]]
    assert [m["parent_id"] for m in messages] == [None, first["message"]["id"],
                                                  second["message"]["id"]]
    times = [m["prompt_time"] for m in messages]
    assert times == sorted(times) and all(m["reply_time"] for m in messages)
    assert body["conversation"]["turns"] == 3


async def test_recall_of_another_users_conversation_is_404(api: Api, people: People) -> None:
    ann = await user_key(api, people, "ann")
    ben = await user_key(api, people, "ben")
    mine = await api.chat(ann, "private")
    await api.error("/api/recall", {"conversation_id": mine["conversation_id"]}, key=ben,
                    status=404, code="conversation_not_found")
    await api.error("/api/recall", {"conversation_id": "no-such-id"}, key=ann, status=404,
                    code="conversation_not_found")
    assert (await api.ok("/api/recall", key=ben))["total"] == 0
    # The client did not create ann, so it cannot see her conversation either.
    await api.error("/api/recall", {"conversation_id": mine["conversation_id"]},
                    key=people.client, status=404)


async def test_client_recalls_for_its_user(api: Api, people: People) -> None:
    body = await api.ok("/api/chat", {"prompt": "hi", "user_id": "u-1", "username": "Uma"},
                        key=people.client)
    cid = body["conversation_id"]
    listing = await api.ok("/api/recall", {"user_id": "u-1"}, key=people.client, via="get")
    assert [c["conversation_id"] for c in listing["conversations"]] == [cid]
    one = await api.ok("/api/recall", {"user_id": "u-1", "conversation_id": cid},
                       key=people.client, via="form")
    assert [m["prompt"] for m in one["messages"]] == ["hi"]


async def test_admin_audits_everyone(api: Api, people: People) -> None:
    ann = await user_key(api, people, "ann")
    a = await api.chat(ann, "from ann")
    b = await api.ok("/api/chat", {"prompt": "from uma", "user_id": "u-1", "username": "Uma"},
                     key=people.client)
    listing = await api.ok("/api/recall", key=people.admin)
    assert [c["conversation_id"] for c in listing["conversations"]] == [
        b["conversation_id"], a["conversation_id"]]
    assert listing["total"] == 2
    owners = {c["owner_id"] for c in listing["conversations"]}
    assert len(owners) == 2
    for convo, prompt in ((a, "from ann"), (b, "from uma")):
        one = await api.ok("/api/recall", {"conversation_id": convo["conversation_id"]},
                           key=people.admin, via="get")
        assert [m["prompt"] for m in one["messages"]] == [prompt]
    # all=false narrows an admin to their own conversations.
    own = await api.ok("/api/recall", {"all": "false"}, key=people.admin)
    assert own["total"] == 0


@pytest.mark.parametrize("via", VIAS)
async def test_remove_conversation_then_recall_and_follow_up_404(
    api: Api, people: People, upstream_a: FakeUpstream, via: Via,
) -> None:
    ann = await user_key(api, people)
    keep = await api.chat(ann, "keep me")
    gone = await api.chat(ann, "remove me")
    cid = gone["conversation_id"]
    body = await api.ok("/api/remove-conversation", {"conversation_id": cid}, key=ann, via=via)
    assert body["removed"] is True and body["conversation_id"] == cid
    await api.error("/api/recall", {"conversation_id": cid}, key=ann, via=via, status=404,
                    code="conversation_not_found")
    calls = len(upstream_a.requests)
    await api.error("/api/chat", {"prompt": "again", "conversation_id": cid}, key=ann, via=via,
                    status=404, code="conversation_not_found")
    assert len(upstream_a.requests) == calls
    await api.error("/api/remove-conversation", {"conversation_id": cid}, key=ann, via=via,
                    status=404, code="conversation_not_found")
    listing = await api.ok("/api/recall", key=ann, via=via)
    assert [c["conversation_id"] for c in listing["conversations"]] == [keep["conversation_id"]]


async def test_remove_conversation_rules(api: Api, people: People) -> None:
    ann = await user_key(api, people, "ann")
    ben = await user_key(api, people, "ben")
    mine = await api.chat(ann, "mine")
    await api.error("/api/remove-conversation", key=ann, status=400,
                    code="missing_conversation_id")
    await api.error("/api/remove-conversation", {"conversation_id": mine["conversation_id"]},
                    key=ben, status=404, code="conversation_not_found")
    # The admin may remove anyone's conversation.
    await api.ok("/api/remove-conversation", {"conversation_id": mine["conversation_id"]},
                 key=people.admin)
    assert (await api.ok("/api/recall", key=ann))["total"] == 0


async def test_client_removes_its_users_conversation(api: Api, people: People) -> None:
    body = await api.ok("/api/chat", {"prompt": "hi", "user_id": "u-1", "username": "Uma"},
                        key=people.client)
    await api.ok("/api/remove-conversation",
                 {"user_id": "u-1", "conversation_id": body["conversation_id"]},
                 key=people.client, via="get")
    assert (await api.ok("/api/recall", {"user_id": "u-1"}, key=people.client))["total"] == 0
