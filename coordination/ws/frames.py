"""The frames of the WebSocket protocol (``/v1/ws``, docs/websocket.md): what clients send, what the hub sends.

Every frame is a JSON object ``{"type": ..., "id": <optional correlation id>, ...}``.
Client frames are checked like REST bodies, by the same input shapes and the same
operations (``coordination.core.operations``); domain rules live in the services.
Every reply to a client frame carries the frame's ``id`` (``null`` when it had
none); frames the hub pushes on its own (``message``, ``task``, ``result``,
``event``, ``ping``) have no ``id`` key, so a client tells the two apart by it.

Domain errors become ``error`` frames here, in one place (``error_frame``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coordination.core import access, idempotency
from coordination.core import inputs as shapes
from coordination.core.errors import (
    ArcError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)
from coordination.core.inputs import ArcSerializer
from coordination.core.parsing import json_object

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


@dataclass(frozen=True)
class ClientFrame:
    """A client frame type: its input shape (``coordination.core.inputs``), whether it needs a registered
    socket, and the acting field the socket fills with its agent (as a key fills it over REST)."""

    shape: type[ArcSerializer]
    needs_register: bool
    acting: str | None = None

    def fields(self) -> list[str]:
        """The fields a client sends in this frame (the acting one is the socket's)."""
        return [str(name) for name in self.shape().fields if name != self.acting]


CLIENT_FRAMES: dict[str, ClientFrame] = {
    "register": ClientFrame(shapes.Register, False),
    "deregister": ClientFrame(shapes.Empty, True),
    "discover": ClientFrame(shapes.Discover, False),
    "post": ClientFrame(shapes.MessagePost, True, "from_agent"),
    "delegate": ClientFrame(shapes.Delegate, True, "from_agent"),
    "result": ClientFrame(shapes.Result, True, "from_agent"),
    "status": ClientFrame(shapes.Status, False),
    "broadcast": ClientFrame(shapes.Broadcast, True),
    "subscribe": ClientFrame(shapes.Subscribe, True),
    "lease": ClientFrame(shapes.InboxLease, True, "agent_id"),
    "ack": ClientFrame(shapes.DeliveryAck, True, "agent_id"),
    "nack": ClientFrame(shapes.DeliveryNack, True, "agent_id"),
    "heartbeat": ClientFrame(shapes.Empty, False),
}


def decode(text: str | None, *, limit: int) -> dict[str, Any]:
    """One received WebSocket frame as a JSON object, or ``Invalid``/``PayloadTooLarge``."""
    if text is None:
        raise Invalid("binary frames are not supported: send each frame as JSON text")
    if len(text) > limit or (len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit):
        raise PayloadTooLarge(f"frame exceeds max size ({limit} bytes)")
    if not text:
        raise Invalid('malformed JSON: an empty frame (send a JSON object like {"type": "heartbeat"})')
    return json_object(text, "a frame")


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


def fields(kind: str, frame: dict[str, Any], *, agent_id: str | None) -> dict[str, Any]:
    """A frame's fields (``type`` and ``id`` removed), acting as the socket's agent.

    ``NotRegistered`` when the frame needs a registered socket and this one is not. The
    acting field (``from_agent``, ``agent_id``) is filled with the socket's agent when absent
    or empty and must equal it when given (``Forbidden``), as with an agent key
    (``access.bind_to``). The shape is checked by the operation the frame calls, or by
    ``shape`` for frames only the socket handles.
    """
    spec = CLIENT_FRAMES[kind]
    if spec.needs_register and agent_id is None:
        raise NotRegistered(f"send a register frame before {kind}")
    data = {key: value for key, value in frame.items() if key not in ("type", "id", "idempotency_key")}
    if spec.acting is not None:
        data[spec.acting] = access.bind_to(agent_id, data.get(spec.acting), spec.acting)
    return data


def idempotency_key(frame: dict[str, Any]) -> str | None:
    """The frame's ``idempotency_key`` (a header cannot travel in a frame): a resent frame gets the first answer."""
    key = frame.get("idempotency_key")
    return None if key is None else idempotency.key_check(key)


def shape(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """The validated fields of a frame the socket handles itself (register, subscribe, ...)."""
    return CLIENT_FRAMES[kind].shape.parse(data)


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
