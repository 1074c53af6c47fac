"""The admin pages under ``/admin``, shown by role: admins manage everyone and the upstream
accounts; a client manages only the users it created; anyone else gets 403.

A page names a member by the reference its viewer uses: an admin by numeric id, a client by its
own ``userid`` for that user (as in the API), so the facade's role checks apply unchanged.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from core.billing import KIND_MEASURE
from core.config import BUDGET_KEYS
from core.errors import BadRequest, Forbidden, GatewayError, NotFound
from core.gateway import Gateway
from core.models import Principal, Role

from ..api import MAX_ID_CHARS
from ..inputs import read_form
from ..keys import GATEWAY
from .pages import flash, page, render, see_other, signed_in

MANAGERS: tuple[Role, ...] = ("admin", "client")
NOT_A_MANAGER = ("The admin pages are for admins and clients. Your key is a member's key: "
                 "you can chat, and manage your own keys.")
ADMINS_ONLY = "Only admins can see and change the upstream accounts."
PAGE_SIZE = 50
MAX_PAGE_NUMBER = 1_000_000
"""Past it the offset would leave SQLite's 64-bit integers; no list is that long."""
ROLES: dict[str, Role] = {"user": "user", "client": "client", "admin": "admin"}
BUDGET_NAMES = {"tokens_per_day": "tokens per day", "tokens_per_month": "tokens per month",
                "cost_per_month": "cost per month"}


def member_ref(viewer: Principal, user: dict[str, Any]) -> str:
    return str(user["id"]) if viewer.is_admin else str(user.get("userid") or "")


async def member(gateway: Gateway, viewer: Principal, ref: str) -> Principal:
    """A member the viewer may audit: anyone for an admin (disabled ones too), a client's own
    users for a client."""
    if viewer.is_admin:
        found = await gateway.member(viewer, int(ref)) if _is_id(ref) else None
        if found is None:
            raise NotFound(f"There is no member #{ref}.", code="user_not_found")
        return found
    if viewer.is_client:
        try:
            return await gateway.acting_as(viewer, ref)
        except NotFound:
            raise NotFound(f"None of your users has the id {ref!r}.",
                           code="user_not_found") from None
    raise Forbidden(NOT_A_MANAGER, code="not_allowed")


def budget_fields(user: dict[str, Any], defaults: dict[str, float | None], currency: str
                  ) -> list[dict[str, Any]]:
    """The budgets form of one row: each kind's value as set for this principal ("" when it
    follows the tier default, "none" when lifted) and what the default is."""
    own = user.get("limits") or {}
    fields = []
    for kind in BUDGET_KEYS:
        value = own.get(kind, "")
        default = defaults.get(kind) if user["role"] == "user" else None
        unit = currency if KIND_MEASURE[kind] == "cost" else "tokens"
        per = f"{unit}/{kind.rsplit('_', 1)[1]}"
        fields.append({
            "kind": kind, "label": f"{BUDGET_NAMES[kind].capitalize()} ({unit})",
            "value": value if value in ("", "none") else plain(value),
            "placeholder": "default: none" if default is None else f"default: {plain(default)}",
            "set": None if value == "" else f"no limit on {per}" if value == "none"
            else f"{plain(value)} {per}",
        })
    return fields


