"""The UI's fixed paths against the configurable API paths: a collision stops the start, naming
the setting; the defaults leave the UI its paths."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.config import ConfigError, Settings
from core.gateway import build_gateway
from tests.conftest import ENVIRON, account
from tests.fakes.upstream import FakeUpstream
from web.app import create_app
from web.ui import ROUTES, check_paths

from .support import LOOP


def test_default_paths_leave_the_ui_its_own() -> None:
    check_paths(Settings().paths.model_dump())
    ui_paths = {path for _, path, _ in ROUTES}
    assert not ui_paths & set(Settings().paths.model_dump().values())


@pytest.mark.parametrize("value", ["/", "/chat", "/admin/users", "/static/app.css", "/login",
                                   "/usage", "/admin/usage.csv"])
def test_a_colliding_path_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match=r"\[paths\] recall = .* collides with the web UI"):
        check_paths({"chat": "/api/chat", "recall": value})


@LOOP
async def test_the_app_refuses_to_start_on_a_collision(
    make_settings: Callable[..., Settings], upstream_a: FakeUpstream,
) -> None:
    settings = make_settings([account("A", upstream_a, "KEY_A")],
                             paths={"chat": "/chat"})
    async with build_gateway(settings, environ=ENVIRON) as gateway:
        with pytest.raises(ConfigError, match=r"\[paths\] chat = '/chat'"):
            create_app(gateway)
