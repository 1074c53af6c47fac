"""Reading a Chat Completions stream: its ``chat.completion.chunk`` events folded into one
``Completion`` as they arrive, each network read's text passed on as one delta.

Nearly every chunk of a stream is the chunk before it with other text: the same id, model,
creation time and layout, one choice whose delta is its text alone. Parsing each of them whole
and looking through its fields was most of a streamed request's own cost in the gateway
(issue 14: about 1.7 µs a chunk, 16 to hundreds of chunks a reply). So once one such chunk has
been read whole, ``_TextLayout`` keeps what comes before and after its text's JSON string; a
later chunk that is that same text around one JSON string is read by parsing the string alone.
Anything else (the role, tool calls, refusals, logprobs, other choices, the finish, usage, an
error, a chunk whose id or time changed) is read whole and checked field by field."""

from __future__ import annotations

import json
from typing import Any

import orjson

from . import fastjson
from .upstream_http import Response
from .wire import (
    Completion,
    OnDelta,
    OnRaw,
    ReplyMeter,
    Target,
    UpstreamFailure,
    count_of,
    list_of,
    malformed,
    object_of,
    sse_batches,
    text_of,
)

LAYOUT_TRIES = 3
"""Layouts a stream may learn without one serving ``LAYOUT_SERVES`` chunks (an upstream that
escapes its text unlike either JSON writer, or changes something every chunk or two) before
the reader stops trying: learning costs about as much as reading two chunks whole, and a
chunk read by its layout about a third of one."""
LAYOUT_SERVES = 8
"""Chunks a layout reads by their text to earn the tries back: a stream whose chunks change
now and then (llama.cpp's time of creation, each second) learns again each time."""


async def read_stream(resp: Response, target: Target, on_delta: OnDelta, meter: ReplyMeter,
                      on_raw: OnRaw | None = None) -> Completion:
    """The stream until ``[DONE]``. ``on_raw`` hears each read's chunks in order, as parsed
    objects, except those in the learned layout (a text delta of the first choice alone),
    which come as their text (see ``core/wire.OnRaw``)."""
    reader = _ChunkReader(Completion(text="", model=target.model), resp.status)
    pieces = reader.pieces
    done = False
    async for batch in sse_batches(resp):
        arrived = len(pieces)
        chunks, done = reader.take(batch)
        text = "".join(pieces[arrived:]) if len(pieces) > arrived else ""
        if text:
            meter.add(text)  # refused before any of it is passed on
        if on_raw is not None and chunks:
            # Before the text: a front that forwards the chunks as given ignores the text.
            await on_raw(chunks)
        if text:
            # Everything that came in one read goes on as one delta.
            await on_delta(text)
        if done:
            break
    if not done:
        raise UpstreamFailure("server", "the upstream stream ended before it was complete")
    result = reader.result
    result.text = "".join(pieces)
    result.message = reader.extras.message()
    return result


class _TextLayout:
    """A text chunk's JSON around its text: ``prefix`` + a JSON string + ``suffix``; or, for a
    chunk with OpenAI's ``obfuscation`` (random characters a chunk, after the text), ``prefix``
    + a JSON string + ``between`` + another JSON string + ``suffix``.

    Learned from one chunk read whole, and checked once: the same text around other strings
    must read as that chunk with those strings in its places. Any JSON strings in those places
    then give that chunk with them, since a string is one token of JSON's grammar."""

    __slots__ = ("between", "frame", "model", "prefix", "start", "stop", "suffix")

    def __init__(self, prefix: str, between: str | None, suffix: str,
                 model: str | None) -> None:
        self.prefix = prefix
        self.between = between
        self.suffix = suffix
        self.frame = len(prefix) + len(between or "") + len(suffix)
        self.start = len(prefix)
        self.stop = -len(suffix)  # never 0: a JSON object's text ends with its "}"
        self.model = model

    def text_before_obfuscation(self, raw: str) -> Any:
        """The first string of a chunk with a second (``raw`` starts and ends as the layout
        does); None when the second place holds anything else than one string. Raises
        ``orjson.JSONDecodeError`` when the first does."""
        assert self.between is not None
        end = raw.find(self.between, self.start)
        if end < 0 or type(orjson.loads(raw[end + len(self.between):self.stop])) is not str:
            return None
        return orjson.loads(raw[self.start:end])

    @classmethod
    def learn(cls, raw: str, chunk: dict[str, Any], text: str) -> _TextLayout | None:
        """The layout of ``raw``, a text chunk (``chunk``, read whole) whose text is ``text``;
        None when its strings are not found, once each, as orjson or ``json`` (ASCII escapes)
        would write them."""
        found = _literal(raw, text, 0)
        if found is None:
            return None
        at, end = found
        prefix, between, suffix = raw[:at], None, raw[end:]
        choice = chunk["choices"][0]
        # A probe of its own for each place, so that the check tells them apart.
        expected = {**chunk, "choices": [{**choice, "delta": {"content": _PROBES[0]}}]}
        written = _PROBES_WRITTEN[0]
        obfuscation = chunk.get("obfuscation")
        if type(obfuscation) is str:
            second = _literal(raw, obfuscation, end)
            if second is None:
                return None
            between, suffix = raw[end:second[0]], raw[second[1]:]
            expected["obfuscation"] = _PROBES[1]
            written += between + _PROBES_WRITTEN[1]
        if not suffix:
            return None
        try:
            if orjson.loads(prefix + written + suffix) != expected:
                return None
        except (orjson.JSONDecodeError, RecursionError):
            # RecursionError: the comparison of a chunk nested deeper than Python's stack
            # allows (orjson reads 1,024 levels); such a chunk is read whole, as before.
            return None
        model = chunk.get("model")
        return cls(prefix, between, suffix, model if type(model) is str and model else None)


