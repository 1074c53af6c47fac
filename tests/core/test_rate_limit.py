"""user_requests_per_minute: a sliding minute per caller, counted on the injected clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.config import Settings
from core.errors import RateLimited
from core.storage.limits import MemoryRateLimiter
from tests.conftest import account
from tests.core.conftest import FakeClock, OpenGateway, ask
from tests.fakes.upstream import FakeUpstream


async def test_sliding_minute_per_principal(clock: FakeClock) -> None:
    limiter = MemoryRateLimiter(2, clock)
    await limiter.check(1)
    clock.advance(20)
    await limiter.check(1)
    await limiter.check(2)  # another caller has its own budget
    with pytest.raises(RateLimited) as caught:
        await limiter.check(1)
    assert caught.value.status == 429
    assert caught.value.retry_after == pytest.approx(40)  # the first request leaves the window
    clock.advance(39.9)
    with pytest.raises(RateLimited):
        await limiter.check(1)
    clock.advance(0.1)
    await limiter.check(1)  # the first one left the minute; the refused ones never counted
    with pytest.raises(RateLimited) as caught:
        await limiter.check(1)
    assert caught.value.retry_after == pytest.approx(20)


async def test_zero_means_no_limit(clock: FakeClock) -> None:
    limiter = MemoryRateLimiter(0, clock)
    for _ in range(1000):
        await limiter.check(1)


async def test_gateway_enforces_user_requests_per_minute(
    make_settings: Callable[..., Settings], open_gateway: OpenGateway, clock: FakeClock,
    upstream_a: FakeUpstream,
) -> None:
    gw = await open_gateway(make_settings([account("A", upstream_a, "KEY_A")],
                                          limits={"user_requests_per_minute": 2}))
    admin = await gw.authenticate(await gw.create_admin("root"))
    ann, _ = await gw.add_user(admin, userid="ann", username="Ann")
    bob, _ = await gw.add_user(admin, userid="bob", username="Bob")
    first = await ask(gw, ann, "one")
    await ask(gw, ann, "two", first.conversation.id)
    with pytest.raises(RateLimited) as caught:
        await ask(gw, ann, "three", first.conversation.id)
    assert caught.value.retry_after == pytest.approx(60)
    assert len(upstream_a.chat_requests(titles=False)) == 2  # refused before going upstream
    assert len((await gw.recall(ann, first.conversation.id))[1]) == 2
    await ask(gw, bob, "bob is not limited by ann")
    clock.advance(60)
    assert (await ask(gw, ann, "three", first.conversation.id)).turn.position == 2
