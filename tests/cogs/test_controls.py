"""The buttons under a bot reply: Stop while it streams, then Regenerate and Continue; only
for the conversation's owner; working after a restart."""

from __future__ import annotations

import asyncio
import copy
from types import SimpleNamespace
from typing import Any

from cogs.utils.controls import ReplyControls
from core.turn import StartInfo
from tests.conftest import account
from tests.fakediscord import EPHEMERAL
from tests.fakes.upstream import Pause, Status

from .conftest import ANN, BOB, GENERAL, PAT, Harness

LONG = "one two three four five six seven eight nine ten"


def labels(h: Harness, message: dict[str, Any]) -> list[str]:
    return [b["label"] for b in h.fake.buttons(int(message["id"]))]


async def opened_thread(h: Harness, prompt: str = "Count") -> int:
    """/chat without waiting for the answer to finish: the thread it opened."""
    interaction = await h.fake.slash("chat", user=ANN, channel=GENERAL, prompt=prompt)
    await h.fake.wait_for(lambda: interaction.original_id in h.fake.channels)
    assert interaction.original_id is not None
    return interaction.original_id


async def test_stop_ends_the_reply_keeps_what_arrived_and_offers_the_other_buttons(
        h: Harness) -> None:
    upstream = h.upstreams["A"]
    gate = asyncio.Event()
    upstream.enqueue(Pause(LONG, gate, after_chunks=3))
    thread_id = await opened_thread(h)
    writing = await h.fake.wait_for(lambda: next(
        (m for m in h.bot_messages(thread_id) if m["content"] == "one two three"), None))
    assert labels(h, writing) == ["Stop"]

    stranger = await h.fake.click(int(writing["id"]), "Stop", user=BOB)
    assert stranger.callbacks[0]["data"]["flags"] == EPHEMERAL
    assert "Only the member who started this conversation" in \
        stranger.callbacks[0]["data"]["content"]
    assert upstream.in_flight == 1  # a stranger's click stopped nothing

    pressed = await h.fake.click(int(writing["id"]), "Stop", user=ANN)
    await h.settle()
    assert pressed.callbacks[0] == {"type": 6}  # acknowledged; the reply's edits show it

    (reply,) = h.bot_messages(thread_id)
    assert reply["content"] == "one two three\n\n*(stopped)*"
    assert labels(h, reply) == ["Regenerate", "Continue"]
    conversation = await h.bot.thread_conversation(thread_id)
    assert conversation is not None
    user = await h.bot.known_member(ANN)
    assert user is not None
    (turn,) = (await h.gateway.recall(user, conversation.id))[1]
    assert (turn.reply, turn.stopped) == ("one two three", True)
    # The upstream's connection was closed: the rest of the answer has nowhere to go.
    gate.set()
    await upstream.wait_in_flight(0)
    assert upstream.hung_up == 1


async def test_regenerate_replaces_the_answer(h: Harness) -> None:
    upstream = h.upstreams["A"]
    upstream.enqueue("first try", "second try")
    thread_id = int((await h.chat("Tell me a joke")).original_id or 0)
    (old,) = h.bot_messages(thread_id)
    assert labels(h, old) == ["Regenerate", "Continue"]

    pressed = await h.fake.click(int(old["id"]), "Regenerate", user=ANN)
    await h.settle()

    assert pressed.callbacks[0]["type"] == 7  # the old answer's buttons go at once
    assert labels(h, h.fake.messages[int(old["id"])]) == []
    new = h.bot_messages(thread_id)[-1]
    assert new["content"] == "second try" and labels(h, new) == ["Regenerate", "Continue"]
    assert new["message_reference"]["message_id"] == old["id"]
    sent = upstream.chat_requests(titles=False)[-1].messages
    assert [m["content"] for m in sent] == ["Tell me a joke"]
    conversation = await h.bot.thread_conversation(thread_id)
    assert conversation is not None and conversation.turn_count == 1
    user = await h.bot.known_member(ANN)
    assert user is not None
    assert [t.reply for t in (await h.gateway.recall(user, conversation.id))[1]] == [
        "second try"]


async def test_a_stranger_gets_an_ephemeral_no(h: Harness) -> None:
    thread_id = int((await h.chat("Mine")).original_id or 0)
    (reply,) = h.bot_messages(thread_id)
    asked = len(h.upstreams["A"].chat_requests(titles=False))

    for label in ("Regenerate", "Continue"):
        refused = await h.fake.click(int(reply["id"]), label, user=BOB)
        assert refused.callbacks[0]["type"] == 4
        assert refused.callbacks[0]["data"]["flags"] == EPHEMERAL
        assert "Only the member who started" in refused.callbacks[0]["data"]["content"]
    await h.settle()
    assert len(h.upstreams["A"].chat_requests(titles=False)) == asked
    assert labels(h, h.fake.messages[int(reply["id"])]) == ["Regenerate", "Continue"]


