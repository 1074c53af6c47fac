"""stream=true: server-sent events of the reply text, ending with the full enriched JSON."""

from __future__ import annotations

import pytest

from tests.fakes.upstream import FakeUpstream, Reply, Status, StreamBreak

from .support import VIAS, Api, People, Via, assert_error, sse_events, user_key


async def stream(api: Api, key: str, via: Via = "json", **params: object) -> list[
        tuple[str, dict[str, object]]]:
    result = await api.call("/api/chat", {"stream": "true", **params}, key=key, via=via)
    assert result.status == 200, result.text
    assert result.content_type == "text/event-stream"
    return sse_events(result.text)


@pytest.mark.parametrize("via", VIAS)
async def test_stream_new_conversation_then_follow_up(api: Api, people: People,
                                                      upstream_a: FakeUpstream, via: Via) -> None:
    upstream_a.enqueue(Reply("one two three four five", chunk_delay=0.02))
    ann = await user_key(api, people)
    events = await stream(api, ann, via, prompt="count for me")
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done"
    assert names.count("title") == 1 and names.count("done") == 1
    assert "error" not in names
    start, done = events[0][1], events[-1][1]
    deltas = [data["text"] for name, data in events if name == "delta"]
    assert len(deltas) >= 2
    assert "".join(str(d) for d in deltas) == "one two three four five"
    assert dict(events)["title"] == {"title": "Fake Title"}
    assert start["conversation_id"] == done["conversation_id"]
    assert start["message_id"] == done["message"]["id"]  # type: ignore[index]
    assert start["account"] == "A" and start["is_new_conversation"] is True
    assert done["status"] == "success"
    assert done["reply"] == "one two three four five"
    assert done["message"]["content"]["parts"][0] == done["reply"]  # type: ignore[index]
    assert done["conversation_title"] == "Fake Title"
    assert done["api_prompt"] == "count for me" and done["api_user"] == "ann"
    assert done["usage"]["completion_tokens"] == 5  # type: ignore[index]
    assert "api_prompt_time_origin" in done and "api_response_time_taken" in done
    # The upstream was asked to stream, with usage included.
    call = upstream_a.chat_requests(titles=False)[0]
    assert call.stream and call.include_usage and call.api_key == "sk-account-a"

    events = await stream(api, ann, via, prompt="again",
                          conversation_id=done["conversation_id"])
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done" and "title" not in names
    follow = events[-1][1]
    assert follow["last_message_prompt"] == "count for me"
    assert follow["last_message_reply"] == "one two three four five"
    assert follow["parent_id"] == done["message"]["id"]  # type: ignore[index]
    # Both turns were stored.
    recall = await api.ok("/api/recall", {"conversation_id": done["conversation_id"]}, key=ann)
    assert [m["reply"] for m in recall["messages"]] == ["one two three four five",
                                                        "reply 2 from A"]


async def test_stream_errors_before_start_keep_their_status(api: Api, people: People,
                                                            upstream_plus: FakeUpstream) -> None:
    ann = await user_key(api, people)
    await api.error("/api/chat", {"stream": True, "prompt": "x", "plus": True}, key=ann,
                    status=403, code="plus_not_allowed")
    await api.error("/api/chat", {"stream": True, "prompt": "x", "conversation_id": "nope"},
                    key=ann, status=404, code="conversation_not_found")
    await api.error("/api/chat", {"stream": True, "prompt": "x"}, status=401)
    assert upstream_plus.requests == []


async def test_stream_broken_upstream_ends_with_error_event_and_stores_nothing(
    api: Api, people: People, upstream_a: FakeUpstream,
) -> None:
    upstream_a.enqueue(StreamBreak(after_chunks=2, text="alpha beta gamma delta"))
    ann = await user_key(api, people)
    events = await stream(api, ann, prompt="break please")
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "error" and "done" not in names
    assert "".join(str(d["text"]) for n, d in events if n == "delta") == "alpha beta"
    error = events[-1][1]
    assert error["status"] == "error" and error["code"] == "upstream_server"
    assert isinstance(error["message"], str) and error["message"]
    listing = await api.ok("/api/recall", key=ann)
    assert listing["total"] == 0


