"""Paths renamed in ``[paths]``, unknown paths and wrong methods, and the ways parameters arrive
(query, JSON, urlencoded and multipart forms, JSON sent as a form)."""

from __future__ import annotations

import itertools

import aiohttp
import pytest

from tests.fakes.upstream import FakeUpstream

from .support import VIAS, Api, MakeApi, People, Via, assert_error

RENAMED = {
    "chat": "/talk", "recall": "/history", "access_token": "/token",
    "add_user": "/manage/add", "remove_user": "/manage/remove", "update_user": "/manage/update",
    "list_users": "/manage/list", "remove_conversation": "/forget", "rotate_key": "/new-key",
    "admin_accounts": "/accounts", "health": "/ping",
}


@pytest.mark.parametrize("via", VIAS)
async def test_renamed_paths_work_and_old_ones_404(custom_api: MakeApi, via: Via) -> None:
    api, gateway = await custom_api(paths=RENAMED)
    admin = await gateway.create_admin("root")
    key, _ = await api.add_user(admin, "ann", path="/manage/add", via=via, userid="u-1")
    chat = await api.ok("/talk", {"prompt": "hi"}, key=key, via=via)
    cid = chat["conversation_id"]
    assert (await api.ok("/history", key=key, via=via))["total"] == 1
    await api.ok("/manage/list", key=admin, via=via)
    await api.ok("/manage/update", {"userid": "u-1", "plus": True}, key=admin, via=via)
    await api.ok("/accounts", key=admin, via=via)
    await api.ok("/ping", via=via)
    await api.error("/token", {"email": "a", "password": "b"}, via=via, status=501)
    await api.ok("/forget", {"conversation_id": cid}, key=key, via=via)
    key = (await api.ok("/new-key", key=key, via=via))["api_key"]
    await api.ok("/manage/remove", {"userid": "u-1"}, key=admin, via=via)
    await api.error("/talk", {"prompt": "x"}, key=key, via=via, status=401)

    for old in ("/api/chat", "/api/recall", "/api/access-token", "/api/client/add-user",
                "/api/client/remove-user", "/api/client/update-user", "/api/client/users",
                "/api/remove-conversation", "/api/rotate-key", "/api/admin/accounts",
                "/healthz"):
        result = await api.error(old, {"prompt": "x"}, key=admin, via=via, status=404,
                                 code="not_found")
        assert old in result.body["message"]


@pytest.mark.parametrize("via", VIAS)
async def test_unknown_path_is_json_404(api: Api, people: People, via: Via) -> None:
    for path in ("/nope", "/api/chatt", "/api/chat/extra", "/api", "/api/client"):
        await api.error(path, {"prompt": "x"}, key=people.admin, via=via, status=404,
                        code="not_found")


async def test_wrong_method_is_json_405(api: Api, people: People) -> None:
    for method, path in itertools.product(("PUT", "DELETE", "PATCH"), (
            "/api/chat", "/api/recall", "/api/client/add-user", "/healthz")):
        resp = await api.client.request(method, path, json={"prompt": "x"},
                                        headers={"Authorization": f"Bearer {people.admin}"})
        async with resp:
            body = await resp.json()
            assert resp.status == 405, body
            assert "GET" in resp.headers.get("Allow", "")
        assert body["status"] == "error" and body["code"] == "method_not_allowed"
        assert set(body) == {"status", "message", "code"}


async def test_multipart_form(api: Api, people: People) -> None:
    form = aiohttp.FormData()
    form.add_field("prompt", "from a multipart form")
    form.add_field("user", people.admin)
    form.add_field("reply_only", "true")
    form.add_field("upload", b"ignored bytes", filename="f.txt")
    resp = await api.client.post("/api/chat", data=form)
    async with resp:
        assert resp.status == 200, await resp.text()
        assert await resp.text() == "reply 1 from A"


async def test_json_sent_as_a_form_is_read_as_json(api: Api, people: People) -> None:
    # What `curl -d '{"prompt": "hi"}'` sends: JSON labelled as a form.
    resp = await api.client.post("/api/chat", data=f'{{"prompt": "curl style", "user": '
                                 f'"{people.admin}"}}',
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    async with resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["api_prompt"] == "curl style"


async def test_body_wins_over_query(api: Api, people: People, upstream_a: FakeUpstream) -> None:
    resp = await api.client.post("/api/chat?prompt=from-query&reply_only=true",
                                 json={"prompt": "from-body"},
                                 headers={"Authorization": f"Bearer {people.admin}"})
    async with resp:
        assert resp.status == 200
        assert await resp.text() == "reply 1 from A"
    assert upstream_a.chat_requests(titles=False)[0].messages[-1]["content"] == "from-body"


async def test_post_without_body_reads_the_query(api: Api, people: People) -> None:
    resp = await api.client.post("/api/recall", params={"user": people.admin})
    async with resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == "success"


async def test_wrong_parameter_types_are_400(api: Api, people: People) -> None:
    for params in ({"prompt": ["a", "b"]}, {"prompt": {"x": 1}}, {"conversation_id": True},
                   {"plus": ["true"]}):
        result = await api.call("/api/chat", params, key=people.admin)
        assert_error(result, 400)