def plain(value: float) -> str:
    """1000.0 as 1000 and 2.5 as 2.5, never 1e+06: what a person would type back."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def describe_budgets(user: Principal) -> str:
    own = dict(user.limits)
    parts = []
    for kind in BUDGET_KEYS:
        value = own.get(kind)
        if kind not in own:
            parts.append(f"{BUDGET_NAMES[kind]} as the tier default")
        elif value is None:
            parts.append(f"no {BUDGET_NAMES[kind]} limit")
        else:
            parts.append(f"{BUDGET_NAMES[kind]} {plain(value)}")
    return ", ".join(parts)


def _is_id(ref: str) -> bool:
    """A principal's id: ASCII digits (``"²".isdigit()`` too) that SQLite's 64 bits hold."""
    return ref.isascii() and ref.isdigit() and len(ref) <= 18


async def _form(request: web.Request) -> dict[str, str]:
    return {name: value for name, value in (await read_form(request)).items()
            if isinstance(value, str)}


def _back(value: str | None) -> str:
    """Back to the list the action was taken on (its search and page), on this site only."""
    if value and value.startswith("/admin/users") and not value.startswith("//"):
        return value
    return "/admin/users"


# --------------------------------------------------------------------------------- users


@page(roles=MANAGERS, refusal=NOT_A_MANAGER)
async def home(request: web.Request) -> web.StreamResponse:
    raise see_other("/admin/users")


@page(roles=MANAGERS, refusal=NOT_A_MANAGER)
async def users(request: web.Request) -> web.StreamResponse:
    return await users_page(request)


async def users_page(request: web.Request, *, revealed: dict[str, str] | None = None,
                     form_error: str | None = None, form_values: dict[str, str] | None = None,
                     status: int = 200) -> web.Response:
    viewer = signed_in(request).principal
    search = request.query.get("q", "").strip()[:100]
    try:
        number = min(max(1, int(request.query.get("page", "1"))), MAX_PAGE_NUMBER)
    except ValueError:
        number = 1
    found, total = await request.app[GATEWAY].list_users(
        viewer, search=search, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE)
    tiers = request.app[GATEWAY].budgets.tiers
    currency = request.app[GATEWAY].settings.billing.currency
    for user in found:
        user["ref"] = member_ref(viewer, user)
        user["budgets"] = budget_fields(user, tiers.plus if user["plus"] else tiers.free,
                                        currency)
    query = {"q": search} if search else {}
    pages = max(1, -(-total // PAGE_SIZE))
    return await render(request, "admin_users.html", {
        "section": "admin", "tab": "users", "users": found, "total": total, "q": search,
        "page": number, "pages": pages,
        "prev_url": f"/admin/users?{urlencode({**query, 'page': number - 1})}"
        if number > 1 else None,
        "next_url": f"/admin/users?{urlencode({**query, 'page': number + 1})}"
        if number < pages else None,
        "back": request.path_qs, "revealed": revealed, "form_error": form_error,
        "form": form_values or {}, "roles": ("user", "client", "admin") if viewer.is_admin
        else ("user",),
    }, status=status)


@page(roles=MANAGERS, refusal=NOT_A_MANAGER)
async def create(request: web.Request) -> web.StreamResponse:
    """A new user (or, for an admin, a client or admin); its key is shown on this answer only."""
    viewer = signed_in(request).principal
    form = await _form(request)
    role = ROLES.get(form.get("role", "user"))
    try:
        if role is None:
            raise BadRequest("Choose a role: user, client or admin.", code="invalid_parameter")
        user, key = await request.app[GATEWAY].add_user(
            viewer,
            userid=form.get("userid", "").strip()[:MAX_ID_CHARS] or None,
            username=form.get("username", "").strip()[:100] or None,
            plus=form.get("plus") == "on",
            role=role,
        )
    except GatewayError as err:
        return await users_page(request, form_error=err.message, form_values=form,
                                status=err.status)
    return await users_page(request, revealed={"name": user.name, "key": key,
                                               "role": user.role, "what": "created"})


@page(roles=MANAGERS, refusal=NOT_A_MANAGER)
async def update(request: web.Request) -> web.StreamResponse:
    """One action on one member: plus on/off, disable/enable, budgets, rotate the key,
    remove."""
    viewer = signed_in(request).principal
    gateway = request.app[GATEWAY]
    form = await _form(request)
    ref, action = form.get("user", ""), form.get("action", "")
    back = _back(form.get("back"))
    try:
        if action == "rotate":
            user, key = await gateway.rotate_key(viewer, ref)
            return await users_page(request, revealed={"name": user.name, "key": key,
                                                       "role": user.role, "what": "rotated"})
        if action == "remove":
            user = await gateway.remove_user(viewer, ref)
            message = f"Removed {user.name}, with their conversations."
        elif action in ("plus", "unplus"):
            user = await gateway.update_user(viewer, ref, plus=action == "plus")
            message = (f"{user.name} can now use the plus tier." if user.plus
                       else f"{user.name} no longer has the plus tier.")
        elif action in ("disable", "enable"):
            user = await gateway.update_user(viewer, ref, disabled=action == "disable")
            message = (f"{user.name} is disabled: their key is refused until enabled."
                       if user.disabled_utc else f"{user.name} is enabled again.")
        elif action == "limits":
            # The form shows every kind: an empty box is the tier default, "none" no limit.
            limits = {kind: form.get(kind, "").strip()[:40] or "default" for kind in BUDGET_KEYS}
            user = await gateway.update_user(viewer, ref, limits=limits)
            message = f"Budgets of {user.name}: {describe_budgets(user)}."
        else:
            raise BadRequest(f"Unknown action {action!r}.", code="invalid_parameter")
    except GatewayError as err:
        await flash(request, "error", err.message)
    else:
        await flash(request, "ok", message)
    raise see_other(back)


@page(roles=MANAGERS, refusal=NOT_A_MANAGER)
async def conversations(request: web.Request) -> web.StreamResponse:
    """One member's conversations, newest first, each opening read-only (audit)."""
    viewer = signed_in(request).principal
    gateway = request.app[GATEWAY]
    ref = request.query.get("user", "").strip()[:MAX_ID_CHARS]
    if not ref:
        raise BadRequest("Choose a member from the list first.", code="missing_userid")
    owner = await member(gateway, viewer, ref)
    found, total = await gateway.list_conversations(owner, limit=200)
    return await render(request, "admin_conversations.html", {
        "section": "admin", "tab": "users", "owner": owner, "ref": ref,
        "conversations": found, "total": total,
    })


# --------------------------------------------------------------------------------- accounts


@page(roles=("admin",), refusal=ADMINS_ONLY)
async def accounts(request: web.Request) -> web.StreamResponse:
    viewer = signed_in(request).principal
    gateway = request.app[GATEWAY]
    return await render(request, "admin_accounts.html", {
        "section": "admin", "tab": "accounts", "accounts": gateway.accounts(viewer),
        "stats": await gateway.stats(viewer),
    })


@page(roles=("admin",), refusal=ADMINS_ONLY)
async def accounts_update(request: web.Request) -> web.StreamResponse:
    viewer = signed_in(request).principal
    form = await _form(request)
    name, action = form.get("name", ""), form.get("action", "")
    if action not in ("enable", "disable"):
        raise BadRequest("Choose enable or disable.", code="invalid_parameter")
    try:
        await request.app[GATEWAY].set_account_enabled(viewer, name, action == "enable")
    except GatewayError as err:
        await flash(request, "error", err.message)
    else:
        await flash(request, "ok", f"Account {name} {action}d.")
    raise see_other("/admin/accounts")
