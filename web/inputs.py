"""Hostile input stopped at the edge with a 400 in the usual shape, before it reaches code that
would fail on it (and log a traceback) further in:

- JSON nested deeper than ``MAX_JSON_DEPTH`` (the parser's recursion would fail);
- lone surrogates (``"\\ud800"`` in JSON, ``%ED%A0%80`` in a query or a path), which no UTF-8
  encoder (SQLite's, the upstream request's) accepts;
- forms whose bytes are not UTF-8 and multipart bodies without a boundary.

The error middleware (errors.py) checks every query and path parameter of every endpoint with
``check_query_and_path``; bodies are checked by ``parse_json`` and ``read_form``, the ways the
handlers read them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from core import fastjson
from core.config import Settings
from core.errors import BadRequest

MAX_JSON_DEPTH = 64
"""Deeper than any request the gateway takes (an OpenAI message is four levels deep)."""


def is_text(value: str) -> bool:
    """True unless ``value`` holds a lone surrogate (the only str UTF-8 cannot carry)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(name: str, value: str) -> str:
    if not is_text(value):
        raise BadRequest(f"'{name}' is not valid Unicode text (it holds a lone surrogate)",
                         code="invalid_parameter")
    return value


async def read_limited(request: web.BaseRequest, limit: int) -> bytes | None:
    """The request's body, or None past ``limit`` bytes (refused by its declared length
    before any of it is read). For routes whose limit is not the app's: aiohttp's own
    ``read`` holds every route to the app's ``client_max_size``."""
    length = request.content_length
    if length is not None and length > limit:
        return None
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def parse_json(raw: bytes, *, what: str = "the request body", depth_later: bool = False) -> Any:
    """``raw`` parsed, refusing what ``json.loads`` would let through to fail later.
    ``depth_later``: the caller checks the depth itself (``check_depth``), once it knows which
    parts are flat; only what orjson read may wait (it nests at most 1,024 levels)."""
    try:
        value, by_orjson = fastjson.loads_noting_origin(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(f"{what} is not valid JSON", code="malformed_json") from None
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply", code="malformed_json") from None
    # orjson refuses lone surrogates, so only what the standard library read (orjson said no:
    # rare) may hold one. Searching every body for escapes and encoded surrogates cost most of
    # what parsing it costs (4 against 6 microseconds for a /v1 body of 3 KB).
    if not by_orjson:
        _walk(value, what)
    elif not depth_later:
        check_depth(value, what, raw)
    return value


def check_depth(value: Any, what: str, raw: bytes | None = None, *,
                flat: str | None = None) -> None:
    """Refuses ``value`` (read by orjson) nested deeper than ``MAX_JSON_DEPTH``. ``raw``: its
    JSON, for a cheap test first (most bodies have too few brackets to be that deep); ``flat``:
    a key of the top object whose value the caller has found to be at most three levels deep
    (a /v1 history of plain messages, most of a long body: counting its brackets cost as much
    as parsing it)."""
    if value.__class__ is not dict and value.__class__ is not list:
        return
    if flat is not None and value.__class__ is dict and flat in value:
        value = {key: item for key, item in value.items() if key != flat}
    elif raw is not None and raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return
    _check_depth(value, what)


def _too_deep(what: str) -> BadRequest:
    return BadRequest(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels",
                      code="malformed_json")


def _check_depth(value: Any, what: str) -> None:
    """Refuses containers nested deeper than ``MAX_JSON_DEPTH``, visiting containers only
    (what orjson read holds no lone surrogate: ``_walk``'s test of every string would only
    cost a long history's request time, as it did)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _too_deep(what)
        for child in (item.values() if item.__class__ is dict else item):
            if child.__class__ is dict or child.__class__ is list:
                stack.append((child, depth + 1))


def _walk(value: Any, what: str) -> None:
    """Iterative (a recursive walk could itself overflow the stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not is_text(item):
                raise BadRequest(f"{what} holds text that is not valid Unicode (a lone "
                                 f"surrogate)", code="malformed_json")
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise _too_deep(what)
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def upload_limit(settings: Settings) -> int:
    """A form that may carry a message's images and files (the web UI's chat): the body
    limit, plus ``[chat] max_attachment_bytes`` (multipart carries the bytes as they are)."""
    return settings.server.max_body_bytes + settings.chat.max_attachment_bytes


async def read_form(request: web.BaseRequest) -> MultiDictProxy[str | Any]:
    """``request.post()``, with malformed forms answered 400 rather than raised as a bug."""
    if request.content_type == "multipart/form-data" and "boundary" not in \
            request.headers.get("Content-Type", ""):
        raise BadRequest("a multipart body needs a boundary in its Content-Type",
                         code="malformed_form")
    try:
        form = await request.post()
    except (ValueError, AssertionError):  # UnicodeDecodeError is a ValueError
        raise BadRequest("the form body is malformed or not UTF-8",
                         code="malformed_form") from None
    for name, value in form.items():
        if isinstance(value, str):
            check_text(name, value)
    return form


def check_query_and_path(request: web.Request) -> None:
    """Every query and path parameter, before any handler sees them."""
    for name, value in (*request.query.items(), *request.match_info.items()):
        check_text(name, value)