async def test_continue_asks_the_model_to_go_on(h: Harness) -> None:
    upstream = h.upstreams["A"]
    upstream.enqueue("Once upon", "a time.")
    thread_id = int((await h.chat("A story")).original_id or 0)
    (first,) = h.bot_messages(thread_id)

    await h.fake.click(int(first["id"]), "Continue", user=ANN)
    await h.settle()

    assert [m["content"] for m in h.bot_messages(thread_id)] == ["Once upon", "a time."]
    assert labels(h, h.fake.messages[int(first["id"])]) == []
    assert labels(h, h.bot_messages(thread_id)[-1]) == ["Regenerate", "Continue"]
    sent = upstream.chat_requests(titles=False)[-1].messages
    assert sent[-1]["content"] == h.settings.chat.continue_prompt
    conversation = await h.bot.thread_conversation(thread_id)
    assert conversation is not None and conversation.turn_count == 2


async def test_buttons_work_after_a_restart(h: Harness) -> None:
    h.upstreams["A"].enqueue("before", "after the restart")
    thread_id = int((await h.chat("Hello")).original_id or 0)
    (old,) = h.bot_messages(thread_id)

    await h.restart()
    await h.fake.click(int(old["id"]), "Regenerate", user=ANN)
    await h.settle()

    assert h.bot_messages(thread_id)[-1]["content"] == "after the restart"
    conversation = await h.bot.thread_conversation(thread_id)
    assert conversation is not None and conversation.turn_count == 1


async def test_an_older_answer_cannot_be_regenerated(h: Harness) -> None:
    h.upstreams["A"].enqueue("one", "two")
    thread_id = int((await h.chat("Start")).original_id or 0)
    (first,) = h.bot_messages(thread_id)
    its_buttons = copy.deepcopy(first["components"])
    await h.fake.user_says(thread_id, "more", user=ANN)
    await h.settle()
    assert labels(h, first) == []  # the first answer lost its buttons when the second came
    first["components"] = its_buttons  # as a client that missed the update still shows them

    await h.fake.click(int(first["id"]), "Regenerate", user=ANN)
    await h.settle()

    assert "only the latest answer" in h.thread_text(thread_id)[-1]
    assert h.bot_messages(thread_id)[-2]["content"] == "two"


async def test_a_failed_regeneration_keeps_the_answer_and_its_buttons(h: Harness) -> None:
    h.upstreams["A"].enqueue("good answer", Status(400))
    thread_id = int((await h.chat("Start")).original_id or 0)
    (old,) = h.bot_messages(thread_id)

    await h.fake.click(int(old["id"]), "Regenerate", user=ANN)
    await h.settle()

    assert "The earlier answer stays as it was." in h.thread_text(thread_id)[-1]
    assert labels(h, h.fake.messages[int(old["id"])]) == ["Regenerate", "Continue"]
    conversation = await h.bot.thread_conversation(thread_id)
    user = await h.bot.known_member(ANN)
    assert conversation is not None and user is not None
    assert [t.reply for t in (await h.gateway.recall(user, conversation.id))[1]] == [
        "good answer"]


# ------------------------------------------------------------------------ model choice


async def test_model_autocomplete_offers_what_the_member_may_use(make_harness: Any,
                                                                 upstream_a: Any,
                                                                 upstream_plus: Any) -> None:
    accounts = [account("A", upstream_a, "KEY_A", models=["model-a-large"]),
                account("P", upstream_plus, "KEY_P", tier="plus")]
    async with make_harness(accounts=accounts) as h:
        ann = await h.fake.autocomplete("chat", user=ANN, focused="model", prompt="x",
                                        model="")
        pat = await h.fake.autocomplete("chat", user=PAT, focused="model", prompt="x",
                                        model="")
        typed = await h.fake.autocomplete("chat", user=PAT, focused="model", prompt="x",
                                          model="LARGE")
    free = [upstream_a.model, "model-a-large"]
    assert [c["value"] for c in ann] == free
    assert [c["value"] for c in pat] == [*free, upstream_plus.model]
    assert pat[-1]["name"] == f"{upstream_plus.model} (plus; text)"
    assert [c["value"] for c in typed] == ["model-a-large"]


