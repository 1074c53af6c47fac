"""/conversations, /recall and /forget end to end, paging buttons and autocomplete included."""

from __future__ import annotations

from tests.fakediscord import EPHEMERAL

from .conftest import ANN, BOB, EVE, GENERAL, Harness


async def start(h: Harness, prompt: str, *, user: int = ANN, title: str | None = None,
                reply: str | None = None) -> int:
    if title:
        h.upstreams["A"].enqueue_title(title)
    if reply:
        h.upstreams["A"].enqueue(reply)
    interaction = await h.chat(prompt, user=user)
    assert interaction.original_id is not None
    return interaction.original_id


async def test_conversations_lists_threads_and_pages_with_buttons(h: Harness) -> None:
    threads = [await start(h, f"question {i}", title=f"Topic {i}") for i in range(12)]

    listing = await h.fake.slash("conversations", user=ANN)
    await h.settle()
    assert listing.callbacks[0] == {"type": 5, "data": {"flags": EPHEMERAL}}
    first = h.answer(listing)
    assert first.startswith("**Your conversations** · 12 · page 1/2")
    assert f"**Topic 11** · <#{threads[11]}> · 1 turn" in first  # newest first
    assert "Topic 1**" not in first

    assert listing.original_id is not None
    labels = [b["label"] for b in h.fake.buttons(listing.original_id)]
    assert labels == ["◀ Previous", "1/2", "Next ▶"]
    click = await h.fake.click(listing.original_id, "Next ▶", user=ANN)
    await h.settle()
    assert click.callbacks[0] == {"type": 6}  # deferred, then the page edited in place
    second = h.fake.messages[listing.original_id]["content"]
    assert second.startswith("**Your conversations** · 12 · page 2/2")
    assert f"**Topic 0** · <#{threads[0]}>" in second
    assert [b.get("disabled", False) for b in h.fake.buttons(listing.original_id)] == [
        False, True, True]

    # Someone else's click is turned away.
    intruder = await h.fake.click(listing.original_id, "◀ Previous", user=BOB)
    assert intruder.callbacks[0]["data"]["content"] == "These pages belong to someone else."


async def test_conversations_of_a_new_member(h: Harness) -> None:
    listing = await h.fake.slash("conversations", user=BOB)
    await h.settle()
    assert "No conversations yet" in h.answer(listing)
    assert listing.original_id is not None
    assert not list(h.fake.buttons(listing.original_id))


async def test_recall_suggests_titles_and_shows_the_turns(h: Harness) -> None:
    thread = await start(h, "What is a monad?", title="Monads explained",
                         reply="A monoid in the category of endofunctors.")
    await start(h, "Rust lifetimes?", title="Rust lifetimes", reply="Borrowing.")
    await start(h, "Bob's own", user=BOB, title="Bob's secret", reply="hidden")
    h.upstreams["A"].enqueue("Mostly a pattern.")
    await h.fake.user_says(thread, "In plain words?", user=ANN)
    await h.settle()

    choices = await h.fake.autocomplete("recall", user=ANN, focused="conversation",
                                        conversation="mona")
    assert [c["name"].split(" · ")[0] for c in choices] == ["Monads explained"]
    everything = await h.fake.autocomplete("recall", user=ANN, focused="conversation",
                                           conversation="")
    assert {c["name"].split(" · ")[0] for c in everything} == {"Monads explained",
                                                                "Rust lifetimes"}
    assert await h.fake.autocomplete("recall", user=EVE, focused="conversation",
                                     conversation="") == []

    shown = await h.fake.slash("recall", user=ANN, conversation=choices[0]["value"])
    await h.settle()
    text = h.answer(shown)
    assert h.is_ephemeral(shown)
    assert text.startswith("**Monads explained** · page 1/1")
    assert text.index("What is a monad?") < text.index("A monoid") < text.index(
        "In plain words?") < text.index("Mostly a pattern.")


async def test_recall_inside_a_thread_and_by_typed_title(h: Harness) -> None:
    thread = await start(h, "Question", title="My topic", reply="Answer")
    here = await h.fake.slash("recall", user=ANN, channel=thread)
    await h.settle()
    assert "Answer" in h.answer(here)

    typed = await h.fake.slash("recall", user=ANN, conversation="my topic")
    await h.settle()
    assert "Answer" in h.answer(typed)

    nowhere = await h.fake.slash("recall", user=ANN, channel=GENERAL)
    await h.settle()
    assert h.answer(nowhere).startswith("Name the conversation")


