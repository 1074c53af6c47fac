"""/chat and follow-ups end to end: threads, streaming, splitting, throttling, failures."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from cogs.utils.text import open_fence
from tests.conftest import account
from tests.fakediscord import EPHEMERAL, FakeDiscord
from tests.fakes.upstream import Delay, Status

from .conftest import (
    ANN,
    BOB,
    EDIT_INTERVAL,
    EVE,
    GENERAL,
    MEMBER_ROLE,
    PAT,
    PLUS_ROLE,
    Harness,
)
from .slow_upstream import SlowUpstream


def thread_of(h: Harness, interaction: Any) -> dict[str, Any]:
    """The thread a public /chat opened: started on its answer, so it has the same id."""
    return h.fake.thread(interaction.original_id)


async def test_chat_opens_a_thread_named_after_the_title_and_answers_in_it(h: Harness) -> None:
    upstream = h.upstreams["A"]
    upstream.enqueue("2, 3 and 5.")
    upstream.enqueue_title("Three primes")
    interaction = await h.chat("Name three prime numbers")

    assert interaction.callbacks[0] == {"type": 5}  # deferred before any slow work
    assert not h.is_ephemeral(interaction)
    assert h.answer(interaction) == "**Ann** asked:\nName three prime numbers"
    thread = thread_of(h, interaction)
    assert thread["type"] == 11 and thread["parent_id"] == str(GENERAL)
    assert thread["name"] == "Three primes"
    assert h.thread_text(thread["id"]) == ["2, 3 and 5."]

    # The thread is the conversation, in the database.
    conversation = await h.bot.thread_conversation(int(thread["id"]))
    assert conversation is not None and conversation.title == "Three primes"
    user = await h.bot.known_member(ANN)
    assert user is not None and conversation.owner_id == user.id
    assert user.external_id == str(ANN) and user.client_id == h.bot.client_principal.id


async def test_the_owners_messages_in_the_thread_are_follow_ups(h: Harness) -> None:
    upstream = h.upstreams["A"]
    upstream.enqueue("2, 3 and 5.", "7.")
    thread_id = int(thread_of(h, await h.chat("Name three primes"))["id"])

    said = await h.fake.user_says(thread_id, "And the next one?", user=ANN)
    await h.settle()

    messages = h.fake.channel_messages(thread_id)
    assert [m["content"] for m in messages] == ["2, 3 and 5.", "And the next one?", "7."]
    assert messages[-1]["message_reference"]["message_id"] == said["id"]
    history = upstream.chat_requests(titles=False)[-1].messages
    assert [m["content"] for m in history] == ["Name three primes", "2, 3 and 5.",
                                              "And the next one?"]
    conversation = await h.bot.thread_conversation(thread_id)
    assert conversation is not None and conversation.turn_count == 2


async def test_follow_ups_in_a_thread_are_answered_one_at_a_time(h: Harness) -> None:
    upstream = h.upstreams["A"]
    upstream.enqueue("first", Delay(0.1, "second"), "third")
    thread_id = int(thread_of(h, await h.chat("Start"))["id"])

    one = await h.fake.user_says(thread_id, "one", user=ANN)
    two = await h.fake.user_says(thread_id, "two", user=ANN)
    await h.settle()

    replies = h.bot_messages(thread_id)
    assert [m["content"] for m in replies] == ["first", "second", "third"]
    assert replies[1]["message_reference"]["message_id"] == one["id"]
    assert replies[2]["message_reference"]["message_id"] == two["id"]
    # The second follow-up waited for the first and saw its answer.
    last = upstream.chat_requests(titles=False)[-1].messages
    assert [m["content"] for m in last] == ["Start", "first", "one", "second", "two"]


async def test_other_members_talk_in_a_public_thread_without_being_answered(
        h: Harness) -> None:
    thread_id = int(thread_of(h, await h.chat("Start"))["id"])
    before = len(h.upstreams["A"].chat_requests(titles=False))

    await h.fake.user_says(thread_id, "I have an opinion", user=BOB)
    await h.fake.user_says(GENERAL, "hello channel", user=ANN)
    await h.settle()

    assert len(h.upstreams["A"].chat_requests(titles=False)) == before
    assert h.thread_text(thread_id)[-1] == "I have an opinion"


async def test_chat_inside_the_thread_is_a_follow_up(h: Harness) -> None:
    h.upstreams["A"].enqueue("first answer", "second answer")
    thread_id = int(thread_of(h, await h.chat("Start"))["id"])

    again = await h.chat("More please", channel=thread_id)

    assert h.answer(again) == "**Ann** asked:\nMore please"
    assert h.thread_text(thread_id)[-1] == "second answer"
    conversation = await h.bot.thread_conversation(thread_id)
    assert conversation is not None and conversation.turn_count == 2
    assert len(h.fake.threads()) == 1


async def test_chat_in_another_members_thread_is_refused(h: Harness) -> None:
    thread_id = int(thread_of(h, await h.chat("Mine"))["id"])
    refused = await h.chat("Let me in", user=BOB, channel=thread_id)
    assert "belongs to another member" in h.answer(refused)


async def test_chat_outside_text_channels_is_refused(h: Harness) -> None:
    refused = await h.chat("Hello", channel=FakeDiscord.VOICE_ID)
    assert "text channels" in h.answer(refused)
    assert not h.fake.threads()


async def test_private_chat_opens_a_private_thread_with_only_the_member(h: Harness) -> None:
    h.upstreams["A"].enqueue("a secret answer")
    interaction = await h.chat("A private question", private=True)

    assert interaction.callbacks[0] == {"type": 5, "data": {"flags": EPHEMERAL}}
    assert h.is_ephemeral(interaction)
    (thread,) = h.fake.threads()
    assert thread["type"] == 12 and not thread["thread_metadata"]["invitable"]
    assert h.fake.thread_members[int(thread["id"])] == {FakeDiscord.BOT_ID, ANN}
    assert h.answer(interaction) == f"Your private conversation is in <#{thread['id']}>."
    assert h.thread_text(thread["id"]) == ["**Ann** asked:\nA private question",
                                           "a secret answer"]


async def test_a_private_answer_in_a_thread_stays_ephemeral_to_the_last_message(
        h: Harness) -> None:
    long_reply = "\n".join(f"line {i}: " + "words " * 15 for i in range(60))
    h.upstreams["A"].enqueue("public answer", long_reply)
    thread_id = int(thread_of(h, await h.chat("Start"))["id"])

    private = await h.chat("Tell me quietly", channel=thread_id, private=True)

    assert len(private.followup_ids) >= 1
    for message_id in [private.original_id, *private.followup_ids]:
        assert h.fake.messages[message_id]["flags"] & EPHEMERAL
    assert h.answer(private).replace("\n", "") == long_reply.replace("\n", "")
    assert h.thread_text(thread_id) == ["public answer"]  # nothing public


async def test_a_long_reply_is_split_without_leaving_code_blocks_open(h: Harness) -> None:
    code = "\n".join(f"    total += {i}  # step {i}" for i in range(400))
    reply = f"Here you go:\n```python\ndef f():\n{code}\n```\nDone."
    h.upstreams["A"].enqueue(reply)
    thread_id = int(thread_of(h, await h.chat("Write a long function"))["id"])

    contents = h.thread_text(thread_id)
    assert len(contents) >= 5
    for content in contents:
        assert len(content) <= 2000 and open_fence(content) is None
    assert all(c.startswith("```python\n") for c in contents[1:])
    assert contents[-1].endswith("Done.")
    # Every message was written through the thread, never as an interaction follow-up.
    assert not any("/webhooks/" in c.path and c.method == "POST" for c in h.fake.calls)


async def test_edits_are_throttled_while_a_reply_streams(make_harness: Any) -> None:
    pieces = [f"word{i} " for i in range(40)]
    async with SlowUpstream(pieces, gap_s=0.008) as slow:
        slow_account = {"name": "S", "base_url": slow.base_url, "model": "slow",
                        "proxy": ""}
        async with make_harness(accounts=[slow_account]) as h:
            thread_id = int(thread_of(h, await h.chat("Talk slowly"))["id"])
            (message,) = h.fake.channel_messages(thread_id)
            assert message["content"] == "".join(pieces)
            writes = [c for c in h.fake.calls
                      if c.path.startswith(f"/channels/{thread_id}/messages")]

    assert writes[0].method == "POST"
    edits = [c for c in writes if c.method == "PATCH"]
    assert 2 <= len(edits) < len(pieces) // 3  # about one per interval, not one per piece
    times = [c.at for c in writes]
    assert all(b - a >= EDIT_INTERVAL for a, b in itertools.pairwise(times))


async def test_a_member_without_an_allowed_role_is_refused_politely(h: Harness) -> None:
    refused = await h.chat("Hello", user=EVE)
    assert refused.callbacks[0]["type"] == 4  # answered at once, nothing deferred
    assert refused.callbacks[0]["data"]["flags"] == EPHEMERAL
    assert h.answer(refused).startswith("Sorry, this bot is open to members with one of")
    assert not h.fake.threads()
    assert not h.upstreams["A"].chat_requests()
    assert await h.bot.known_member(EVE) is None


async def test_plus_comes_with_the_role_and_goes_with_it(h: Harness) -> None:
    h.upstreams["P"].enqueue("plus answer")
    interaction = await h.chat("Use the big model", user=PAT, tier="plus")
    assert h.thread_text(thread_of(h, interaction)["id"]) == ["plus answer"]

    h.fake.set_roles(PAT, (MEMBER_ROLE,))  # the plus role taken away
    refused = await h.chat("Again", user=PAT, tier="plus")
    assert "plus" in h.answer(refused) and h.answer(refused).startswith("⚠️")
    user = await h.bot.known_member(PAT)
    assert user is not None and not user.plus
    assert len(h.fake.threads()) == 1  # a refused request opens nothing

    h.fake.set_roles(PAT, (MEMBER_ROLE, PLUS_ROLE))
    await h.chat("Back", user=PAT, tier="plus")
    user = await h.bot.known_member(PAT)
    assert user is not None and user.plus


async def test_plus_without_plus_is_refused_before_any_thread(h: Harness) -> None:
    refused = await h.chat("Big model please", tier="plus")
    assert h.answer(refused) == ("⚠️ your key does not include the plus tier; ask with "
                                 "plus=false")
    assert not h.fake.threads()


async def test_a_member_who_loses_the_role_is_refused_at_the_next_message(h: Harness) -> None:
    thread_id = int(thread_of(h, await h.chat("Start"))["id"])
    h.fake.set_roles(ANN, ())
    await h.fake.user_says(thread_id, "still there?", user=ANN)
    await h.settle()
    assert h.thread_text(thread_id)[-1].startswith("Sorry, this bot is open to members")
    assert len(h.upstreams["A"].chat_requests(titles=False)) == 1


async def test_an_upstream_failure_is_answered_and_nothing_is_opened(h: Harness) -> None:
    h.upstreams["A"].enqueue(Status(500), Status(500))
    failed = await h.chat("Hello?")
    assert h.answer(failed).startswith("⚠️ no upstream account can answer now")
    assert not h.fake.threads()
    assert not (await h.gateway.list_conversations(h.bot.client_principal))[0]


async def test_a_failed_follow_up_says_so_in_the_thread(h: Harness) -> None:
    thread_id = int(thread_of(h, await h.chat("Start"))["id"])
    h.upstreams["A"].enqueue(Status(401))  # the account's key refused: taken out
    await h.fake.user_says(thread_id, "more", user=ANN)
    await h.settle()
    last = h.thread_text(thread_id)[-1]
    assert last.startswith("⚠️ account 'A' is out of service")
    assert "Nothing was saved" in last


async def test_a_follow_up_on_a_removed_account_names_the_reason(
        make_harness: Any, upstream_plus: Any) -> None:
    async with make_harness() as h:
        thread_id = int(thread_of(h, await h.chat("Start"))["id"])
    # The organisation drops account A; the bot restarts on the same database.
    async with make_harness(accounts=[account("P", upstream_plus, "KEY_P", tier="plus")]) as h:
        await h.fake.user_says(thread_id, "still there?", user=ANN)
        await h.settle()
        assert "account 'A', which is no longer configured" in h.thread_text(thread_id)[-1]


async def test_model_output_never_pings(h: Harness) -> None:
    h.upstreams["A"].enqueue("@everyone look, <@100000000000000002> and <@&200000000000000001>")
    thread_id = int(thread_of(h, await h.chat("Ping people"))["id"])
    (post,) = [c for c in h.fake.calls
               if c.method == "POST" and c.path == f"/channels/{thread_id}/messages"]
    assert post.json["content"].startswith("@everyone")
    assert post.json["allowed_mentions"] == {"parse": []}


async def test_a_message_sent_while_the_first_answer_streams_waits_for_it(
        make_harness: Any) -> None:
    pieces = [f"w{i} " for i in range(15)]
    async with SlowUpstream(pieces, gap_s=0.01) as slow:
        slow_account = {"name": "S", "base_url": slow.base_url, "model": "slow", "proxy": ""}
        async with make_harness(accounts=[slow_account]) as h:
            start = asyncio.create_task(h.fake.slash("chat", user=ANN, prompt="Start"))
            # As soon as the thread appears, while its first answer is still streaming:
            threads = await h.fake.wait_for(h.fake.threads)
            thread_id = int(threads[0]["id"])
            said = await h.fake.user_says(thread_id, "quick follow-up", user=ANN)
            await start
            await h.settle()
            answer = "".join(pieces)
            first, second = h.bot_messages(thread_id)
            assert first["content"] == second["content"] == answer
            assert second["message_reference"]["message_id"] == said["id"]
            # The follow-up found the conversation (the thread was mapped before it ran) and
            # was answered only once the first answer was complete.
            assert [m["content"] for m in slow.bodies[-1]["messages"]] == [
                "Start", answer, "quick follow-up"]
            writes = [c for c in h.fake.calls if c.path.startswith(f"/channels/{thread_id}/")]
            last_of_first = max(i for i, c in enumerate(writes)
                                if c.path.endswith(f"/messages/{first['id']}"))
            first_of_second = next(i for i, c in enumerate(writes)
                                   if c.method == "POST" and c.json.get("message_reference"))
            assert last_of_first < first_of_second


async def test_a_member_over_the_rate_limit_is_told_so(make_harness: Any) -> None:
    async with make_harness(limits={"user_requests_per_minute": 1}) as h:
        thread_id = int(thread_of(h, await h.chat("one"))["id"])
        refused = await h.chat("two")
        assert h.answer(refused) == ("⚠️ limit of 1 requests a minute reached; try again "
                                     "shortly")
        await h.fake.user_says(thread_id, "three", user=ANN)
        await h.settle()
        assert h.thread_text(thread_id)[-1].startswith("⚠️ limit of 1 requests a minute")
        assert len(h.fake.threads()) == 1


async def test_a_failed_private_follow_up_is_answered_privately(h: Harness) -> None:
    thread_id = int(thread_of(h, await h.chat("Start"))["id"])
    h.upstreams["A"].enqueue(Status(401))
    failed = await h.chat("quietly", channel=thread_id, private=True)
    assert h.is_ephemeral(failed)
    assert h.answer(failed).startswith("⚠️ account 'A' is out of service")
    assert h.thread_text(thread_id) == ["reply 1 from A"]

