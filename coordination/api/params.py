"""Query strings of the REST door, with Arc's rules and clear errors (bodies: ``coordination.core.parsing``)."""

from __future__ import annotations

from django.conf import settings
from django.http import QueryDict

from coordination.core.errors import Invalid
from coordination.core.parsing import MAX_ID

TRUTHY = {"true", "1", "yes"}


def query_int(query: QueryDict, name: str, default: int, *, minimum: int | None = None) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise Invalid(f"{name} must be an integer") from exc
    if minimum is not None and value < minimum:
        raise Invalid(f"{name} must be >= {minimum}")
    return value


def query_optional_int(query: QueryDict, name: str) -> int | None:
    """An optional id filter; it must fit the database's signed 64-bit integers."""
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise Invalid(f"{name} must be an integer") from exc
    if not -MAX_ID - 1 <= value <= MAX_ID:
        raise Invalid(f"{name} is out of range")
    return value


def query_bool(query: QueryDict, name: str) -> bool:
    return (query.get(name) or "").lower() in TRUTHY


def query_limit(query: QueryDict) -> int:
    """``limit`` (default 100), at least 1, capped at ``ARC_MAX_QUERY_LIMIT``."""
    limit = query_int(query, "limit", 100)
    if limit < 1:
        raise Invalid("limit must be at least 1")
    return min(limit, settings.ARC_MAX_QUERY_LIMIT)


def query_since_id(query: QueryDict) -> int:
    since_id = query_int(query, "since_id", 0)
    if since_id < 0:
        raise Invalid("since_id must be >= 0")
    return since_id


def query_timeout(query: QueryDict) -> float:
    """Long-poll seconds, clamped to [0, 60] as in Arc."""
    raw = query.get("timeout")
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError as exc:
        raise Invalid("timeout must be a number") from exc
    if value != value:  # NaN
        raise Invalid("timeout must be a number")
    return max(0.0, min(value, 60.0))


def query_str(query: QueryDict, name: str) -> str | None:
    value = query.get(name)
    return value if value else None
