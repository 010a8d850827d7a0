"""Parsing what clients send, once for every door: JSON objects, ids, text and the NUL rule.

Every door (REST bodies and query strings, WebSocket frames, MCP arguments, relay
envelopes, dashboard forms, the admin's search) reads client input through these, so
one input gets one answer wherever it arrives. Arc accepts any ``Content-Type`` (its
README posts with ``curl -d``), so bodies are parsed from the raw bytes.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from coordination.core.errors import Invalid

# Ids are signed 64-bit integers: a longer number names nothing (and PostgreSQL would refuse it).
MAX_ID = 2**63 - 1


def json_object(raw: bytes | str, where: str = "request body") -> dict[str, Any]:
    """``raw`` as a JSON object (an empty body is ``{}``), by ``json_document``'s rules."""
    if not raw:
        return {}
    data = json_document(raw, where)
    if not isinstance(data, dict):
        raise Invalid(f"{where} must be a JSON object, not {type(data).__name__ if data is not None else 'null'}")
    return data


def json_document(raw: bytes | str, where: str = "request body", *, text_rule: bool = True) -> Any:
    """``raw`` as JSON, or ``Invalid`` saying what to fix: the hub's one JSON rule, at every door.

    Valid UTF-8; well-formed and not nested past Python's recursion limit; numbers a
    database can hold (no integer of thousands of digits, no float beyond 64 bits, no
    ``NaN``/``Infinity``); no NUL characters or lone surrogates (``reject_nul``), unless
    ``text_rule`` is off for a door whose own checks refuse them later (MCP tool arguments,
    refused by the operations as tool errors).
    """
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Invalid(f"{where} must be valid UTF-8") from exc
    else:
        text = raw
    try:
        data = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise Invalid(f"malformed JSON: {exc}") from exc
    except ValueError as exc:  # a number Python will not hold: thousands of digits, or beyond a float
        raise Invalid(f"{where} holds a number out of range: {str(exc)[:120]}") from exc
    if text_rule:
        reject_nul(data, where)
    return data


def _finite_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"{raw[:40]} does not fit a 64-bit float")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def reject_nul(value: Any, where: str) -> None:
    """Refuse text no database can store, anywhere in ``value`` (text, or JSON-like dicts and lists, keys included).

    NUL characters (``\\u0000``): PostgreSQL can store them neither in text nor in ``jsonb``,
    nor compare text with them. Lone surrogates (``\\ud800`` alone): they are not Unicode
    text and cannot be encoded. Both are refused on every database alike, before anything
    reaches storage.
    """
    pending = [value]
    while pending:  # iterative: a deeply nested body must not exhaust the stack
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise Invalid(f"{where} must not contain NUL characters (\\u0000)")
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise Invalid(f"{where} must be Unicode text: a lone surrogate at {exc.start}") from exc
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)


def as_id(raw: str) -> int | None:
    """The id ``raw`` names (ASCII digits within 64 bits), or ``None``. ``"²".isdigit()`` is true too."""
    if raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) <= MAX_ID:
        return int(raw)
    return None


def require_id(value: Any, name: str) -> int:
    """``value`` as an id the database can hold (a signed 64-bit integer); ``Invalid`` otherwise.

    For ids that reach an operation without an input shape: URL paths, MCP tool arguments.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not -MAX_ID - 1 <= value <= MAX_ID:
        raise Invalid(f"{name} must be an integer id (64-bit), not {str(value)[:40]}")
    return value


def agent_name(value: Any, name: str = "agent_id") -> str:
    """``value`` as an agent id: required text without ``/``.

    An agent id is a path segment of ``/v1/inbox/{agent_id}`` and ``/v1/inbox/{agent_id}/lease``,
    where a ``/`` (even sent as ``%2F``) would address another endpoint; so it is refused
    wherever an agent comes to exist (a session, a key, a post), never half accepted.
    """
    text = required_text(value, name)
    if "/" in text:
        raise Invalid(f"{name} must not contain '/' (agent ids are path segments, as in /v1/inbox/{{agent_id}})")
    return text


def required_text(value: Any, name: str) -> str:
    """``value`` as stripped text; ``Invalid`` when it is absent or blank."""
    text = (value or "").strip() if isinstance(value, str) or value is None else str(value).strip()
    if not text:
        raise Invalid(f"{name} is required")
    return text


def as_int(value: Any, name: str) -> int:
    """``value`` as an integer (a whole float counts, a bool does not); ``Invalid`` otherwise."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise Invalid(f"{name} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise Invalid(f"{name} must be an integer") from exc


def fits(model: type[Any], **values: str | None) -> None:
    """Each text value fits its column (``field = value``): ``Invalid`` rather than a database error.

    The input shapes check lengths too; this is the rule itself, for callers that skip them.
    """
    for name, value in values.items():
        limit = model._meta.get_field(name).max_length
        if value is not None and limit is not None and len(value) > limit:
            raise Invalid(f"{name} must be at most {limit} characters")


def repository_name(value: str) -> str:
    """A repository's name as the hub keeps and shows it: a URL without its user and password.

    An origin URL may carry a credential (``https://x-access-token:ghp_…@github.com/acme/app.git``);
    the name goes into session metadata and lock names, which every agent reads, so it is dropped.
    ``git@host:path`` (no password possible) and local paths are kept as they are.
    """
    value = value.strip()
    if "://" not in value:
        return value
    parts = urlsplit(value)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
