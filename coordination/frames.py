"""The frames of the WebSocket protocol (``/v1/ws``, SPEC section 4): what clients send, what the hub sends.

Every frame is a JSON object ``{"type": ..., "id": <optional correlation id>, ...}``.
Client frames are checked like REST bodies: DRF serializers for types and sizes
(``post`` uses the REST ``MessagePost`` itself), domain rules in the services.
Every reply to a client frame carries the frame's ``id`` (``null`` when it had
none); frames the hub pushes on its own (``message``, ``task``, ``result``,
``event``, ``ping``) have no ``id`` key, so a client tells the two apart by it.

Domain errors become ``error`` frames here, in one place (``error_frame``).
"""

from __future__ import annotations

import json
from typing import Any

from rest_framework import serializers

from coordination.api.params import reject_nul
from coordination.api.serializers import ArcSerializer, Id, MessagePost, Object, Text
from coordination.errors import (
    ArcError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)

# Event types a subscription may add to its messages (as ``GET /v1/stream?types=``).
EVENT_TYPES = frozenset({"claim", "lock", "task", "presence", "delivery", "room"})
MAX_CORRELATION_ID_CHARS = 200


class NotRegistered(ArcError):
    """The frame needs a registered socket (send ``register`` first)."""

    status = 403


class UnknownType(ArcError):
    status = 400


_CODES: tuple[tuple[type[ArcError], str], ...] = (
    (NotRegistered, "not_registered"),
    (UnknownType, "unknown_type"),
    (PayloadTooLarge, "too_large"),
    (Invalid, "invalid"),
    (NotFound, "not_found"),
    (Conflict, "conflict"),
    (Forbidden, "forbidden"),
    (Unauthorized, "unauthorized"),
    (RateLimited, "rate_limited"),
)


# ── Client → hub ──────────────────────────────────────────────────────────


class Register(ArcSerializer):
    agent_id = Text(max_length=200)  # required, unless a key says who the socket is (then filled in)
    display_name = Text(max_length=200)
    description = Text(max_length=2000)
    capabilities = serializers.ListField(
        child=Text(required=True, max_length=200), required=False, allow_null=True, max_length=100
    )
    metadata = Object()
    since_id = Id(min_value=0)
    key = Text(max_length=300)  # an agent key, when the upgrade carried none (SPEC 3)


class Discover(ArcSerializer):
    capability = Text(max_length=200)


class Delegate(ArcSerializer):
    to_agent = Text(max_length=200, allow_blank=False)
    to_capability = Text(max_length=200, allow_blank=False)
    body = serializers.CharField(required=True, trim_whitespace=False)
    payload = serializers.JSONField(required=False, allow_null=True)
    ttl_sec = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=10 * 365 * 24 * 3600)
    channel = Text(max_length=200, allow_blank=False)
    thread_id = Text(max_length=200, trim_whitespace=False)


class Result(ArcSerializer):
    task_id = Id(required=True, allow_null=False)
    success = serializers.BooleanField(required=False, allow_null=True)
    body = serializers.CharField(required=False, allow_null=True, allow_blank=True, trim_whitespace=False)
    payload = serializers.JSONField(required=False, allow_null=True)


class Status(ArcSerializer):
    task_id = Id()


class Broadcast(ArcSerializer):
    body = serializers.CharField(required=True, trim_whitespace=False)


class Subscribe(ArcSerializer):
    channels = serializers.ListField(
        child=Text(required=True, max_length=200), required=False, allow_null=True, max_length=100
    )
    since_id = Id(min_value=0)
    types = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(EVENT_TYPES | {"message"})),
        required=False,
        allow_null=True,
        max_length=10,
    )
    exclude_self = serializers.BooleanField(required=False, allow_null=True)


class Ack(ArcSerializer):
    message_ids = serializers.ListField(child=Id(required=True, allow_null=False), min_length=1, max_length=1000)


class Nack(ArcSerializer):
    message_id = Id(required=True, allow_null=False)
    reason = Text(max_length=2000)
    delay_sec = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=3600)


class Lease(ArcSerializer):
    max = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=100)
    lease_sec = serializers.IntegerField(required=False, allow_null=True, min_value=5, max_value=3600)


class Empty(ArcSerializer):
    """``deregister`` and ``heartbeat`` carry nothing but ``type`` and ``id``."""


# The client frame types, each with its input shape and whether it needs a registered socket.
CLIENT_FRAMES: dict[str, tuple[type[ArcSerializer], bool]] = {
    "register": (Register, False),
    "deregister": (Empty, True),
    "discover": (Discover, False),
    "post": (MessagePost, True),
    "delegate": (Delegate, True),
    "result": (Result, True),
    "status": (Status, False),
    "broadcast": (Broadcast, True),
    "subscribe": (Subscribe, True),
    "lease": (Lease, True),
    "ack": (Ack, True),
    "nack": (Nack, True),
    "heartbeat": (Empty, False),
}


