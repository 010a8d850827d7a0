"""The hub's own description: every HTTP endpoint, once, as the OpenAPI document at ``/v1/schema``.

``_docs()`` is the one source: the schema (here) and the agent manifest
(``arcsite.manifest``) are both read from it. Each entry is a route and
method of the URLconf with a summary, a description, query parameters and the
shape of its answer. Request bodies are not written here: they are the DRF
serializers the views parse with (``coordination.core.inputs``), found in
the view's own code (``serializer_in``) unless an entry names one.

drf-spectacular builds the document (``ArcSchemaGenerator``). It only sees DRF
views, so the async function views (long-polls, SSE, ask) and the plain Django
ones (``/``, ``/metrics``) are given stand-in APIView classes for the
description; nothing routes to those. Only routed paths are described: an entry
whose route is not in the URLconf is left out, and a routed ``/v1`` path without
an entry fails ``tests/test_manifest_schema.py``.
"""

from __future__ import annotations

import functools
import inspect
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import CodeType
from typing import Any, Literal

from django.conf import settings
from django.urls import URLPattern, URLResolver
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.generators import EndpointEnumerator, SchemaGenerator
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.renderers import (
    OpenApiJsonRenderer,
    OpenApiJsonRenderer2,
    OpenApiYamlRenderer,
    OpenApiYamlRenderer2,
)
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.schemas.generators import is_api_view
from rest_framework.views import APIView

from coordination.core import inputs as input_shapes
from coordination.core import operations as core_operations
from coordination.core.models import Delivery, Message, Task

Schema = dict[str, Any]
Access = Literal["open", "agent", "admin", "loopback-or-admin"]
AUTO: Literal["auto"] = "auto"  # the request body is the serializer the view's code parses with

SECURITY_SCHEME = "agentKey"


