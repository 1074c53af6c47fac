"""Throttles at the HTTP edge: failed key checks per address (sign-in and API keys) and
access-token attempts per address and per e-mail.

Each counter is a leaky bucket: an attempt adds its weight, the level drains at
``limit`` per ``window_s``, and a caller whose bucket is full is refused (429 with
``Retry-After``) before anything is checked. A valid key adds nothing, so it is never slowed
while its address is under the limit.

The buckets live in this process's memory: with several processes behind a load balancer,
each counts its own (an attacker gets up to that many times the limit).
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from collections.abc import Callable, Iterable

from aiohttp import web

from core.errors import RateLimited

MAX_BUCKETS = 100_000
"""Buckets kept at most; beyond it the drained ones are forgotten, then the oldest."""


class Throttle:
    """Leaky buckets by key: ``retry_after(key)`` before an attempt, ``add(key, weight)``
    after it."""

    def __init__(self, limit: float, window_s: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.rate = limit / window_s
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (level, updated)

    def _level(self, key: str, now: float) -> float:
        level, updated = self._buckets.get(key, (0.0, now))
        return max(0.0, level - (now - updated) * self.rate)

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or None when it may try now."""
        if self.limit <= 0 or key not in self._buckets:
            return None  # a key that never failed: every request's case
        level = self._level(key, self._clock())
        if level + 1 <= self.limit:
            return None
        return (level + 1 - self.limit) / self.rate

    def add(self, key: str, weight: float = 1.0) -> None:
        if self.limit <= 0:
            return
        now = self._clock()
        level = self._level(key, now)
        self._buckets.pop(key, None)  # re-inserted last: the dict stays oldest-first
        self._buckets[key] = (level + weight, now)
        if len(self._buckets) > MAX_BUCKETS:
            self._forget(now)

    def _forget(self, now: float) -> None:
        drained = [k for k in self._buckets if self._level(k, now) == 0.0]
        for key in drained:
            del self._buckets[key]
        while len(self._buckets) > MAX_BUCKETS * 0.9:
            del self._buckets[next(iter(self._buckets))]

    def check(self, keys: Iterable[str], message: str) -> None:
        """Raise ``RateLimited`` when any of ``keys`` must wait."""
        if not self._buckets:
            return  # nobody failed lately (checked on every request)
        waits = [w for w in (self.retry_after(k) for k in keys) if w is not None]
        if waits:
            wait = max(waits)
            raise RateLimited(f"{message}; try again in {math.ceil(wait)} s",
                              code="too_many_attempts", retry_after=wait)


# --------------------------------------------------------------------------------- addresses


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def parse_networks(values: Iterable[str]) -> Networks:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def _in(address: str, networks: Networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(request: web.BaseRequest, trusted_proxies: Networks) -> str:
    """The caller's address: the peer, or, when the peer is a trusted proxy, the last address
    in ``X-Forwarded-For`` that is not one (any earlier entry can be forged by the caller)."""
    address = request.remote or ""
    if trusted_proxies and _in(address, trusted_proxies):
        hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", ()))
                .split(",") if h.strip()]
        for hop in reversed(hops):
            address = hop
            if not _in(hop, trusted_proxies):
                break
    return bucket_of(address)


@functools.lru_cache(maxsize=4096)
def bucket_of(address: str) -> str:
    """IPv6 callers are counted by /64: one machine usually holds a whole /64. Kept for the
    addresses seen last: ipaddress parses in Python, ~1.5 % of a /v1 request (issue 14)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
