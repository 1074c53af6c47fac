"""The gateway's error hierarchy.

Every error a caller can cause or meet derives from ``GatewayError`` and carries a message that is
safe to show, a stable machine-readable ``code`` and the HTTP status it maps to. The fronts (web,
Discord) translate these at their edge; anything that is not a ``GatewayError`` is a bug, logged
with its traceback and shown as a short apology.

    GatewayError
    ├── BadRequest              400  malformed or missing input
    ├── Unauthorized            401  no key, or a key that is unknown, removed or disabled
    ├── Forbidden               403  the key is valid but may not do this
    ├── NotFound                404  unknown conversation, user, account
    ├── Conflict                409  e.g. a follow-up that mixes pool and own-key modes
    ├── TooLarge                413  body or prompt over the limit
    ├── RateLimited             429  the caller sent too much
    ├── NotConfigured           501  a feature the deployment has not configured
    └── UpstreamError           502  the upstream answered badly
        └── Unavailable         503  no account can serve the request now
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class: ``str(err)`` is safe to show to the caller."""

    status = 500
    code = "error"

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after = retry_after


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"


class Unauthorized(GatewayError):
    status = 401
    code = "unauthorized"


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class Conflict(GatewayError):
    status = 409
    code = "conflict"


class TooLarge(GatewayError):
    status = 413
    code = "too_large"


class RateLimited(GatewayError):
    status = 429
    code = "rate_limited"


class NotConfigured(GatewayError):
    status = 501
    code = "not_configured"


class UpstreamError(GatewayError):
    status = 502
    code = "upstream_error"


class Unavailable(UpstreamError):
    status = 503
    code = "unavailable"
