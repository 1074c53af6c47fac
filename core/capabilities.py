"""What an account can do, and what a request needs of it.

A request that uses tools, images, structured output and the like can only be answered by an
account whose upstream understands them. Sent elsewhere, the upstream would refuse it (a 400
that cools nothing but wastes a call) or, worse, ignore the part it does not know and answer
as if it had never been there. So each account says what it can do (``vision = true``, ...,
with defaults that follow its ``api``), a new conversation goes only to accounts that have
every capability it needs, and when none has, the caller gets a 400 naming the parameter
that needs it: never a silent drop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from .errors import BadRequest

Capability = Literal["vision", "tools", "structured_output", "audio", "files", "logprobs"]
CAPABILITIES: tuple[Capability, ...] = (
    "vision", "tools", "structured_output", "audio", "files", "logprobs")

DEFAULTS: dict[str, frozenset[Capability]] = {
    # OpenAI's Chat Completions and the servers that copy it (vLLM, llama.cpp with a chat
    # template, OpenRouter) take images, tools, response_format and logprobs; audio and file
    # parts only on a few models, so those are said per account.
    "chat": frozenset({"vision", "tools", "structured_output", "logprobs"}),
    # The Responses API takes images, files, tools and text.format; no logprobs on our path.
    "responses": frozenset({"vision", "tools", "structured_output", "files"}),
    # A transcript to complete (a base model): text only.
    "completions": frozenset(),
}

_PART_NEEDS: dict[str, Capability] = {
    "image_url": "vision", "input_image": "vision",
    "input_audio": "audio",
    "file": "files", "input_file": "files",
}


FIELD = "field:"
"""A need of the form ``field:NAME``: a Chat Completions field that must reach the upstream.
A Chat Completions account takes every field as given (those it does not know too, as
OpenAI-compatible servers have their own); the other protocols carry only the fields they have
a counterpart for (``CARRIED``), and a request with another is refused, not trimmed."""
CARRIED: dict[str, frozenset[str]] = {
    "responses": frozenset({
        "max_tokens", "max_completion_tokens", "temperature", "top_p", "user", "metadata",
        "tools", "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort",
        "service_tier"}),
    "completions": frozenset({
        "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "user",
        "presence_penalty", "frequency_penalty", "stop"}),
}
HANDLED = frozenset({"model", "messages", "stream", "stream_options"})
"""Fields the gateway itself acts on, whatever the account."""


class CapabilityMissing(BadRequest):
    """No account that could serve this request has what one of its parameters needs."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message, code="unsupported_parameter")
        self.param = param


def account_capabilities(api: str, declared: Mapping[str, bool | None]) -> frozenset[str]:
    """The account's capabilities: its ``api``'s defaults, with each declared one set."""
    have: set[str] = set(DEFAULTS.get(api, frozenset()))
    for name, value in declared.items():
        if value is True:
            have.add(name)
        elif value is False:
            have.discard(name)
    if api == "chat":
        have.add("n")  # several choices: only Chat Completions returns them
    if api == "responses":
        have.add("responses_api")  # built-in tools and items only the Responses API knows
    return frozenset(have)


_TOOL_ROLES = frozenset({"tool", "function"})


def needs_of_chat(body: Mapping[str, Any], *,
                  plain_text_messages: bool = False) -> dict[str, str]:
    """What a Chat Completions request needs, each with the parameter that needs it (the first
    one found), for the error that names it. ``plain_text_messages``: the messages are known
    to be roles and text alone, which need nothing."""
    needs: dict[str, str] = {}
    for name in ("tools", "functions"):
        if body.get(name):
            needs.setdefault("tools", name)
    for name in ("tool_choice", "function_call", "parallel_tool_calls"):
        if name in body and body[name] is not None:
            needs.setdefault("tools", name)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in (
            "json_object", "json_schema"):
        needs.setdefault("structured_output", "response_format")
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        needs["n"] = "n"
    if body.get("logprobs") or body.get("top_logprobs") is not None:
        needs.setdefault("logprobs", "logprobs" if body.get("logprobs") else "top_logprobs")
    modalities = body.get("modalities")
    if body.get("audio") or (isinstance(modalities, list) and "audio" in modalities):
        needs.setdefault("audio", "audio" if body.get("audio") else "modalities")
    messages = body.get("messages")
    if plain_text_messages or not isinstance(messages, list):
        messages = ()
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        if message.get("role") in _TOOL_ROLES or message.get("tool_calls"):
            needs.setdefault("tools", f"messages[{index}]")
        content = message.get("content")
        if type(content) is list:  # text alone needs nothing: no parameter name to make
            _part_needs(content, f"messages[{index}].content", needs)
    for name, value in body.items():
        # null is the default, and n = 1 is what every protocol does anyway.
        if name not in HANDLED and value is not None and not (name == "n" and value == 1):
            needs.setdefault(FIELD + name, name)
    return needs


def can(api: str, have: frozenset[str], need: str) -> bool:
    """Whether an account of ``api`` with capabilities ``have`` meets ``need``."""
    if need.startswith(FIELD):
        return api == "chat" or need[len(FIELD):] in CARRIED.get(api, frozenset())
    return need in have


def can_all(api: str, have: frozenset[str], needs: Iterable[str]) -> bool:
    return all(can(api, have, need) for need in needs)


def needs_of_input(items: Iterable[Any], param: str = "input") -> dict[str, str]:
    """What a Responses API ``input`` list needs."""
    needs: dict[str, str] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        if item.get("type") in ("function_call", "function_call_output"):
            needs.setdefault("tools", f"{param}[{index}]")
        _part_needs(item.get("content"), f"{param}[{index}].content", needs)
    return needs


def _part_needs(content: Any, param: str, needs: dict[str, str]) -> None:
    if not isinstance(content, list):
        return
    for number, part in enumerate(content):
        if isinstance(part, dict) and (need := _PART_NEEDS.get(str(part.get("type")))):
            needs.setdefault(need, f"{param}[{number}]")


def missing(needs: Mapping[str, str], api: str,
            have: frozenset[str]) -> tuple[str, str] | None:
    """The first capability needed and not had, with the parameter that needs it."""
    for capability, param in needs.items():
        if not can(api, have, capability):
            return capability, param
    return None


def refusal(capability: str, param: str, where: str) -> CapabilityMissing:
    """The 400 for a request that needs what ``where`` (the accounts it may use, or its
    conversation's account) cannot do."""
    if capability.startswith(FIELD):
        return CapabilityMissing(
            f"'{param}' can only be passed on to a Chat Completions account (api = \"chat\"), "
            f"and {where}", param)
    return CapabilityMissing(
        f"'{param}' needs an account that can do '{capability}', and {where}", param)