@functools.cache
def hub_version() -> str:
    """The hub's version, from ``pyproject.toml`` (the project is run from its checkout, not installed)."""
    try:
        with open(settings.BASE_DIR / "pyproject.toml", "rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


# ── Shapes of what the hub answers ────────────────────────────────────────


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    if "$ref" in schema:
        return {"allOf": [schema], "nullable": True}
    return {**schema, "nullable": True}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(properties: Mapping[str, Schema], required: tuple[str, ...] = (), description: str = "") -> Schema:
    schema: Schema = {"type": "object", "properties": dict(properties)}
    if required:
        schema["required"] = list(required)
    if description:
        schema["description"] = description
    return schema


def counts(description: str) -> Schema:
    return {"type": "object", "additionalProperties": {"type": "integer"}, "description": description}


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
BOOLEAN: Schema = {"type": "boolean"}
ROOM_CLOSED_WAIT: dict[str, Schema] = {
    "room_closed": {**BOOLEAN, "description": "present (true) when the question's room closed during the wait"}
}
TIME: Schema = {"type": "string", "format": "date-time", "description": "ISO 8601 UTC, e.g. 2026-01-31T12:00:00Z"}
ANY_OBJECT: Schema = {"type": "object", "additionalProperties": {}}


def components() -> dict[str, Schema]:
    """Component schemas of the answers (``result`` of the envelopes), keyed by name."""
    message = obj(
        {
            "id": INTEGER,
            "ts": TIME,
            "from_agent": STRING,
            "to_agent": nullable({**STRING, "description": "set for a direct message"}),
            "channel": STRING,
            "kind": {"type": "string", "enum": list(Message.Kind.values)},
            "body": STRING,
            "attachments": array({}),
            "reply_to": nullable(INTEGER),
            "thread_id": nullable(STRING),
            "metadata": ANY_OBJECT,
            "priority": {
                "type": "string",
                "enum": list(Message.Priority.values),
                "description": "present when not normal",
            },
            "expires_at": {**TIME, "description": "present when the message was posted with ttl_sec"},
            "expects_reply": {"type": "string", "description": "present when not none: anyone, or an agent id"},
            "reply_claimed_by": nullable({**STRING, "description": "present with expects_reply"}),
        },
        ("id", "ts", "from_agent", "to_agent", "channel", "kind", "body", "attachments", "reply_to", "thread_id"),
        "A message. Fields beyond Arc's appear only when set, so Arc-shaped messages stay Arc-shaped.",
    )
    delivery = obj(
        {
            "message_id": INTEGER,
            "agent_id": STRING,
            "state": {"type": "string", "enum": list(Delivery.State.values)},
            "attempts": INTEGER,
            "max_attempts": INTEGER,
            "created_at": TIME,
            "delivered_at": nullable(TIME),
            "leased_until": nullable(TIME),
            "acked_at": nullable(TIME),
            "expires_at": nullable(TIME),
            "last_error": nullable(STRING),
            "message": {**ref("Message"), "description": "in listings: the message itself"},
        },
        ("message_id", "agent_id", "state", "attempts", "max_attempts"),
        "One direct message's way to one recipient (at-least-once delivery).",
    )
    thread = obj(
        {
            "thread_id": STRING,
            "channel": nullable(STRING),
            "root_task_id": nullable(INTEGER),
            "latest_message_id": nullable(INTEGER),
            "latest_message_ts": nullable(TIME),
            "latest_artifact_id": nullable(INTEGER),
            "message_count": INTEGER,
            "total_task_count": INTEGER,
            "open_task_count": INTEGER,
            "active_claim_count": INTEGER,
            "active_lock_count": INTEGER,
            "status": {"type": "string", "enum": ["completed", "open", "waiting"]},
        },
        ("thread_id", "status"),
    )
    return {
        "Message": message,
        "Session": obj(
            {
                "session_id": STRING,
                "agent_id": STRING,
                "display_name": STRING,
                "capabilities": array(STRING),
                "metadata": ANY_OBJECT,
                "created_at": TIME,
                "last_seen": TIME,
                "active": BOOLEAN,
            },
            ("session_id", "agent_id", "capabilities", "active"),
            "An agent's presence (Arc's session).",
        ),
        "Room": obj(
            {
                "name": STRING,
                "created_at": TIME,
                "created_by": nullable(STRING),
                "metadata": ANY_OBJECT,
                "closed": BOOLEAN,
                "closed_at": nullable(TIME),
                "closed_by": nullable(STRING),
            },
            ("name",),
            "A room (an Arc channel on the wire).",
        ),
        "Claim": obj(
            {
                "claim_key": STRING,
                "thread_id": nullable(STRING),
                "task_message_id": nullable(INTEGER),
                "owner_agent_id": STRING,
                "claimed_at": TIME,
                "expires_at": TIME,
                "released_at": nullable(TIME),
                "metadata": ANY_OBJECT,
            },
            ("claim_key", "owner_agent_id", "expires_at"),
        ),
        "Lock": obj(
            {
                "file_path": STRING,
                "agent_id": STRING,
                "locked_at": TIME,
                "expires_at": TIME,
                "released_at": nullable(TIME),
                "metadata": ANY_OBJECT,
            },
            ("file_path", "agent_id", "expires_at"),
        ),
        "Task": obj(
            {
                "task_id": {**INTEGER, "description": "the id of the message that made the task"},
                "parent_task_id": nullable(INTEGER),
                "channel": STRING,
                "thread_id": nullable(STRING),
                "status": {"type": "string", "enum": list(Task.Status.values)},
                "created_at": TIME,
                "completed_at": nullable(TIME),
                "requester": STRING,
                "assignee": STRING,
                "started_at": TIME,
                "deadline": TIME,
                "failure_reason": STRING,
            },
            ("task_id", "status"),
        ),
        "Delivery": delivery,
        "LeasedMessage": {
            "allOf": [
                ref("Message"),
                obj({"delivery": ref("Delivery")}, ("delivery",)),
            ],
            "description": "A leased direct message with its delivery record; ack it before leased_until.",
        },
        "ThreadSummary": thread,
        "ThreadDetail": obj(
            {
                "thread": ref("ThreadSummary"),
                "messages": array(ref("Message")),
                "tasks": array(ref("Task")),
                "claims": array(ref("Claim")),
                "locks": array(ref("Lock")),
            },
            ("thread", "messages", "tasks", "claims", "locks"),
        ),
        "Gathered": obj(
            {
                "question": ref("Message"),
                "question_ids": array(INTEGER),
                "asked": {**array(STRING), "description": "the rooms or agents the question went to"},
                "replies": array(ref("Message")),
                "complete": {**BOOLEAN, "description": "true when the number of replies asked for arrived in time"},
            },
            ("question", "replies", "complete"),
            "A question and the replies to it gathered so far.",
        ),
        "HubInfo": obj(
            {
                "storage_path": STRING,
                "instance_id": STRING,
                "journal_mode": STRING,
                "wal_mode": BOOLEAN,
                "database": STRING,
                "default_channel": STRING,
                "max_body_chars": INTEGER,
                "max_attachment_chars": INTEGER,
                "max_attachments": INTEGER,
                "max_query_limit": INTEGER,
                "presence_ttl_sec": INTEGER,
                "allow_remote": BOOLEAN,
            },
            ("instance_id", "default_channel"),
        ),
        "Stats": obj(
            {
                "messages": INTEGER,
                "agents": obj({"live": INTEGER, "idle": INTEGER}, ("live", "idle")),
                "deliveries": counts("deliveries by state"),
                "tasks": counts("tasks by status"),
                "claims_active": INTEGER,
                "locks_active": INTEGER,
                "rooms": INTEGER,
            },
            ("messages", "agents", "deliveries", "tasks", "claims_active", "locks_active", "rooms"),
        ),
        "MessageStatus": obj(
            {
                "message_id": INTEGER,
                "to_agent": nullable(STRING),
                "channel": STRING,
                "recipients": array(
                    obj(
                        {
                            "agent_id": STRING,
                            "state": {"type": "string", "enum": list(Delivery.State.values)},
                        },
                        ("agent_id", "state"),
                        "a direct message's recipient also shows its delivery record's fields",
                    )
                ),
            },
            ("message_id", "recipients"),
        ),
        "Bootstrap": obj(
            {
                "agent_id": STRING,
                "session": nullable(ref("Session")),
                "latest_visible_id": {**INTEGER, "description": "start reading after this id (since_id)"},
                "live_agents": array(ref("Session")),
                "default_channel": STRING,
            },
            ("agent_id", "latest_visible_id", "live_agents"),
        ),
        "Manifest": obj(
            {
                "hub": ANY_OBJECT,
                "links": ANY_OBJECT,
                "auth": ANY_OBJECT,
                "messages": ANY_OBJECT,
                "etiquette": array(STRING),
                "limits": ANY_OBJECT,
                "websocket": ANY_OBJECT,
                "endpoints": array(ANY_OBJECT),
                "first_five_calls": array(ANY_OBJECT),
            },
            ("hub", "links", "auth", "messages", "limits", "endpoints", "first_five_calls"),
            "What an agent needs to start from the hub's URL alone (see GET /v1/manifest).",
        ),
        "Error": obj(
            {"ok": {"type": "boolean", "enum": [False]}, "error": {**STRING, "description": "what to fix"}},
            ("ok", "error"),
        ),
    }


def envelope(result: Schema, top: Mapping[str, Schema]) -> Schema:
    """Arc's success envelope around ``result``; ``top`` adds Arc's top-level keys (``acquired``...)."""
    return obj({"ok": {"type": "boolean", "enum": [True]}, **top, "result": result}, ("ok", "result"))


ERRORS: dict[int, str] = {
    400: "Invalid input: malformed JSON, a wrong type, a missing field; the error says what to fix.",
    401: "A key is needed (ARC_AUTH=required, or a client on another machine), or the key is unknown, revoked or expired.",
    403: "Not allowed: remote access is off, a field names another agent than the key's, a room outside the key's scope, or an admin action without an admin key.",
    404: "Not found.",
    409: "Conflict with the current state (see the error).",
    413: "The request body is over the hub's cap (ARC_MAX_* settings).",
    429: "Posting too fast for this agent's rate limit; wait Retry-After seconds.",
}


# ── The entries ───────────────────────────────────────────────────────────


def q(name: str, kind: type, description: str, **extra: Any) -> OpenApiParameter:
    """A query parameter."""
    return OpenApiParameter(name, kind, OpenApiParameter.QUERY, description=description, **extra)


SINCE_ID = q("since_id", int, "Only messages with a larger id (default 0).")
LIMIT = q("limit", int, "At most this many (default 100, capped at ARC_MAX_QUERY_LIMIT).")
TIMEOUT = q("timeout", float, "Long-poll: wait up to this many seconds (0 to 60) for the first match.")
AGENT_ID = q("agent_id", str, "The reading agent (filled in from an agent key).", required=True)
CHANNEL = q("channel", str, "Only this room.")
THREAD_ID = q("thread_id", str, "Only this thread.")
EXCLUDE_SELF = q("exclude_self", bool, "Leave out the agent's own messages (1/true/yes).")


@dataclass(frozen=True)
class Doc:
    """One operation: a route (OpenAPI path) and method of the URLconf."""

    method: str
    path: str
    summary: str
    description: str
    tag: str
    result: Schema | None = None  # the envelope's ``result``; None: ``raw`` says what is sent
    status: int = 200
    others: Mapping[int, str] = field(default_factory=dict)  # more success codes (same body)
    top: Mapping[str, Schema] = field(default_factory=dict)  # envelope keys beside ``result``
    query: tuple[OpenApiParameter, ...] = ()
    body: type[input_shapes.ArcSerializer] | Literal["auto"] | None = AUTO
    errors: tuple[int, ...] = ()
    access: Access = "agent"
    raw: Mapping[str, Schema] = field(default_factory=dict)  # a body by media type, not an envelope

    @property
    def key(self) -> tuple[str, str]:
        return (self.path, self.method)

    def error_codes(self) -> list[int]:
        codes = set(self.errors)
        if self.path.startswith("/v1/"):
            codes |= {400, 401, 403}
        if self.method == "POST":
            codes.add(413)
        return sorted(codes)


RECEIPT: Mapping[str, Schema] = {
    "recipients": {**INTEGER, "description": "live agents that can see the message (not the sender)"},
    "delivery": {
        "type": "object",
        "additionalProperties": STRING,
        "description": "direct messages: recipient → delivery state",
    },
    "warning": {**STRING, "description": "present when no live agent can see the message"},
}
ACQUIRED = {"acquired": {**BOOLEAN, "description": "true: you hold it now; false: someone else does"}}


def _docs() -> list[Doc]:
    msg, msgs = ref("Message"), array(ref("Message"))
    return [
        # ── Hub ──
        Doc(
            "GET",
            "/",
            "Dashboard, or the manifest for JSON clients",
            "A browser gets the humans' dashboard. A client that asks for `application/json` (and prefers it "
            "to `text/html`) gets the agent manifest, as `GET /v1/manifest`, and needs no key for it, even "
            "under ARC_AUTH=required; clients on other machines only while remote access is on. Every answer "
            "has a `Link` header to `/v1/manifest`.",
            "hub",
            result=ref("Manifest"),
            access="open",
            raw={"text/html": STRING},
        ),
        Doc(
            "GET",
            "/v1/manifest",
            "Agent manifest",
            "Everything an agent needs to start from the hub's URL alone: endpoints, how to authenticate, "
            "message kinds and priorities, reply etiquette, limits, the WebSocket frames, and the first five "
            "calls to make. Also at `GET /` with `Accept: application/json` (that one needs no key even "
            "when ARC_AUTH=required).",
            "hub",
            result=ref("Manifest"),
        ),
        Doc(
            "GET",
            "/v1/schema",
            "This OpenAPI document",
            "The OpenAPI 3 description of every endpoint, as JSON (default) or YAML (`?format=yaml` or "
            "`Accept: application/yaml`). Not wrapped in an envelope, so OpenAPI tools read it as is. "
            "Browse it at `/docs`.",
            "hub",
            raw={"application/json": ANY_OBJECT, "application/yaml": STRING},
        ),
        Doc(
            "GET",
            "/v1/hub-info",
            "Storage, instance id and limits",
            "Where the hub keeps its data (the PostgreSQL URL without credentials), its stable instance id "
            "(also in every `X-Arc-Instance` header), and the limits in force.",
            "hub",
            result=ref("HubInfo"),
        ),
        Doc(
            "GET",
            "/v1/stats",
            "Counts",
            "Messages, agents live and idle, deliveries by state, tasks by status, active claims and locks, rooms.",
            "hub",
            result=ref("Stats"),
        ),
        Doc(
            "GET",
            "/metrics",
            "Prometheus metrics",
            "The counts of `/v1/stats` (and waiting readers in this process) in Prometheus text format. "
            "For loopback clients, or an admin key.",
            "hub",
            access="loopback-or-admin",
            raw={"text/plain": STRING},
            errors=(401, 403),
        ),
        Doc(
            "GET",
            "/v1/network",
            "Remote access",
            "Whether clients on other machines are accepted (they always need an agent key).",
            "hub",
            result=obj({"allow_remote": BOOLEAN}, ("allow_remote",)),
        ),
        Doc(
            "POST",
            "/v1/network",
            "Turn remote access on or off",
            "Admin only. Overrides ARC_ALLOW_REMOTE / --allow-remote from now on, for every worker.",
            "hub",
            result=obj({"allow_remote": BOOLEAN}, ("allow_remote",)),
            access="admin",
        ),
        Doc(
            "GET",
            "/v1/shutdown",
            "Pending shutdown",
            "The pending shutdown of the worker that answers (`remaining_sec`, `delay_sec`), or null.",
            "hub",
            result=nullable(obj({"remaining_sec": INTEGER, "delay_sec": INTEGER})),
        ),
        Doc(
            "POST",
            "/v1/shutdown",
            "Shut the hub down",
            "Admin only. Stops the worker that answers after `delay_sec` (default 60), announcing it in "
            "#general as Arc does. 400 if one is already pending.",
            "hub",
            result=obj({"status": STRING, "remaining_sec": INTEGER, "delay_sec": INTEGER}, ("status",)),
            access="admin",
        ),
        Doc(
            "POST",
            "/v1/shutdown/cancel",
            "Cancel a pending shutdown",
            "Admin only. 400 if none is pending.",
            "hub",
            result=obj({"status": STRING}, ("status",)),
            access="admin",
            body=None,
        ),
        # ── Agents ──
        Doc(
            "POST",
            "/v1/sessions",
            "Register (open a session)",
            "Announces an agent with its capabilities; it is live while it keeps talking to the hub "
            "(within ARC_PRESENCE_TTL_SEC). One active session per agent: `replace: true` takes over an "
            "older one (a restarted agent), otherwise that is 409.",
            "agents",
            result=ref("Session"),
            status=201,
            errors=(409,),
        ),
        Doc(
            "DELETE",
            "/v1/sessions/{session_id}",
            "Deregister (close a session)",
            "Ends the session: the agent is no longer live.",
            "agents",
            result=obj({"session_id": STRING, "deleted": BOOLEAN}, ("session_id", "deleted")),
            errors=(404,),
        ),
        Doc(
            "GET",
            "/v1/agents",
            "Live agents (and wait for peers)",
            "Agents with a live session, optionally those with a capability. With `wait_for=N` it waits "
            "(up to `timeout` s) until N are live and says `ready`, so a coordinator does not talk to an "
            "empty room.",
            "agents",
            result=array(ref("Session")),
            top={"ready": {**BOOLEAN, "description": "with wait_for: were that many agents live in time"}},
            query=(
                q("capability", str, "Only agents that declared this capability."),
                q("wait_for", int, "Wait until at least this many (matching) agents are live."),
                q("timeout", float, "With wait_for: wait up to this many seconds (0 to 60)."),
            ),
        ),
        Doc(
            "GET",
            "/v1/bootstrap",
            "Rehydrate after (re)connecting",
            "One call for a (re)starting agent: its session, the newest message id it can see (use it as "
            "`since_id`), the live agents and the default room.",
            "agents",
            result=ref("Bootstrap"),
            query=(AGENT_ID,),
        ),
        # ── Rooms ──
        Doc(
            "GET",
            "/v1/channels",
            "Rooms",
            "Every room the caller may see (a scoped key sees its rooms only), with whether it is closed.",
            "rooms",
            result=array(ref("Room")),
        ),
        Doc(
            "POST",
            "/v1/channels",
            "Create a room",
            "Creates the room (201), or answers the existing one (200).",
            "rooms",
            result=ref("Room"),
            status=201,
            others={200: "The room already existed."},
        ),
        Doc(
            "POST",
            "/v1/channels/{name}/close",
            "Close a room",
            "Admin only. Posts to the room get 409; long-polls on it answer `room_closed: true` and streams "
            "send `event: room`, so agents stop waiting. `changed` is false if it was already closed.",
            "rooms",
            result=ref("Room"),
            top={"changed": BOOLEAN},
            access="admin",
            errors=(404,),
            body=None,
        ),
        Doc(
            "POST",
            "/v1/channels/{name}/reopen",
            "Reopen a room",
            "Admin only. The room takes posts again.",
            "rooms",
            result=ref("Room"),
            top={"changed": BOOLEAN},
            access="admin",
            errors=(404,),
            body=None,
        ),
        # ── Messages ──
        Doc(
            "POST",
            "/v1/messages",
            "Post a message",
            "To a room (`channel`, default general) or to one agent (`to_agent`); a `task_request` may name "
            "`to_capability` instead, and the hub picks a live agent that declared it (409 if none). "
            "`kind: task` or `task_request` also makes a task; `task_result` replying to one completes it. "
            "The answer says who it reached: `recipients` (live agents that can see it), for a direct "
            "message its `delivery` state, and a `warning` when nobody live will see it. 409 if the room is "
            "closed; 429 past the agent's rate limit.",
            "messages",
            result=msg,
            status=201,
            body=input_shapes.MessagePost,
            errors=(404, 409, 429),
            top=RECEIPT,
        ),
        Doc(
            "GET",
            "/v1/messages",
            "Read a room or thread (long-poll)",
            "Broadcast messages of a room or thread after `since_id`, oldest first. With `timeout` it waits "
            "until the first one is committed (pushed, not polled). On a closed room it answers at once "
            "with `room_closed: true`.",
            "messages",
            result=msgs,
            errors=(404,),
            top={"room_closed": {**BOOLEAN, "description": "present (true) when the room is closed"}},
            query=(
                q("channel", str, "The room (channel or thread_id is required)."),
                q("thread_id", str, "The thread."),
                SINCE_ID,
                LIMIT,
                TIMEOUT,
            ),
        ),
        Doc(
            "GET",
            "/v1/events",
            "An agent's feed (long-poll)",
            "Broadcasts plus the agent's direct messages after `since_id`; with `timeout` it waits for the "
            "first. What it hands out counts as delivered (see /v1/messages/{id}/status).",
            "messages",
            result=msgs,
            errors=(404,),
            top={"room_closed": {**BOOLEAN, "description": "present (true) when `channel` is closed"}},
            query=(
                AGENT_ID,
                SINCE_ID,
                LIMIT,
                TIMEOUT,
                CHANNEL,
                THREAD_ID,
                EXCLUDE_SELF,
                q("resume", bool, "Also skip what any reader already handed this agent (its delivered cursor)."),
                q("peek", bool, "Watch only: what this answer holds is not recorded as delivered."),
            ),
        ),
        Doc(
            "GET",
            "/v1/stream",
            "An agent's feed as Server-Sent Events",
            "Each message as `id: <message id>` + `data: <message JSON>`; resumes after `Last-Event-ID` (or "
            "`since_id`) with no gap and no duplicate; a `: keep-alive` comment at least every 15 s. "
            "`types=message,claim,lock,task,presence,delivery` adds named events (`event: claim` ...); "
            "`event: room` tells of a followed room closing; `event: key` that the key was revoked or "
            "expired (the stream then ends). Errors before the stream starts are envelopes.",
            "messages",
            raw={"text/event-stream": STRING},
            errors=(404,),
            query=(
                AGENT_ID,
                SINCE_ID,
                q("channels", str, "Comma-separated rooms to follow (direct messages always come through)."),
                CHANNEL,
                THREAD_ID,
                EXCLUDE_SELF,
                q("types", str, "Comma-separated: message (default), claim, lock, task, presence, delivery, room."),
                OpenApiParameter(
                    "Last-Event-ID", str, OpenApiParameter.HEADER, description="Resume after this message id."
                ),
            ),
        ),
        Doc(
            "GET",
            "/v1/messages/{message_id}/status",
            "Delivery status of a message",
            "Per recipient: queued, delivered (handed to a poll, stream or socket), leased, acked, failed or expired.",
            "messages",
            result=ref("MessageStatus"),
            errors=(404,),
        ),
        Doc(
            "POST",
            "/v1/messages/{message_id}/reply-claim",
            "Claim the reply to a message",
            "For a message with `expects_reply`: atomic. For `anyone` exactly one agent wins "
            "(`acquired: true`, 201), every other gets `acquired: false` (200) and `reply_claimed_by` names "
            "the winner; for a named agent only that agent may claim (403). 409 if no reply is expected.",
            "messages",
            result=msg,
            status=201,
            others={200: "Someone else holds the reply (acquired: false)."},
            top=ACQUIRED,
            errors=(404, 409),
        ),
        Doc(
            "GET",
            "/v1/messages/{message_id}/replies",
            "Gather replies to a message",
            "The replies (`reply_to`) to a message; with `timeout` it waits until `max` have arrived.",
            "messages",
            result=ref("Gathered"),
            errors=(404,),
            top=ROOM_CLOSED_WAIT,
            query=(q("max", int, "Replies wanted (default 5, at most 100)."), TIMEOUT),
        ),
        Doc(
            "POST",
            "/v1/ask",
            "Ask many, gather replies",
            "Posts a question to a room (`channel`) or to the live agents with a capability "
            "(`to_capability`) and answers, within `timeout` seconds, with up to `max_replies` replies.",
            "messages",
            result=ref("Gathered"),
            status=201,
            errors=(404, 409, 429),
            top=ROOM_CLOSED_WAIT,
        ),
        Doc(
            "GET",
            "/v1/search",
            "Search message bodies",
            "Full-text search (SQLite FTS5, or PostgreSQL full-text search): messages whose body has every "
            "word of `q` (the last word also as a prefix), best match first, among the messages the caller "
            "may read.",
            "messages",
            result=msgs,
            query=(
                q("q", str, "The words to find.", required=True),
                CHANNEL,
                q("from_agent", str, "Only messages from this agent."),
                LIMIT,
            ),
        ),
        Doc(
            "GET",
            "/v1/threads",
            "Threads",
            "One summary per thread, newest activity first.",
            "messages",
            result=array(ref("ThreadSummary")),
        ),
        Doc(
            "GET",
            "/v1/threads/{thread_id}",
            "A thread",
            "A thread's summary with its messages, tasks, claims and locks.",
            "messages",
            result=ref("ThreadDetail"),
            errors=(404,),
        ),
        Doc(
            "GET",
            "/v1/inbox/{agent_id}",
            "An agent's direct messages",
            "Arc's inbox: direct messages to the agent after `since_id`, oldest first. To take them as work "
            "with acknowledgement, lease them instead.",
            "messages",
            result=msgs,
            query=(SINCE_ID, LIMIT),
        ),
        # ── Deliveries ──
        Doc(
            "POST",
            "/v1/inbox/{agent_id}/lease",
            "Lease direct messages",
            "At-least-once delivery: takes up to `max` queued direct messages (highest priority, then "
            "oldest) for `lease_sec` seconds. Ack each before its lease ends, or it is queued again "
            "(until `max_attempts`, then it is a dead letter). Two consumers never lease the same message.",
            "deliveries",
            result=array(ref("LeasedMessage")),
        ),
        Doc(
            "POST",
            "/v1/deliveries/ack",
            "Acknowledge deliveries",
            "Marks the agent's deliveries of these messages `acked`.",
            "deliveries",
            result=obj({"agent_id": STRING, "acked": INTEGER}, ("acked",)),
        ),
        Doc(
            "POST",
            "/v1/deliveries/nack",
            "Give a delivery back",
            "Queues the delivery again after `delay_sec`, or marks it `failed` past its `max_attempts`.",
            "deliveries",
            result=ref("Delivery"),
            errors=(404, 409),
        ),
        Doc(
            "GET",
            "/v1/deliveries",
            "Delivery records",
            "An agent's deliveries, newest message first, each with its message; `state=failed` lists the "
            "dead letters. Admins may leave out `agent_id` to see everyone's.",
            "deliveries",
            result=array(ref("Delivery")),
            query=(
                q("agent_id", str, "Whose deliveries (filled in from an agent key)."),
                q("state", str, "Only this state.", enum=list(Delivery.State.values)),
                LIMIT,
            ),
        ),
        Doc(
            "POST",
            "/v1/deliveries/retry",
            "Retry dead letters",
            "Admin only. Puts failed deliveries of these messages back in their queues.",
            "deliveries",
            result=obj({"retried": INTEGER}, ("retried",)),
            access="admin",
        ),
        # ── Work ──
        Doc(
            "GET",
            "/v1/claims",
            "Claims",
            "Claims, oldest first.",
            "work",
            result=array(ref("Claim")),
            query=(THREAD_ID, q("active_only", bool, "Only claims held and not expired.")),
        ),
        Doc(
            "POST",
            "/v1/claims",
            "Claim work",
            "Atomic: exactly one agent holds a `claim_key` (or the claim of task `task_message_id`) until "
            "it releases it or `ttl_sec` runs out; the holder calling again refreshes it. 201 and "
            "`acquired: true` for the winner; 200 and `acquired: false` with the holder for everyone else. "
            "Claiming a task starts it.",
            "work",
            result=ref("Claim"),
            status=201,
            others={200: "Held by someone else, or refreshed."},
            top=ACQUIRED,
            errors=(404, 409),
        ),
        Doc(
            "POST",
            "/v1/claims/refresh",
            "Extend a claim",
            "The holder extends its claim by `ttl_sec`. 409 if it is not the holder or the claim ended.",
            "work",
            result=ref("Claim"),
            top=ACQUIRED,
            errors=(404, 409),
        ),
        Doc(
            "POST",
            "/v1/claims/release",
            "Release a claim",
            "The holder gives the claim up.",
            "work",
            result=ref("Claim"),
            errors=(404, 409),
        ),
        Doc(
            "GET",
            "/v1/locks",
            "File locks",
            "File locks, oldest first.",
            "work",
            result=array(ref("Lock")),
            query=(
                q("agent_id", str, "Only this agent's locks."),
                q("active_only", bool, "Only locks held and not expired."),
            ),
        ),
        Doc(
            "POST",
            "/v1/locks",
            "Lock a file",
            "Advisory and atomic: one agent holds a `file_path` until it releases it or `ttl_sec` runs out. "
            "201 and `acquired: true` for the winner; 200 and `acquired: false` with the holder otherwise.",
            "work",
            result=ref("Lock"),
            status=201,
            others={200: "Held by someone else, or refreshed."},
            top=ACQUIRED,
            errors=(409,),
        ),
        Doc(
            "POST",
            "/v1/locks/refresh",
            "Extend a file lock",
            "The holder extends its lock by `ttl_sec`.",
            "work",
            result=ref("Lock"),
            top=ACQUIRED,
            errors=(404, 409),
        ),
        Doc(
            "POST",
            "/v1/locks/release",
            "Release a file lock",
            "The holder gives the lock up.",
            "work",
            result=ref("Lock"),
            errors=(404, 409),
        ),
        Doc(
            "GET",
            "/v1/tasks",
            "Tasks",
            "Tasks (made by `task` and `task_request` messages), filtered.",
            "work",
            result=array(ref("Task")),
            query=(
                q("status", str, "Only this status.", enum=list(Task.Status.values)),
                q("assignee", str, "Only tasks assigned to this agent."),
                q("parent_id", int, "Only subtasks of this task."),
                CHANNEL,
                THREAD_ID,
            ),
        ),
        Doc(
            "POST",
            "/v1/tasks",
            "Delegate a task",
            "A `task_request` to `to_agent`, or to the live agent the hub picks for `to_capability` (fewest "
            "unfinished tasks, then least recently assigned; never the requester): exactly one of the two. "
            "`payload` goes to `metadata.payload`. 201 with the request message (its `id` is the task id, "
            "`to_agent` the assignee), its receipt and the `task`; 409 when no live agent has the capability.",
            "work",
            result=ref("Message"),
            status=201,
            top={**RECEIPT, "task": ref("Task")},
            errors=(409,),
        ),
        Doc(
            "POST",
            "/v1/tasks/{task_id}/result",
            "Answer a task",
            "A `task_result` to the task's requester (a direct message) that finishes the task: done, or "
            "failed with `success: false`. Only its requester, assignee or claimant may answer it (403).",
            "work",
            result=ref("Message"),
            status=201,
            body=input_shapes.TaskAnswer,
            top={**RECEIPT, "task": ref("Task")},
            errors=(404, 409),
        ),
        Doc(
            "POST",
            "/v1/tasks/{task_id}/start",
            "Start a task",
            "open → in_progress; the caller becomes the assignee if there was none. 409 otherwise.",
            "work",
            result=ref("Task"),
            errors=(404, 409),
            body=None,
        ),
        Doc(
            "POST",
            "/v1/tasks/{task_id}/complete",
            "Complete a task",
            "→ done. When it was the last open subtask, its parent completes too (`parent_completed: true`).",
            "work",
            result=ref("Task"),
            top={"parent_completed": BOOLEAN},
            errors=(404, 409),
            body=None,
        ),
        Doc(
            "POST",
            "/v1/tasks/{task_id}/fail",
            "Fail a task",
            "→ failed, with a `reason`; the requester is told.",
            "work",
            result=ref("Task"),
            errors=(404, 409),
        ),
        # ── Hooks ──
        Doc(
            "POST",
            "/v1/hooks/{client}",
            "Answer a coding agent client's hook",
            "`client` is `claude-code` or `codex`. The body is the hook's input JSON as the client sends it "
            "(an HTTP hook's POST body); the answer is the hook's output JSON, not an envelope, `{}` when the "
            "hub has nothing to add: at `SessionStart` who the agent is, its rooms, peers, holdings and news; "
            "at `UserPromptSubmit` what arrived since its last turn (fenced, newest last, capped); at `Stop` a "
            "block when something new waits for its reply (once per message, a few times in a row at most); at "
            "`PreToolUse` of an edit tool a warning (or with `strict`, a refusal) when another agent holds a "
            "lock on the file. What it shows counts as delivered. Errors are envelopes (docs/agents.md).",
            "hooks",
            query=(
                q("agent_id", str, "The agent this client session is (filled in from an agent key)."),
                q("strict", bool, "Refuse an edit of a file another agent locked, instead of warning (1/true/yes)."),
            ),
            body=input_shapes.HookEvent,
            raw={"application/json": ANY_OBJECT},
        ),
    ]


@functools.cache
def docs() -> dict[tuple[str, str], Doc]:
    """Every entry by (OpenAPI path, method)."""
    return {doc.key: doc for doc in _docs()}


# ── Request bodies, from the views' own serializers ───────────────────────


def serializer_in(view_function: Callable[..., Any]) -> type[input_shapes.ArcSerializer] | None:
    """The input serializer a view function parses its body with, if it names exactly one.

    Read from the function's code and the code of the operations it calls
    (``ops.message_post`` parses with ``shapes.MessagePost``), so a view and its
    description cannot name different serializers.
    """
    code: CodeType = inspect.unwrap(view_function).__code__
    names: set[str] = set()
    seen: set[CodeType] = set()
    pending = [code]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        names.update(current.co_names)
        pending.extend(const for const in current.co_consts if isinstance(const, CodeType))
        for name in current.co_names:
            operation = getattr(core_operations, name, None)
            if inspect.isfunction(operation) and operation.__module__ == core_operations.__name__:
                pending.append(inspect.unwrap(operation).__code__)
    found = [
        shape
        for name, shape in vars(input_shapes).items()
        if name in names
        and isinstance(shape, type)
        and issubclass(shape, input_shapes.ArcSerializer)
        and shape is not input_shapes.ArcSerializer
    ]
    return found[0] if len(found) == 1 else None


class ObjectField(OpenApiSerializerFieldExtension):
    """``serializers.Object``: a JSON object (DRF's JSONField would describe any value)."""

    target_class = "coordination.core.inputs.Object"

    def map_serializer_field(self, auto_schema: AutoSchema, direction: str) -> Schema:
        return dict(ANY_OBJECT)


# ── drf-spectacular, told about Arc's views ───────────────────────────────


class ArcAutoSchema(AutoSchema):
    """One operation, described by its ``Doc``."""

    def __init__(self, doc: Doc, view_function: Callable[..., Any] | None) -> None:
        super().__init__()
        self.doc = doc
        self.view_function = view_function

    def get_operation_id(self) -> str:
        return self.doc.method.lower() + re.sub(r"[^a-z0-9]+", "_", self.doc.path.lower()).rstrip("_")

    def get_summary(self) -> str:
        return self.doc.summary

    def get_description(self) -> str:  # type: ignore[override]
        notes = {
            "open": "Needs no key.",
            "agent": "Loopback clients need no key unless ARC_AUTH=required; others send their agent key.",
            "admin": "Needs an admin key (`manage.py invite --admin`) or a hub admin's sign-in (a superuser, or staff with `operate_hub`).",
            "loopback-or-admin": "Loopback clients, or an admin key.",
        }
        return f"{self.doc.description}\n\n{notes[self.doc.access]}"

    def get_tags(self) -> list[str]:
        return [self.doc.tag]

    def get_auth(self) -> list[Schema]:
        if self.doc.access == "open":
            return [{}]
        if self.doc.access == "admin":
            return [{SECURITY_SCHEME: []}]
        return [{SECURITY_SCHEME: []}, {}]

    def get_override_parameters(self) -> list[Any]:
        return list(self.doc.query)

    def map_parsers(self) -> list[str]:
        return ["application/json"]  # any content type is read as JSON, as Arc does

    def get_request_serializer(self) -> Any:
        if self.doc.body == AUTO:
            return serializer_in(self.view_function) if self.view_function else None
        return self.doc.body

    def get_response_serializers(self) -> Any:
        doc = self.doc
        responses: dict[Any, OpenApiResponse] = {}
        if doc.result is not None:
            body = envelope(doc.result, doc.top)
            responses[(doc.status, "application/json")] = OpenApiResponse(body, description="OK")
            for code, text in doc.others.items():
                responses[(code, "application/json")] = OpenApiResponse(body, description=text)
        for media_type, schema in doc.raw.items():
            responses[(doc.status, media_type)] = OpenApiResponse(schema, description="OK")
        return responses  # the errors are shared components (ArcSchemaGenerator.get_schema)


def _not_served(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a description-only view was called: stand-ins are never routed")


def _stand_in(callback: Callable[..., Any], methods: list[str]) -> Any:
    """An APIView with ``methods`` for a view drf-spectacular cannot read (async or plain Django)."""
    name = getattr(callback, "__name__", "view").title().replace("_", "") + "Description"
    cls: type[APIView] = type(name, (APIView,), {method.lower(): _not_served for method in methods})
    view = cls.as_view()
    view.arc_view_function = callback  # type: ignore[attr-defined]
    return view


class ArcEndpointEnumerator(EndpointEnumerator):
    """The routes to describe: DRF views under ``/v1/``, and every route with entries."""

    def _get_api_endpoints(self, patterns: Any, prefix: str) -> list[tuple[str, str, str, Any]]:
        endpoints: list[tuple[str, str, str, Any]] = []
        for pattern in patterns if patterns is not None else self.patterns or []:
            path_regex = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                endpoints.extend(self._get_api_endpoints(pattern.url_patterns, path_regex))
                continue
            assert isinstance(pattern, URLPattern)
            path = self.get_path_from_regex(path_regex)
            callback = pattern.callback
            described = [method for (route, method) in docs() if route == path]
            if is_api_view(callback):
                if not (path.startswith("/v1/") or described) or not self.should_include_endpoint(path, callback):
                    continue
                methods = self.get_allowed_methods(callback)
            elif described:
                methods, callback = described, _stand_in(callback, described)
            else:
                continue
            endpoints.extend((path, path_regex, method, callback) for method in methods)
        return endpoints


class ArcSchemaGenerator(SchemaGenerator):
    endpoint_inspector_cls = ArcEndpointEnumerator

    def _get_paths_and_endpoints(self) -> list[tuple[str, str, str, Any]]:
        views = []
        endpoints: list[Any] = list(self.endpoints or [])  # (path, path_regex, method, callback) here
        for path, path_regex, method, callback in endpoints:
            view = self.create_view(callback, method)
            doc = docs().get((path, method))
            if doc is not None:
                function = getattr(callback, "arc_view_function", None) or getattr(view, method.lower())
                self._set_schema_to_view(view, ArcAutoSchema(doc, function))
            views.append((path, path_regex, method, view))
        return views

    def get_schema(self, request: Any = None, public: bool = False) -> Schema:
        document: Schema = super().get_schema(request=request, public=public)
        document["info"] = {
            "title": "Arc hub API",
            "version": hub_version(),
            "description": DESCRIPTION,
        }
        parts = document.setdefault("components", {})
        schemas = parts.setdefault("schemas", {})
        _note_inputs(schemas)
        schemas.update(components())
        parts["responses"] = {
            f"Error{code}": {"description": text, "content": {"application/json": {"schema": ref("Error")}}}
            for code, text in ERRORS.items()
        }
        parts["responses"]["Error429"]["headers"] = {
            "Retry-After": {"schema": INTEGER, "description": "Seconds to wait before posting again."}
        }
        for path, method, operation in operations(document):
            doc = docs().get((path, method))
            for code in doc.error_codes() if doc else ():
                operation["responses"][str(code)] = {"$ref": f"#/components/responses/Error{code}"}
        parts["securitySchemes"] = {
            SECURITY_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "An agent key (`manage.py invite <agent>`), as `Authorization: Bearer <key>`.",
            }
        }
        document["tags"] = [{"name": name, "description": text} for name, text in TAGS.items()]
        return document


# What the input serializers' types cannot say: added to those fields wherever they appear.
FIELD_NOTES = {
    "from_agent": "The sender; filled in from an agent key (and must be the key's agent).",
    "agent_id": "The acting agent; filled in from an agent key (and must be the key's agent).",
    "owner_agent_id": "The claiming agent; filled in from an agent key (and must be the key's agent).",
    "created_by": "Who creates it; filled in from an agent key.",
    "channel": "A room (default general; direct messages default to direct).",
    "kind": "One of " + ", ".join(Message.Kind.values) + " (default chat).",
    "priority": "One of " + ", ".join(Message.Priority.values) + " (default normal): the lease order.",
    "expects_reply": "none (default), anyone (one agent wins the reply-claim) or an agent id.",
    "to_capability": "A capability instead of an agent: the hub addresses live agents that declared it "
    "(a task_request goes to one of them, instead of to_agent).",
    "max_attempts": "Direct messages: deliveries given back or expired this many times become dead letters (default 5).",
    "ttl_sec": "Seconds until it expires.",
    "thread_id": "Groups messages, tasks and claims of one piece of work.",
    "reply_to": "The id of the message this answers.",
    "parent_task_id": "Makes this task a subtask of that one (its parent completes with its last subtask).",
}


def _note_inputs(schemas: dict[str, Schema]) -> None:
    """Describe the request bodies by their serializers' own docstrings and ``FIELD_NOTES``."""
    for name, shape in vars(input_shapes).items():
        if name not in schemas or not (isinstance(shape, type) and issubclass(shape, input_shapes.ArcSerializer)):
            continue
        own = shape.__dict__.get("__doc__")
        if own:
            schemas[name]["description"] = inspect.cleandoc(own)
        else:
            schemas[name].pop("description", None)  # not the base class's docstring
        for field_name, prop in schemas[name].get("properties", {}).items():
            if field_name in FIELD_NOTES and "description" not in prop:
                prop["description"] = FIELD_NOTES[field_name]


TAGS = {
    "hub": "The hub itself: manifest, schema, limits, counts, network, shutdown.",
    "agents": "Presence: register, find live agents, wait for peers.",
    "rooms": "Rooms (Arc channels) and their lifecycle.",
    "messages": "Posting, reading, long-polls, the SSE stream, replies, threads, search.",
    "deliveries": "At-least-once direct delivery: lease, ack, nack, dead letters.",
    "work": "Claims, file locks and tasks.",
    "hooks": "Turn-boundary hooks of coding agents' clients (Claude Code, Codex): docs/agents.md.",
}

DESCRIPTION = """\
A local-first coordination hub for AI agents, compatible with the Arc v1 protocol.

Every JSON answer is an envelope: `{"ok": true, "result": ...}` or `{"ok": false, "error": "what to fix"}`
(Arc adds some keys beside `result`, such as `acquired`). Every answer carries `X-Arc-Instance`, the hub's
instance id (the same from every worker on one database).

**Keys.** Loopback clients need none by default (ARC_AUTH=loopback-open: they act as any agent, as in Arc);
with ARC_AUTH=required, and from other machines, send `Authorization: Bearer <agent key>`. A keyed request
acts as the key's agent: agent fields (`from_agent`, `agent_id`, `owner_agent_id`, `{agent_id}`) must be it
or absent. Start from `GET /v1/manifest` (or `GET /` with `Accept: application/json`).

**WebSocket** at `/v1/ws` (not describable in OpenAPI): JSON frames `{"type", "id", ...}`; the frames are
listed in the manifest under `websocket`.
"""


@functools.cache
def _cached_document(urlconf: str) -> Schema:
    return ArcSchemaGenerator(urlconf=urlconf).get_schema(request=None, public=True)


def openapi_document() -> Schema:
    """The OpenAPI document of the running URLconf (built once per process)."""
    return _cached_document(settings.ROOT_URLCONF)


def operations(document: Schema) -> Iterator[tuple[str, str, Schema]]:
    """(path, METHOD, operation) of every operation in ``document``."""
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield path, method.upper(), operation


# ── The views ─────────────────────────────────────────────────────────────


class SchemaView(APIView):
    """``GET /v1/schema``: the OpenAPI document, JSON by default, YAML with ``?format=yaml``."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    metadata_class = None  # OPTIONS is a 405 envelope, as on every Arc endpoint
    renderer_classes = [OpenApiJsonRenderer2, OpenApiJsonRenderer, OpenApiYamlRenderer2, OpenApiYamlRenderer]

    def get(self, request: Request) -> Response:
        return Response(openapi_document())


class DocsView(SpectacularSwaggerView):
    """``GET /docs``: Swagger UI over ``/v1/schema``, from the hub's own static files.

    It lives outside ``/v1`` so a browser opens it without a key; when the hub asks for
    one (ARC_AUTH=required, or from another machine) the page's Authorize button takes
    an agent key and loads the schema with it.
    """

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    metadata_class = None
    url_name = "api-schema"
    title = "Arc hub API"

    def _get_schema_auth_names(self) -> list[str]:
        return [SECURITY_SCHEME]
