"""Parsing of what clients send: JSON bodies and query strings, with Arc's rules and clear errors.

Arc accepts any ``Content-Type`` (its README posts with ``curl -d``), so bodies
are parsed from the raw bytes, not through content negotiation.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.http import QueryDict

from coordination.errors import Invalid

TRUTHY = {"true", "1", "yes"}


def json_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is ``{}``."""
    if not raw:
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid("request body must be valid UTF-8") from exc
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise Invalid(f"malformed JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise Invalid(f"request body must be a JSON object, not {type(data).__name__ if data is not None else 'null'}")
    reject_nul(data, "request body")
    return data


def reject_nul(value: Any, where: str) -> None:
    """Refuse NUL characters (``\\u0000``) anywhere in decoded JSON, keys included.

    PostgreSQL can store them neither in text nor in ``jsonb``, so they are refused
    on every database alike, here, before anything reaches storage.
    """
    pending = [value]
    while pending:  # iterative: a deeply nested body must not exhaust the stack
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise Invalid(f"{where} must not contain NUL characters (\\u0000)")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


MAX_ID = 2**63 - 1  # ids are 64-bit: a longer number names nothing (and PostgreSQL would refuse it)


def as_id(raw: str) -> int | None:
    """The id ``raw`` names (ASCII digits within 64 bits), or ``None``. ``"²".isdigit()`` is true too."""
    if raw.isascii() and raw.isdigit() and int(raw) <= MAX_ID:
        return int(raw)
    return None


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
    if not -(2**63) <= value < 2**63:
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
