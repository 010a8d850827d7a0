"""Domain errors, raised once by services and translated at each edge.

REST maps them to the Arc error envelope with the status below; later edges
(WebSocket ``error`` frames, MCP tool errors, relay error files) use the same
``status`` and message.
"""

from __future__ import annotations


class ArcError(Exception):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(ArcError):
    """The request is malformed or breaks a validation rule (400)."""

    status = 400


class Unauthorized(ArcError):
    status = 401


class Forbidden(ArcError):
    status = 403


class NotFound(ArcError):
    status = 404


class Conflict(ArcError):
    """The request is valid but the current state refuses it (409)."""

    status = 409


class PayloadTooLarge(ArcError):
    status = 413


class RateLimited(ArcError):
    """Too many requests; ``retry_after`` seconds until the next one is accepted (429)."""

    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