def decode(text: str | None, *, limit: int) -> dict[str, Any]:
    """One received WebSocket frame as a JSON object, or ``Invalid``/``PayloadTooLarge``."""
    if text is None:
        raise Invalid("binary frames are not supported: send each frame as JSON text")
    if len(text) > limit or (len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit):
        raise PayloadTooLarge(f"frame exceeds max size ({limit} bytes)")
    try:
        frame = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise Invalid(f"malformed JSON: {exc}") from exc
    if not isinstance(frame, dict):
        kind = type(frame).__name__ if frame is not None else "null"
        raise Invalid(f'a frame must be a JSON object like {{"type": "heartbeat"}}, not {kind}')
    reject_nul(frame, "a frame")
    return frame


def correlation_id(frame: dict[str, Any]) -> str | int | None:
    """The client's correlation ``id``: a string or an integer, echoed in the reply."""
    value = frame.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Invalid("id must be a string or an integer")
    if isinstance(value, str) and len(value) > MAX_CORRELATION_ID_CHARS:
        raise Invalid(f"id must be at most {MAX_CORRELATION_ID_CHARS} characters")
    return value


def frame_type(frame: dict[str, Any]) -> str:
    kind = frame.get("type")
    if not isinstance(kind, str) or not kind:
        raise Invalid("type is required (a string)")
    if kind not in CLIENT_FRAMES:
        raise UnknownType(f"unknown frame type: {kind[:100]} (one of {', '.join(CLIENT_FRAMES)})")
    return kind


def parse(kind: str, frame: dict[str, Any], *, agent_id: str | None) -> dict[str, Any]:
    """The validated fields of a frame of type ``kind`` (``type`` and ``id`` removed).

    A ``post`` acts as the socket's agent: ``from_agent`` is filled in when absent
    and must equal it when given (``Forbidden``), as with an agent key (SPEC 3).
    """
    shape, needs_agent = CLIENT_FRAMES[kind]
    if needs_agent and agent_id is None:
        raise NotRegistered(f"send a register frame before {kind}")
    data = {key: value for key, value in frame.items() if key not in ("type", "id")}
    if kind == "post":
        assert agent_id is not None
        given = data.get("from_agent")
        if given is None:
            data["from_agent"] = agent_id
        elif isinstance(given, str | int) and not isinstance(given, bool) and str(given).strip() != agent_id:
            raise Forbidden(f"from_agent must be this socket's agent ({agent_id}) or absent")
    return shape.parse(data)


# ── Hub → client ──────────────────────────────────────────────────────────


def reply(kind: str, frame_id: str | int | None, **fields: Any) -> dict[str, Any]:
    """The answer to a client frame: its ``type``, the client's correlation ``id``, then ``fields``."""
    return {"type": kind, "id": frame_id, **fields}


def error_frame(exc: ArcError, frame_id: str | int | None) -> dict[str, Any]:
    """An ``error`` frame; a rate-limited one also says in ``retry_after`` how many seconds to wait (as HTTP 429)."""
    code = next((name for cls, name in _CODES if isinstance(exc, cls)), "invalid")
    frame = {"type": "error", "id": frame_id, "code": code, "message": exc.message}
    if isinstance(exc, RateLimited):
        frame["retry_after"] = exc.retry_after
    return frame


def internal_error_frame(frame_id: str | int | None) -> dict[str, Any]:
    return {
        "type": "error",
        "id": frame_id,
        "code": "internal",
        "message": "the hub failed to handle this frame; it has been logged",
    }


def message_frame(message: dict[str, Any], agent_id: str) -> dict[str, Any]:
    """A pushed message, typed for its reader.

    ``task``: a ``task_request`` addressed to the reader. ``result``: a
    ``task_result`` addressed to the reader (the answer to a task it delegated).
    ``message``: everything else. The stored message is always under ``message``
    (its own ``id`` would clash with the frame's correlation id at the top level).
    """
    to_me = message.get("to_agent") == agent_id
    kind = message.get("kind")
    raw = message.get("metadata")
    metadata: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if to_me and kind == "task_request":
        return {
            "type": "task",
            "task_id": message["id"],
            "from_agent": message["from_agent"],
            "body": message["body"],
            "payload": metadata.get("payload"),
            "message": message,
        }
    if to_me and kind == "task_result" and message.get("reply_to") is not None:
        return {
            "type": "result",
            "task_id": message["reply_to"],
            "success": metadata.get("success") is not False,
            "from_agent": message["from_agent"],
            "body": message["body"],
            "payload": metadata.get("payload"),
            "message": message,
        }
    return {"type": "message", "message": message}


def event_frame(event: dict[str, Any]) -> dict[str, Any]:
    """A state change the socket subscribed to: ``{"type": "event", "event": "claim", "data": {...}}``."""
    data = {key: value for key, value in event.items() if key not in ("type", "event")}
    return {"type": "event", "event": event["event"], "data": data}
