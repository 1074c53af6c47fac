"""The plain Completions API (``POST /completions``) as an upstream protocol, for base models.

A base (pre-trained) model has no chat template: given turns in a chat format it does not know,
it rambles ("say hi mendatanguser..."). It does continue a text well, so the conversation is
written as a transcript for it to complete: a preamble, a few worked ``User:``/``Assistant:``
exchanges that set the tone (short, correct answers), the stored history and the system prompt,
the new prompt, and ``Assistant:``. Stop sequences end the reply where the model would start the
next turn, and a low temperature keeps it from wandering. A title request gets a transcript of
its own (messages and their titles), since the chat examples would teach it to answer instead.

The answer is folded into the same ``Completion`` as a chat completion's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from .wire import (
    Completion,
    Message,
    OnDelta,
    ReplyMeter,
    Target,
    UpstreamFailure,
    content_text,
)

PREAMBLE = (
    "A conversation between a user and a helpful assistant. The assistant answers in one or "
    "two short sentences, correctly and politely."
)
EXAMPLES: tuple[tuple[str, str], ...] = (
    # Everyday kinds of message (a greeting, a fact, a count, a list, thanks), each answered
    # briefly. A count that is unusual (a spider's eight legs) was copied into other answers
    # ("a dog has eight legs"): the examples' facts are plain ones.
    ("Hello!", "Hello! How can I help you today?"),
    ("What is the capital of Spain?", "The capital of Spain is Madrid."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
    ("Name three colours.", "Red, green and blue."),
    ("Thanks!", "You're welcome!"),
)
STOP = ["\nUser:", "\nAssistant:", "\n\n"]
"""Where the model would start the next turn, or leave the answer behind."""
TITLE_PREAMBLE = "Short titles (at most six words) for conversations, from their first message."
TITLE_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("How do I bake sourdough bread at home?", "Baking sourdough bread"),
    ("What is the capital of Spain?", "Capital of Spain"),
    ("Can you help me fix a Python error in my script?", "Fixing a Python error"),
)
TITLE_STOP = ["\n"]
DEFAULT_TEMPERATURE = 0.2
# Chat Completions options with the same meaning here; the rest (tools, response_format, ...)
# have none for a transcript and are not sent.
_OPTIONS = ("max_tokens", "temperature", "top_p", "seed", "user", "presence_penalty",
            "frequency_penalty")


def _line(text: str) -> str:
    """One turn's text, on lines of its own that cannot pass for the next turn."""
    return "\n".join(line for line in text.strip().splitlines() if line.strip())


def chat_prompt(messages: list[Message]) -> str:
    """The conversation as a transcript ending where the assistant's next answer begins."""
    system = [_line(content_text(m.get("content"))) for m in messages
              if m.get("role") in ("system", "developer")]
    parts = [PREAMBLE, *(s for s in system if s)]
    lines = ["\n".join(parts), ""]
    for question, answer in EXAMPLES:
        lines += [f"User: {question}", f"Assistant: {answer}", ""]
    for message in messages:
        role, text = message.get("role"), _line(content_text(message.get("content")))
        if role == "user":
            lines.append(f"User: {text}")
        elif role == "assistant":
            lines += [f"Assistant: {text}", ""]
    lines.append("Assistant:")
    return "\n".join(lines)


def title_prompt(messages: list[Message]) -> str:
    """The first message of a conversation, set up to be completed with its title."""
    first = next((content_text(m.get("content")) for m in messages if m.get("role") == "user"),
                 "")
    text = " ".join(first.split())[:500]
    lines = [TITLE_PREAMBLE, ""]
    for message, title in TITLE_EXAMPLES:
        lines += [f"Message: {message}", f"Title: {title}", ""]
    lines += [f"Message: {text}", "Title:"]
    return "\n".join(lines)


def request_body(target: Target, messages: list[Message], stream: bool,
                 options: dict[str, Any], purpose: str) -> bytes:
    body: dict[str, Any] = {k: v for k, v in options.items() if k in _OPTIONS}
    if "max_tokens" not in body and "max_completion_tokens" in options:
        body["max_tokens"] = options["max_completion_tokens"]
    body.setdefault("temperature", DEFAULT_TEMPERATURE)
    title = purpose == "title"
    stop = list(TITLE_STOP if title else STOP)
    asked = options.get("stop")
    # A caller's own stop sequences (a /v1 client's) end the reply too.
    if isinstance(asked, str):
        stop.append(asked)
    elif isinstance(asked, list):
        stop += [s for s in asked if isinstance(s, str)]
    body.update(model=target.model, prompt=title_prompt(messages) if title
                else chat_prompt(messages), stop=stop)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _not_a_completion(status: int | None = None) -> UpstreamFailure:
    return UpstreamFailure("garbage", "the upstream answered something that is not a text "
                           "completion", status=status)


def _usage(completion: Completion, usage: Any) -> None:
    if isinstance(usage, dict):
        prompt, output = usage.get("prompt_tokens"), usage.get("completion_tokens")
        completion.input_tokens = prompt if isinstance(prompt, int) else None
        completion.output_tokens = output if isinstance(output, int) else None


def read_json(raw: bytes, target: Target) -> Completion:
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        text = choice.get("text") or ""
        if not isinstance(text, str):
            raise TypeError("text is not text")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise _not_a_completion() from None
    result = Completion(text=text.strip(), model=str(data.get("model") or target.model),
                        upstream_id=data.get("id"), finish_reason=choice.get("finish_reason"))
    _usage(result, data.get("usage"))
    return result


class _Trimmed:
    """Passes text on without the answer's leading whitespace (the space after
    ``Assistant:``) or its trailing whitespace (held back until more text follows it), so
    that what was streamed is exactly what is stored."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._held = ""

    def take(self, text: str) -> str:
        text = self._held + text
        if not self.sent:
            text = text.lstrip()
        body = text.rstrip()
        self._held = text[len(body):]
        if body:
            self.sent.append(body)
        return body


async def read_stream(batches: AsyncIterator[list[str]], target: Target,
                      on_delta: OnDelta, meter: ReplyMeter) -> Completion:
    """Streamed ``text_completion`` chunks until ``[DONE]``, the text of one network read
    passed on as one delta."""
    result = Completion(text="", model=target.model)
    trimmed = _Trimmed()
    async for batch in batches:
        texts: list[str] = []
        done = False
        for raw in batch:
            if raw == "[DONE]":
                done = True
                break
            for text in _fold_chunk(raw, result):
                if piece := trimmed.take(text):
                    texts.append(piece)
        if texts:
            joined = "".join(texts)
            meter.add(joined)
            await on_delta(joined)
        if done:
            result.text = "".join(trimmed.sent)
            return result
    raise UpstreamFailure("server", "the upstream stream ended before it was complete")


def _fold_chunk(raw: str, result: Completion) -> list[str]:
    """One streamed chunk folded into ``result``; its texts returned."""
    try:
        chunk = json.loads(raw)
    except ValueError:
        raise _not_a_completion() from None
    if not isinstance(chunk, dict):
        raise _not_a_completion()
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise UpstreamFailure("server", str(message or "the upstream failed mid-stream"))
    result.upstream_id = result.upstream_id or chunk.get("id")
    result.model = str(chunk.get("model") or result.model)
    _usage(result, chunk.get("usage"))
    texts = []
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            raise _not_a_completion()
        text = choice.get("text")
        if isinstance(text, str) and text:
            texts.append(text)
        if choice.get("finish_reason"):
            result.finish_reason = choice["finish_reason"]
    return texts
