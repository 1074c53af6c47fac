"""Request parameters, read the way the original project read them: from the query string on
GET, and from a JSON body or a form on POST (the body wins over the query). Every parser names
the parameter it rejects, so a caller always learns what to fix."""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web

from core.errors import BadRequest, TooLarge

from .inputs import check_text, parse_json, read_form

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}
T = TypeVar("T", bound=str)

SECRET_PARAMS = frozenset(
    {"user", "client", "admin", "key", "api_key", "access_token", "password", "email"}
)
"""Never logged: keys, credentials and the personal data that goes with them."""


class Params:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def __contains__(self, name: str) -> bool:
        return name in self.data and self.data[name] is not None

    def text(self, name: str, default: str | None = None, *, max_chars: int | None = None,
             ) -> str | None:
        value = self.data.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise BadRequest(f"'{name}' must be a string", code="invalid_parameter")
        value = check_text(name, str(value))
        if max_chars is not None and len(value) > max_chars:
            raise BadRequest(f"'{name}' is longer than {max_chars} characters",
                             code="invalid_parameter")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.data.get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise BadRequest(f"'{name}' must be true or false, got {value!r}",
                         code="invalid_parameter")

    def optional_flag(self, name: str) -> bool | None:
        return self.flag(name) if name in self else None

    def choice(self, name: str, allowed: tuple[T, ...], default: T) -> T:
        value = self.data.get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            value = "true" if value else "false"
        text = str(value).strip().lower()
        for option in allowed:
            if text == option:
                return option
        raise BadRequest(
            f"'{name}' must be one of {', '.join(allowed)}, got {value!r}",
            code="invalid_parameter",
        )

    def number(self, name: str, *, minimum: float, maximum: float) -> float:
        value = self.data.get(name)
        try:
            number = float(value) if not isinstance(value, bool) else None  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int past 1e308
            number = None
        if number is None or not minimum <= number <= maximum:
            raise BadRequest(f"'{name}' must be a number from {minimum:g} to {maximum:g}",
                             code="invalid_parameter")
        return number

    def integer(self, name: str, default: int, *, minimum: int = 0,
                maximum: int = 1_000_000) -> int:
        value = self.data.get(name)
        if value is None or value == "":
            return default
        try:
            number = int(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not minimum <= number <= maximum:
            raise BadRequest(f"'{name}' must be a whole number from {minimum} to {maximum}",
                             code="invalid_parameter")
        return number


async def read_params(request: web.Request) -> Params:
    data: dict[str, Any] = dict(request.query)
    if request.method in ("POST", "PUT", "PATCH") and request.body_exists:
        data.update(await _read_body(request))
    return Params(data)


async def _read_body(request: web.Request) -> dict[str, Any]:
    try:
        if request.content_type == "multipart/form-data":
            multipart = await read_form(request)
            return {k: v for k, v in multipart.items() if isinstance(v, str)}
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(
            f"the request body is larger than {request.app._client_max_size} bytes",
            code="body_too_large",
        ) from None
    if not raw.strip():
        return {}
    # `curl -d '{"prompt": ...}'` labels JSON as a form: a body that opens like JSON is JSON.
    looks_like_json = raw.lstrip()[:1] in (b"{", b"[")
    if request.content_type == "application/x-www-form-urlencoded" and not looks_like_json:
        try:
            form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict"))
        except UnicodeDecodeError:
            raise BadRequest("the form body is not valid UTF-8", code="malformed_form") from None
        for name, value in form.items():
            check_text(name, value)
        return form
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BadRequest("the JSON body must be an object", code="malformed_json")
    return body


def bearer_key(request: web.Request, params: Params) -> str | None:
    """The caller's key: ``Authorization: Bearer KEY``, else the original's parameters."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for name in ("user", "client", "admin", "api_key", "key"):
        value = params.text(name)
        if value:
            return value
    return None
