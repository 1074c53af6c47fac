"""Translation between the two OpenAI request shapes: Chat Completions (``messages``, ``tools``
with a nested ``function``, ``response_format``) and Responses (``input`` items, flat function
tools, ``text.format``).

Used both ways: a Chat Completions request sent to an ``api = "responses"`` account, and a
/v1/responses caller served by an ``api = "chat"`` account (and its reply turned back into
Responses output items). Whatever has no counterpart is refused with the parameter named
(``ShapeError``), never dropped.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import BadRequest
from .wire import Completion, Message


class ShapeError(BadRequest):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message, code="unsupported_parameter")
        self.param = param


# ------------------------------------------------------------------- Chat -> Responses

_PART_TO_RESPONSES = {"text": "input_text", "image_url": "input_image", "file": "input_file",
                      "input_audio": "input_audio"}


def _part_to_responses(part: Any, role: str) -> Any:
    if not isinstance(part, dict):
        return part
    kind = part.get("type")
    if kind == "text":
        return {"type": "output_text" if role == "assistant" else "input_text",
                "text": part.get("text", "")}
    if kind == "image_url":
        image = part.get("image_url") or {}
        out = {"type": "input_image", "image_url": image.get("url")}
        if image.get("detail"):
            out["detail"] = image["detail"]
        return out
    if kind == "file":
        return {"type": "input_file", **(part.get("file") or {})}
    return part


def chat_messages_to_input(messages: list[Message]) -> list[dict[str, Any]]:
    """Chat messages as Responses input items (tool calls and results as their own items)."""
    items: list[dict[str, Any]] = []
    for message in messages:
        role = str(message.get("role"))
        if role == "tool":
            items.append({"type": "function_call_output", "call_id": message.get("tool_call_id"),
                          "output": _text(message.get("content"))})
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = [_part_to_responses(p, role) for p in content]
        if content not in (None, "", []):
            items.append({"role": role, "content": content})
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            items.append({"type": "function_call", "call_id": call.get("id"),
                          "name": function.get("name"), "arguments": function.get("arguments")})
    return items


def chat_options_to_responses(options: dict[str, Any]) -> dict[str, Any]:
    """Chat Completions tools, tool_choice and response_format in the Responses shape."""
    out: dict[str, Any] = {}
    if tools := options.get("tools"):
        out["tools"] = [_tool_to_responses(t) for t in tools]
    choice = options.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        out["tool_choice"] = {"type": "function", "name": choice["function"].get("name")}
    elif choice is not None:
        out["tool_choice"] = choice
    if "parallel_tool_calls" in options:
        out["parallel_tool_calls"] = options["parallel_tool_calls"]
    if "reasoning_effort" in options:
        out["reasoning"] = {"effort": options["reasoning_effort"]}
    if "service_tier" in options:
        out["service_tier"] = options["service_tier"]
    response_format = options.get("response_format")
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_schema":
            schema = dict(response_format.get("json_schema") or {})
            out["text"] = {"format": {"type": "json_schema", **schema}}
        else:
            out["text"] = {"format": response_format}
    return out


def _tool_to_responses(tool: Any) -> Any:
    if isinstance(tool, dict) and tool.get("type") == "function" and \
            isinstance(tool.get("function"), dict):
        return {"type": "function", **tool["function"]}
    return tool


# ------------------------------------------------------------------- Responses -> Chat

def input_to_chat_messages(body: dict[str, Any]) -> list[Message]:
    """A Responses request's ``instructions`` and ``input`` as Chat Completions messages."""
    messages: list[Message] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    raw = body.get("input")
    if isinstance(raw, str):
        messages.append({"role": "user", "content": raw})
        return messages
    if not isinstance(raw, list):
        raise ShapeError("'input' must be a string or an array of input items", "input")
    for index, item in enumerate(raw):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise ShapeError(f"{where} must be an object", where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise ShapeError(f"{where}.role must be user, assistant, system or developer",
                                 f"{where}.role")
            messages.append({"role": role,
                             "content": _content_to_chat(item.get("content"), f"{where}.content")})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"),
                                 "arguments": item.get("arguments") or ""}}
            last = messages[-1] if messages else None
            if last is not None and last.get("role") == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)  # parallel calls: one assistant message
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str) else
                             json.dumps(output)})
        elif kind == "reasoning":
            continue  # the model's own notes: nothing a Chat Completions model reads
        else:
            raise ShapeError(f"{where}: input items of type {kind!r} need an account with "
                             "the Responses API", where)
    return messages


def _content_to_chat(content: Any, where: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ShapeError(f"{where} must be a string or an array of content parts", where)
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image = {"url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file" and (part.get("file_data") or part.get("file_id")):
            parts.append({"type": "file", "file": {k: part[k] for k in (
                "file_data", "file_id", "filename") if k in part}})
        elif kind == "input_audio":
            parts.append(part)
        else:
            raise ShapeError(f"{where}[{index}]: a content part of type {kind!r} cannot be "
                             "sent to a Chat Completions account", f"{where}[{index}]")
    return parts


def options_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses request's settings as Chat Completions options."""
    out: dict[str, Any] = {}
    for ours, theirs in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"),
                         ("top_p", "top_p"), ("user", "user"), ("metadata", "metadata"),
                         ("parallel_tool_calls", "parallel_tool_calls")):
        if body.get(ours) is not None:
            out[theirs] = body[ours]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        out["reasoning_effort"] = reasoning["effort"]
    tools = body.get("tools")
    if tools:
        converted = []
        for index, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") != "function":
                kind = tool.get("type") if isinstance(tool, dict) else None
                raise ShapeError(f"tools[{index}]: a {kind!r} tool is built into the "
                                 "Responses API; no Chat Completions account can run it",
                                 f"tools[{index}]")
            function = {k: tool[k] for k in ("name", "description", "parameters", "strict")
                        if k in tool}
            converted.append({"type": "function", "function": function})
        out["tools"] = converted
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        out["tool_choice"] = choice
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict):
        fmt = dict(text["format"])
        if fmt.get("type") == "json_schema":
            kind = fmt.pop("type")
            out["response_format"] = {"type": kind, "json_schema": fmt}
        elif fmt.get("type") != "text":
            out["response_format"] = fmt
    return out


def output_items(completion: Completion, item_id: str) -> list[dict[str, Any]]:
    """A Chat Completions reply as Responses output items: the message, then its calls."""
    items: list[dict[str, Any]] = []
    extras = completion.message or {}
    if completion.text or extras.get("refusal") or not extras.get("tool_calls"):
        content: list[dict[str, Any]] = []
        if completion.text or not extras.get("refusal"):
            content.append({"type": "output_text", "text": completion.text,
                            "annotations": [], "logprobs": []})
        if extras.get("refusal"):
            content.append({"type": "refusal", "refusal": extras["refusal"]})
        items.append({"type": "message", "id": f"msg_{item_id}", "status": "completed",
                      "role": "assistant", "content": content})
    for number, call in enumerate(extras.get("tool_calls") or []):
        function = call.get("function") or {}
        items.append({"type": "function_call", "id": f"fc_{item_id}_{number}",
                      "call_id": call.get("id"), "name": function.get("name"),
                      "arguments": function.get("arguments") or "", "status": "completed"})
    return items


def tool_calls_of_output(output: list[Any]) -> list[dict[str, Any]]:
    """Responses ``function_call`` output items as Chat Completions tool calls."""
    return [{"id": item.get("call_id"), "type": "function",
             "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""}}
            for item in output if isinstance(item, dict) and item.get("type") == "function_call"]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""