async def test_the_chosen_model_is_kept_for_follow_ups(make_harness: Any, upstream_a: Any,
                                                       upstream_plus: Any) -> None:
    accounts = [account("A", upstream_a, "KEY_A", models=["model-a-large"]),
                account("P", upstream_plus, "KEY_P", tier="plus")]
    async with make_harness(accounts=accounts) as h:
        thread_id = int((await h.chat("Hi", model="model-a-large")).original_id or 0)
        await h.fake.user_says(thread_id, "and then?", user=ANN)
        await h.settle()
        sent = [r.model for r in upstream_a.chat_requests(titles=False)]
        assert sent == ["model-a-large", "model-a-large"]

        plus_thread = int((await h.chat("Hi", user=PAT, model=upstream_plus.model)).original_id
                          or 0)
        assert [r.model for r in upstream_plus.chat_requests(titles=False)] == [
            upstream_plus.model]
        conversation = await h.bot.thread_conversation(plus_thread)
        assert conversation is not None and conversation.account == "P"

        other = await h.chat("switch", channel=thread_id, model=upstream_plus.model)
        assert "stays on model-a-large" in h.answer(other)
        refused = await h.chat("Hi", model=upstream_plus.model)
        assert "plus tier" in h.answer(refused)
        unknown = await h.chat("Hi", model="no-such-model")
        assert "not served" in h.answer(unknown)


# ------------------------------------------------------------------------ attachments


async def test_text_files_in_a_thread_message_reach_the_model_and_others_are_refused(
        h: Harness) -> None:
    upstream = h.upstreams["A"]
    thread_id = int((await h.chat("Start")).original_id or 0)
    log = h.fake.upload("server.log", b"ERROR disk full\nWARN retrying\n")
    code = h.fake.upload("fix.py", "print('d\u00e9j\u00e0 vu')\n```\n".encode(), "text/x-python")
    big = h.fake.upload("huge.txt", b"x" * (h.settings.chat.max_text_file_bytes + 1))
    blob = h.fake.upload("data.bin", b"\x00\x01\x02", "application/octet-stream")

    said = await h.fake.user_says(thread_id, "What went wrong?", user=ANN,
                                  files=[log, code, big, blob])
    await h.settle()

    prompt = upstream.chat_requests(titles=False)[-1].messages[-1]["content"]
    assert prompt == ("What went wrong?\n\nFile: server.log\n```\nERROR disk full\n"
                      "WARN retrying\n```\n\nFile: fix.py\n````\n"
                      "print('d\u00e9j\u00e0 vu')\n```\n````")
    note, answer = h.bot_messages(thread_id)[-2:]
    assert note["message_reference"]["message_id"] == said["id"]
    assert note["content"].splitlines() == [
        "⚠️ huge.txt was not read: it has 24,001 bytes; text files are read up to 24,000 "
        "bytes",
        "⚠️ data.bin was not read: only text files (text, Markdown, code, JSON, CSV, logs) "
        "and images are read",
    ]
    assert answer["content"] == "reply 2 from A"
    # Only the files to read were downloaded, and each at once.
    assert h.fake.downloads == [log["id"], code["id"]]


async def test_chat_with_a_text_attachment(h: Harness) -> None:
    notes = h.fake.upload("notes.md", b"# Plan\n- ship it\n", "text/markdown")
    interaction = await h.chat("Summarise my notes", attachment=notes)
    assert h.answer(interaction) == "**Ann** asked:\nSummarise my notes\n📎 notes.md"
    prompt = h.upstreams["A"].chat_requests(titles=False)[-1].messages[-1]["content"]
    assert prompt == "Summarise my notes\n\nFile: notes.md\n```\n# Plan\n- ship it\n```"


def test_a_message_posted_with_stop_after_the_reply_closed_gets_its_final_buttons() -> None:
    # The first message's post takes the Stop button; the reply completes (closing) while
    # that post is on its way; the post lands. The last write must still put Regenerate and
    # Continue on it: it shows Stop, whatever the state was when the post came back.
    controls = ReplyControls()
    controls.started(StartInfo("c1", "t1", None, "model-a", "A", True))
    stop = controls.view_for(None)
    assert stop is not None and _labels_of(stop) == ["Stop"]
    controls.closing(("c1", "t1"))
    message: Any = SimpleNamespace(id=1)
    controls.last = message
    controls.shown(message, stop)
    assert controls.refresh(message)
    final = controls.view_for(message)
    assert final is not None
    assert _labels_of(final) == ["Regenerate", "Continue"]
    controls.shown(message, final)
    assert not controls.refresh(message)


def _labels_of(view: Any) -> list[str]:
    return [item.to_component_dict()["label"] for item in view.children]