async def test_stream_follow_up_on_failing_account_is_an_error(api: Api, people: People,
                                                               upstream_a: FakeUpstream) -> None:
    ann = await user_key(api, people)
    first = await api.chat(ann, "hello")
    upstream_a.enqueue(Status(500))
    # The stream opens with the first piece of text: a failure before any keeps its status.
    failed = await api.call("/api/chat", {"stream": True, "prompt": "more",
                                          "conversation_id": first["conversation_id"]}, key=ann)
    assert_error(failed, 502, "upstream_server")
    # The account now cools down: the next follow-up is refused before any stream opens.
    result = await api.call("/api/chat", {"stream": True, "prompt": "more",
                                          "conversation_id": first["conversation_id"]}, key=ann)
    assert_error(result, 503, "account_cooling")
    assert int(result.headers["Retry-After"]) >= 1


@pytest.fixture
def socket_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bytes]]:
    """Every socket write aiohttp's StreamWriter makes (one transport write a call), with the
    local port of its connection: the gateway's answers are those from its server's port."""
    from aiohttp.http_writer import StreamWriter

    writes: list[tuple[int, bytes]] = []
    plain, lines = StreamWriter._write, StreamWriter._writelines

    def keep(writer: StreamWriter, data: bytes) -> None:
        transport = writer._protocol.transport
        if transport is not None:
            writes.append((transport.get_extra_info("sockname")[1], data))

    def write(self: StreamWriter, chunk: bytes) -> None:
        keep(self, bytes(chunk))
        plain(self, chunk)

    def writelines(self: StreamWriter, chunks: list[bytes]) -> None:
        keep(self, b"".join(bytes(c) for c in chunks))
        lines(self, chunks)

    monkeypatch.setattr(StreamWriter, "_write", write)
    monkeypatch.setattr(StreamWriter, "_writelines", writelines)
    return writes


async def test_events_ready_together_leave_in_one_socket_write(
        api: Api, people: People, upstream_a: FakeUpstream,
        socket_writes: list[tuple[int, bytes]]) -> None:
    """Headers go out with the first events, not on their own; the stream's end goes with the
    last event (issue 14: a write a event was a fifth of a stream's CPU)."""
    port = api.client.port

    def gateway_writes() -> list[bytes]:
        return [data for local, data in socket_writes if local == port]

    ann = await user_key(api, people)
    first_turn = await api.ok("/api/chat", {"prompt": "hi"}, key=ann)
    socket_writes.clear()
    upstream_a.enqueue(Reply("all of it at once"))  # one read: one delta
    events = await stream(api, ann, prompt="and then?",
                          conversation_id=first_turn["conversation_id"])
    assert [name for name, _ in events] == ["start", "delta", "done"]
    writes = gateway_writes()
    first, last = writes[0], writes[-1]
    assert first.startswith(b"HTTP/1.1 200") and b"event: start" in first \
        and b"event: delta" in first
    assert b"event: done" in last and last.endswith(b"0\r\n\r\n")
    assert len(writes) == 2, writes

    socket_writes.clear()
    upstream_a.enqueue(Reply("again at once"))
    resp = await api.client.post("/v1/chat/completions", headers={
        "Authorization": f"Bearer {ann}"}, json={
        "model": upstream_a.model, "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}]})
    text = await resp.text()
    assert resp.status == 200 and text.endswith("data: [DONE]\n\n")
    writes = gateway_writes()
    first, last = writes[0], writes[-1]
    # The upstream's text pieces of one read go on as one chunk (a chunk each cost the
    # gateway 30% more CPU a stream), all in the first write.
    assert first.startswith(b"HTTP/1.1 200") and b'"role":"assistant"' in first \
        and b'"content":"again at once"' in first
    assert b'"usage":{' in last and b"[DONE]" in last and last.endswith(b"0\r\n\r\n")
    assert len(writes) == 2, writes