_PROBES = ("\u0000text", "\u0000obfuscation")
_PROBES_WRITTEN = tuple(orjson.dumps(probe).decode() for probe in _PROBES)


def _literal(raw: str, text: str, start: int) -> tuple[int, int] | None:
    """Where ``text``'s JSON string is in ``raw`` from ``start``, when it is there once. A
    text with a lone surrogate (which ``json`` reads and orjson cannot write) has none."""
    try:
        written = orjson.dumps(text).decode()
    except TypeError:  # orjson.JSONEncodeError
        return None
    # ``json`` writes ASCII text as orjson does; other text with \u escapes.
    for literal in (written,) if text.isascii() else (written, json.dumps(text)):
        at = raw.find(literal, start)
        if at >= 0 and raw.find(literal, at + 1) < 0:
            return at, at + len(literal)
    return None


class _ChunkReader:
    """One stream's chunks folded into ``result``; their text in ``pieces``."""

    __slots__ = ("extras", "layout", "pieces", "result", "served", "status", "tries")

    def __init__(self, result: Completion, status: int) -> None:
        self.result = result
        self.status = status
        self.pieces: list[str] = []
        self.extras = _Accumulator()
        self.layout: _TextLayout | None = None
        self.tries = LAYOUT_TRIES
        self.served = 0  # chunks the current layout read

    def take(self, batch: list[str]) -> tuple[list[dict[str, Any] | str], bool]:
        """One read's events folded in: its chunks (as their text when in the learned layout),
        and whether it ended with ``[DONE]``. The layout's test is written out here rather
        than called: it runs for nearly every chunk of every stream."""
        out: list[dict[str, Any] | str] = []
        pieces = self.pieces
        layout = self.layout
        in_layout = False  # the last chunk to name a model was in the layout
        hits = 0
        done = False
        for raw in batch:
            if layout is not None and len(raw) > layout.frame and \
                    raw.startswith(layout.prefix) and raw.endswith(layout.suffix):
                try:
                    # orjson refuses what is not one JSON value, a lone surrogate and the
                    # like: such a chunk is read whole, by the standard library if need be.
                    text = (orjson.loads(raw[layout.start:layout.stop]) if layout.between is None
                            else layout.text_before_obfuscation(raw))
                except orjson.JSONDecodeError:
                    text = None
                if type(text) is str:
                    out.append(text)
                    if text:
                        pieces.append(text)
                    in_layout = True
                    hits += 1
                    continue
            if raw == "[DONE]":
                done = True
                break
            chunk = self._fold(raw)
            out.append(chunk)
            if chunk.get("model"):
                in_layout = False
            served = self.served + hits  # by the layout in use
            if (self.tries or served >= LAYOUT_SERVES) and \
                    (text := _text_alone(chunk)) is not None:
                self.tries = (LAYOUT_TRIES if served >= LAYOUT_SERVES else self.tries) - 1
                self.served = hits = 0
                self.layout = layout = _TextLayout.learn(raw, chunk, text)
        self.served += hits
        if in_layout and layout is not None and layout.model is not None:
            self.result.model = layout.model
        return out, done

    def _fold(self, raw: str) -> dict[str, Any]:
        """A chunk read whole and checked, folded into the result."""
        try:
            chunk = fastjson.loads(raw)
        except ValueError:
            raise UpstreamFailure("garbage", "the upstream streamed something that is not JSON",
                                  status=self.status) from None
        if not isinstance(chunk, dict):
            raise malformed("a streamed chunk is not an object")
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else None
            raise UpstreamFailure("server", str(message or "the upstream failed mid-stream"))
        result = self.result
        if result.upstream_id is None:
            result.upstream_id = text_of(chunk, "id")
        # Each field goes through its checking helper only when it is not what nearly every
        # chunk carries (this is still every chunk of an upstream with no layout learned).
        model = chunk.get("model")
        if type(model) is not str or not model:
            model = text_of(chunk, "model")
        result.model = model or result.model
        if chunk.get("usage") is not None and (usage := object_of(chunk, "usage")):
            result.input_tokens = count_of(usage, "prompt_tokens")
            result.output_tokens = count_of(usage, "completion_tokens")
        choices = chunk.get("choices")
        for choice in choices if type(choices) is list else list_of(chunk, "choices"):
            if type(choice) is not dict:
                raise malformed("a streamed choice is not an object")
            if choice.get("index", 0) != 0:
                continue  # further choices (n > 1) go to the caller as given, not to the store
            delta = choice.get("delta")
            if not (type(delta) is dict and len(delta) == 1
                    and type(text := delta.get("content")) is str):
                # Anything but text alone is checked and taken.
                delta = object_of(choice, "delta")
                text = text_of(delta, "content")
                self.extras.take(delta)
            if text:
                self.pieces.append(text)
            if choice.get("finish_reason") is not None:
                result.finish_reason = text_of(choice, "finish_reason") or result.finish_reason
        return chunk