async def test_a_long_conversation_is_recalled_in_pages(h: Harness) -> None:
    long_reply = "\n".join("a line of a long answer " * 3 for _ in range(100))
    await start(h, "Long one", title="Long", reply=long_reply)
    choices = await h.fake.autocomplete("recall", user=ANN, focused="conversation",
                                        conversation="Long")
    shown = await h.fake.slash("recall", user=ANN, conversation=choices[0]["value"])
    await h.settle()
    assert shown.original_id is not None
    first = h.fake.messages[shown.original_id]["content"]
    assert first.startswith("**Long** · page 1/4")
    for _ in range(3):
        await h.fake.click(shown.original_id, "Next ▶", user=ANN)
        await h.settle()
    assert h.fake.messages[shown.original_id]["content"].startswith("**Long** · page 4/4")


async def test_recall_of_another_members_conversation_is_not_found(h: Harness) -> None:
    await start(h, "Bob's", user=BOB, title="Bob's topic")
    bob = await h.bot.known_member(BOB)
    assert bob is not None
    conversations, _ = await h.gateway.list_conversations(bob)
    refused = await h.fake.slash("recall", user=ANN, conversation=conversations[0].id)
    await h.settle()
    assert h.answer(refused) == "⚠️ no such conversation"


async def test_forget_inside_the_thread_removes_it_and_locks_the_thread(h: Harness) -> None:
    thread = await start(h, "Forget me", title="Ephemeral thoughts")
    forgot = await h.fake.slash("forget", user=ANN, channel=thread)
    await h.settle()

    assert h.answer(forgot) == (f"Forgot **Ephemeral thoughts**. Its thread <#{thread}> is "
                                "archived and locked.")
    metadata = h.fake.thread(thread)["thread_metadata"]
    assert metadata["archived"] and metadata["locked"]
    assert h.thread_text(thread)[-1].startswith("🗑️ Ann forgot this conversation")
    assert await h.bot.thread_conversation(thread) is None
    user = await h.bot.known_member(ANN)
    assert user is not None
    assert (await h.gateway.list_conversations(user))[1] == 0


async def test_forget_by_name_from_the_channel(h: Harness) -> None:
    thread = await start(h, "One", title="First topic")
    await start(h, "Two", title="Second topic")
    choices = await h.fake.autocomplete("forget", user=ANN, focused="conversation",
                                        conversation="first")
    forgot = await h.fake.slash("forget", user=ANN, conversation=choices[0]["value"])
    await h.settle()
    assert h.answer(forgot).startswith("Forgot **First topic**.")
    assert h.fake.thread(thread)["thread_metadata"]["locked"]
    user = await h.bot.known_member(ANN)
    assert user is not None
    remaining, total = await h.gateway.list_conversations(user)
    assert total == 1 and remaining[0].title == "Second topic"


async def test_forget_someone_elses_thread_is_refused(h: Harness) -> None:
    thread = await start(h, "Mine", title="Ann's")
    refused = await h.fake.slash("forget", user=BOB, channel=thread)
    await h.settle()
    assert h.answer(refused).startswith("Name the conversation")
    assert await h.bot.thread_conversation(thread) is not None
    assert not h.fake.thread(thread)["thread_metadata"]["locked"]


async def test_an_unknown_conversation_option_is_answered(h: Harness) -> None:
    interaction = await h.fake.slash("recall", user=ANN, conversation="no-such-thing")
    await h.settle()
    assert h.answer(interaction) == "⚠️ no such conversation"


async def test_page_buttons_from_before_a_restart_say_they_expired(h: Harness) -> None:
    for i in range(11):
        await start(h, f"question {i}")
    listing = await h.fake.slash("conversations", user=ANN)
    await h.settle()
    assert listing.original_id is not None
    await h.restart()
    stale = await h.fake.click(listing.original_id, "Next ▶", user=ANN)
    assert stale.callbacks[0]["data"]["content"] == (
        "These pages have expired: run the command again.")

