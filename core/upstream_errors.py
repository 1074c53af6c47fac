"""What an upstream failure means for the caller: the ``GatewayError`` (status, code, message)
each kind of failure becomes, on an account of the pool or on a member's own key."""

from __future__ import annotations

from .errors import BadRequest, GatewayError, RateLimited, Unavailable, UpstreamError
from .upstream import UpstreamFailure


def describe(failure: UpstreamFailure) -> str:
    return {
        "rate_limited": "rate limited",
        "server": "server error",
        "timeout": "timed out",
        "proxy": "proxy failure",
        "connect": "unreachable",
        "auth": "key refused",
        "misconfigured": "wrong base_url or model",
        "garbage": "invalid answer",
        "rejected": "request refused",
        "reply_too_large": "reply too large",
    }[failure.kind]


def as_gateway_error(failure: UpstreamFailure, account: str | None) -> GatewayError:
    where = f"account '{account}'" if account else "your own key's upstream"
    if account is None and failure.kind == "auth":
        return BadRequest("the upstream refused your access_token", code="access_token_rejected")
    if failure.kind == "rejected":
        return BadRequest(f"the upstream refused the request: {failure.detail}",
                          code="upstream_rejected")
    if failure.kind == "rate_limited":
        if account is None:
            return RateLimited(f"your own key is rate limited upstream: {failure.detail}",
                               code="upstream_rate_limited", retry_after=failure.retry_after)
        return Unavailable(f"{where} is rate limited; try again later",
                           code="upstream_rate_limited", retry_after=failure.retry_after)
    if failure.kind == "misconfigured" and account is None:
        return BadRequest(f"the upstream does not know this model or path: {failure.detail}",
                          code="upstream_rejected")
    if failure.takes_out:
        return Unavailable(f"{where} is out of service ({describe(failure)})",
                           code="account_out")
    if failure.kind == "timeout":
        return UpstreamError(f"{where} did not answer in time", code="upstream_timeout")
    if failure.kind == "reply_too_large":
        return UpstreamError(f"the reply from {where} was refused: {failure.detail} "
                             "(max_reply_bytes); nothing was stored",
                             code="upstream_reply_too_large")
    return UpstreamError(f"{where} failed: {describe(failure)}", code=f"upstream_{failure.kind}")

