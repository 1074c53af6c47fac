"""Controls on a reply, in the core: Stop (the upstream call is cancelled, what arrived is
stored, marked stopped), Regenerate (a new answer to the last prompt, in the place of the last
turn) and Continue (a follow-up asking the model to go on); channel personas."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.chat import ChatRequest, StartInfo
from core.errors import Conflict, Forbidden, NotFound
from core.gateway import Gateway, build_gateway
from core.models import Principal
from core.stopping import STOP_CHANNEL, StopSignal
from tests.conftest import ENVIRON, account, drop_pg_database, new_pg_database
from tests.core.conftest import Listener, OpenGateway, new_user
from tests.fakes.upstream import FakeUpstream, Pause, Status
from tests.pg import PgCluster

LONG = "one two three four five six seven eight nine ten"


class Heard(Listener):
    """A listener that says when the text so far is ``expected``."""

    def __init__(self, expected: str) -> None:
        super().__init__()
        self.expected = expected
        self.heard = asyncio.Event()

    async def delta(self, text: str) -> None:
        await super().delta(text)
        if "".join(self.of("delta")) == self.expected:
            self.heard.set()


async def test_stop_cancels_the_upstream_call_and_stores_what_arrived(
        gw: Gateway, user: Principal, upstream_a: FakeUpstream) -> None:
    gate = asyncio.Event()
    upstream_a.enqueue(Pause(LONG, gate, after_chunks=3))
    stop, listener = StopSignal(), Heard("one two three")
    answering = asyncio.create_task(
        gw.chat(user, ChatRequest(prompt="count", stop=stop), listener))
    await asyncio.wait_for(listener.heard.wait(), 5)
    assert upstream_a.in_flight == 1
    stop.stop()
    result = await asyncio.wait_for(answering, 5)

    assert result.turn.reply == "one two three" and result.turn.stopped
    assert result.finish_reason == "stopped"
    stored = (await gw.recall(user, result.conversation.id))[1]
    assert [(t.reply, t.stopped) for t in stored] == [("one two three", True)]
    # The connection was closed: the upstream cannot write the rest.
    gate.set()
    await upstream_a.wait_in_flight(0)
    assert upstream_a.hung_up == 1
    assert result.turn.output_tokens is not None and result.turn.output_tokens > 0


async def test_a_reply_that_finishes_before_the_stop_is_whole(
        gw: Gateway, user: Principal, upstream_a: FakeUpstream) -> None:
    upstream_a.enqueue("all of it")
    stop = StopSignal()
    result = await gw.chat(user, ChatRequest(prompt="hi", stop=stop), Listener())
    stop.stop()
    assert (result.turn.reply, result.turn.stopped) == ("all of it", False)


async def test_regenerate_replaces_the_last_turn_on_the_same_account(
        gw: Gateway, user: Principal, upstream_a: FakeUpstream) -> None:
    upstream_a.enqueue("first", "second", "second again")
    first = await gw.chat(user, ChatRequest(prompt="one"))
    cid = first.conversation.id
    second = await gw.chat(user, ChatRequest(prompt="two", conversation_id=cid))

    listener = Listener()
    again = await gw.regenerate(user, cid, second.turn.id, listener=listener)

    assert again.turn.prompt == "two" and again.turn.reply == "second again"
    assert again.turn.position == 1 and again.turn.parent_id == first.turn.id
    assert "".join(listener.of("delta")) == "second again"
    sent = upstream_a.chat_requests(titles=False)[-1].messages
    assert [m["content"] for m in sent] == ["one", "first", "two"]  # not the replaced answer
    conversation, turns = await gw.recall(user, cid)
    assert [t.reply for t in turns] == ["first", "second again"]
    assert conversation.turn_count == 2 and conversation.account == "A"


async def test_regenerate_the_first_answer(
        gw: Gateway, user: Principal, upstream_a: FakeUpstream) -> None:
    upstream_a.enqueue("meh", "better")
    first = await gw.chat(user, ChatRequest(prompt="only"))
    again = await gw.regenerate(user, first.conversation.id, first.turn.id)
    assert (again.turn.reply, again.turn.parent_id, again.turn.position) == ("better", None, 0)
    assert [t.reply for t in (await gw.recall(user, first.conversation.id))[1]] == ["better"]


async def test_only_the_last_answer_of_ones_own_conversation_can_be_regenerated(
        gw: Gateway, user: Principal, admin: Principal, upstream_a: FakeUpstream) -> None:
    first = await gw.chat(user, ChatRequest(prompt="one"))
    cid = first.conversation.id
    await gw.chat(user, ChatRequest(prompt="two", conversation_id=cid))
    asked = len(upstream_a.chat_requests(titles=False))

    with pytest.raises(Conflict) as older:
        await gw.regenerate(user, cid, first.turn.id)
    assert older.value.code == "not_last_turn"
    stranger = await new_user(gw, "bob")
    with pytest.raises(NotFound):
        await gw.regenerate(stranger, cid, first.turn.id)
    assert len(upstream_a.chat_requests(titles=False)) == asked  # nothing was asked


async def test_a_failed_regeneration_keeps_the_old_answer(
        gw: Gateway, user: Principal, upstream_a: FakeUpstream) -> None:
    upstream_a.enqueue("kept", Status(500))
    first = await gw.chat(user, ChatRequest(prompt="one"))
    with pytest.raises(Exception):  # noqa: B017 - the upstream's failure, whatever its class
        await gw.regenerate(user, first.conversation.id, first.turn.id)
    assert [t.reply for t in (await gw.recall(user, first.conversation.id))[1]] == ["kept"]


async def test_continue_asks_the_model_to_go_on(
        gw: Gateway, user: Principal, upstream_a: FakeUpstream) -> None:
    upstream_a.enqueue("the begin", "ning and the end")
    first = await gw.chat(user, ChatRequest(prompt="story"))
    more = await gw.continue_reply(user, first.conversation.id)
    sent = upstream_a.chat_requests(titles=False)[-1].messages
    assert sent[-1]["content"] == gw.settings.chat.continue_prompt
    assert [m["content"] for m in sent[:-1]] == ["story", "the begin"]
    assert more.turn.reply == "ning and the end" and more.conversation.turn_count == 2


async def test_a_channel_persona_follows_the_organisations_system_prompt(
        open_gateway: OpenGateway, make_settings: object, upstream_a: FakeUpstream) -> None:
    settings = make_settings([account("A", upstream_a, "KEY_A")],  # type: ignore[operator]
                             chat={"system_prompt": "Be kind."})
    gw = await open_gateway(settings)
    admin = await gw.principals.create("admin", "root", plus=True)
    bot = await gw.ensure_client("bot")
    member = await gw.acting_as(bot, "42", username="ann")
    persona = await gw.set_persona(bot, "777", "You are a pirate.", label="#sea")
    assert (persona.label, persona.client_id) == ("#sea", bot.id)

    first = await gw.chat(member, ChatRequest(prompt="hi", channel_ref="777"))
    await gw.chat(member, ChatRequest(prompt="again", conversation_id=first.conversation.id,
                                      channel_ref="777"))
    await gw.chat(member, ChatRequest(prompt="elsewhere", channel_ref="778"))
    systems = [r.messages[0] for r in upstream_a.chat_requests(titles=False)]
    assert systems[:2] == [{"role": "system", "content": "Be kind.\n\nYou are a pirate."}] * 2
    assert systems[2] == {"role": "system", "content": "Be kind."}

    assert [p.channel_ref for p in await gw.personas(admin[0])] == ["777"]
    with pytest.raises(Forbidden):
        await gw.personas(member)
    await gw.clear_persona(admin[0], "777", client_id=bot.id)
    assert await gw.personas(bot) == []
    with pytest.raises(NotFound):
        await gw.clear_persona(bot, "777")


@pytest.mark.sqlite_only  # it picks PostgreSQL itself: two processes on one database
async def test_a_stop_asked_of_another_process_reaches_the_reply(
        pg_cluster: PgCluster, make_settings: Any, upstream_a: FakeUpstream) -> None:
    url = await new_pg_database(pg_cluster)
    base = make_settings([account("A", upstream_a, "KEY_A")])
    settings = base.model_copy(update={"storage": base.storage.model_copy(update={"url": url})})
    gate = asyncio.Event()
    upstream_a.enqueue(Pause(LONG, gate, after_chunks=2))
    try:
        async with build_gateway(settings, environ=ENVIRON) as writer, \
                build_gateway(settings, environ=ENVIRON) as other:
            bot = await writer.ensure_client("bot")
            user = await writer.acting_as(bot, "1", username="u")
            stranger = await writer.acting_as(bot, "2", username="s")
            heard: list[str] = []
            stranger_heard = asyncio.Event()

            def probe(payload: str) -> None:  # after the board's own listener, in order
                heard.append(payload)
                stranger_heard.set()

            writer.storage.subscribe(STOP_CHANNEL, probe)
            stop = StopSignal()

            class Registering(Heard):
                async def started(self, info: StartInfo) -> None:
                    writer.stops.writing(info.message_id, user.id, stop)
                    self.message_id = info.message_id

            listener = Registering("one two")
            answering = asyncio.create_task(
                writer.chat(user, ChatRequest(prompt="count", stop=stop), listener))
            await asyncio.wait_for(listener.heard.wait(), 5)

            await other.stop_reply(stranger, listener.message_id)  # asked of every process
            await asyncio.wait_for(stranger_heard.wait(), 5)
            assert not stop.requested  # not theirs
            await other.stop_reply(user, listener.message_id)
            result = await asyncio.wait_for(answering, 10)
            assert (result.turn.reply, result.turn.stopped) == ("one two", True)
            assert len(heard) == 2
    finally:
        gate.set()
        await drop_pg_database(pg_cluster, url)


async def test_a_stop_for_no_reply_here_is_refused_on_one_process(gw: Gateway,
                                                                  user: Principal) -> None:
    if gw.storage.shared:  # PostgreSQL asks the other processes instead
        await gw.stop_reply(user, "nothing")
        return
    with pytest.raises(NotFound) as refused:
        await gw.stop_reply(user, "nothing")
    assert refused.value.code == "not_writing"