def _text_alone(chunk: dict[str, Any]) -> str | None:
    """The text of a chunk that is a text delta of the first choice and nothing else (no
    finish, logprobs, usage or other choice): the chunks a layout is learned from."""
    choices = chunk.get("choices")
    if type(choices) is not list or len(choices) != 1 or type(choice := choices[0]) is not dict:
        return None
    delta = choice.get("delta")
    if choice.get("index", 0) != 0 or choice.get("finish_reason") is not None or \
            choice.get("logprobs") or chunk.get("usage") is not None or \
            type(delta) is not dict or len(delta) != 1:
        return None
    text = delta.get("content")
    return text if type(text) is str else None


class _Accumulator:
    """The first choice's message as its streamed deltas add up: text, refusal, and tool calls
    merged by their ``index`` (id, type and name come once, the arguments in pieces)."""

    def __init__(self) -> None:
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.function_call: dict[str, str] = {}

    def take(self, delta: dict[str, Any]) -> None:
        if len(delta) <= 2 and delta.keys() <= {"content", "role"}:
            return  # text alone: nearly every chunk, and the text is taken elsewhere
        if refusal := text_of(delta, "refusal"):
            self.refusal.append(refusal)
        for call in list_of(delta, "tool_calls"):
            if not isinstance(call, dict) or not isinstance(call.get("index", 0), int):
                raise malformed("a streamed tool call is not an object with an index")
            merged = self.tool_calls.setdefault(
                call.get("index", 0), {"id": "", "type": "function",
                                       "function": {"name": "", "arguments": ""}})
            merged["id"] = text_of(call, "id") or merged["id"]
            merged["type"] = text_of(call, "type") or merged["type"]
            function = object_of(call, "function")
            merged["function"]["name"] += text_of(function, "name") or ""
            merged["function"]["arguments"] += text_of(function, "arguments") or ""
        legacy = object_of(delta, "function_call")
        for key in ("name", "arguments"):
            if piece := text_of(legacy, key):
                self.function_call[key] = self.function_call.get(key, "") + piece

    def message(self) -> dict[str, Any] | None:
        extras: dict[str, Any] = {}
        if self.tool_calls:
            extras["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        if self.refusal:
            extras["refusal"] = "".join(self.refusal)
        if self.function_call:
            extras["function_call"] = {"name": "", "arguments": "", **self.function_call}
        return extras or None
