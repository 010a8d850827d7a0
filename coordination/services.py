"""Every state change of the hub, one function each (``<entity>_<verb>``).

REST views, WebSocket consumers, MCP tools, the relay, the dashboard and the
management commands all call these; none of them writes models itself.

Races are decided here, by the database: a conditional ``UPDATE ... WHERE``
whose row count picks the winner, a unique constraint, or a row lock. That
holds on SQLite (one writer at a time, ``BEGIN IMMEDIATE``) and on PostgreSQL
(``READ COMMITTED``, where a blocked ``UPDATE`` re-checks its ``WHERE``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Max, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from coordination import events, selectors
from coordination.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from coordination.models import (
    AgentKey,
    Claim,
    Delivery,
    FeedCursor,
    HubState,
    Lock,
    LoginLink,
    Message,
    Room,
    Session,
    Task,
    iso,
)

log = logging.getLogger("arc.services")

DEFAULT_ROOMS = ("general", "direct")
SYSTEM_AGENT = "system"
INLINE_ATTACHMENTS = {"text", "json", "code"}
REFERENCE_ATTACHMENTS = {"file_ref", "diff_ref"}
EXPECTS_REPLY_KEYWORDS = {"none", "anyone"}
MIN_TTL_SEC = 5

# PostgreSQL hands out sequence values at INSERT but makes rows visible at COMMIT,
# so two concurrent posts can become visible out of id order and a `since_id`
# poller would skip the earlier one. One transaction-scoped advisory lock around
# the insert makes commit order equal id order. (SQLite has one writer anyway.)
_MESSAGE_ORDER_LOCK = "message-order"


# ── Sessions and presence ─────────────────────────────────────────────────


def session_create(
    *,
    agent_id: str,
    display_name: str | None = None,
    capabilities: Iterable[str] = (),
    metadata: dict[str, Any] | None = None,
    replace: bool = False,
) -> Session:
    """Open the agent's one active session.

    An active, fresh session makes this a ``Conflict`` unless ``replace``; a stale
    one (older than the presence TTL) is replaced either way, as in Arc.
    """
    agent_id = _required(agent_id, "agent_id")
    ttl = timedelta(seconds=settings.ARC_PRESENCE_TTL_SEC)
    now = timezone.now()
    with transaction.atomic():
        # One registration per agent at a time: SQLite's single writer already does this;
        # on PostgreSQL an advisory lock keyed by the agent id does (there may be no row to lock).
        _serialize_on(f"session:{agent_id}")
        current = Session.objects.filter(agent_id=agent_id, active=True).first()
        if current is not None:
            if current.last_seen >= now - ttl and not replace:
                raise Conflict("agent_id already has an active session")
            Session.objects.filter(pk=current.pk, active=True).update(active=False)
        try:
            with transaction.atomic():
                session = Session.objects.create(
                    session_id=str(uuid.uuid4()),
                    agent_id=agent_id,
                    display_name=display_name or agent_id,
                    capabilities=list(capabilities),
                    metadata=dict(metadata or {}),
                    created_at=now,
                    last_seen=now,
                    active=True,
                )
        except IntegrityError as exc:  # the partial unique index is the last word
            raise Conflict("agent_id already has an active session") from exc
        events.publish("presence", {"agent_id": agent_id, "state": "live", "session": session.as_wire()})
        transaction.on_commit(selectors.live_agents_changed)
        _touched.pop(agent_id, None)  # a new session: the next activity refreshes it
        return session


def session_close(*, session_id: str, actor: str | None = None) -> Session:
    """Close a session; an ``actor`` (a key's agent) may close only its own (``Forbidden`` otherwise)."""
    with transaction.atomic():
        sessions = Session.objects.filter(pk=session_id, active=True)
        if actor is not None:
            owner = sessions.values_list("agent_id", flat=True).first()
            if owner is not None and owner != actor:
                raise Forbidden(f"session {session_id} belongs to {owner}; a key may close only {actor}'s sessions")
            sessions = sessions.filter(agent_id=actor)
        if not sessions.update(active=False):
            raise NotFound("session not found")
        session = Session.objects.get(pk=session_id)
        events.publish("presence", {"agent_id": session.agent_id, "state": "gone", "session": session.as_wire()})
        transaction.on_commit(selectors.live_agents_changed)
        return session


_TOUCH_EVERY_SEC = 1.0
_touched: dict[str, float] = {}  # agent id → when this process last refreshed its presence


def session_touch(*, agent_id: str) -> None:
    """Refresh the agent's presence (``last_seen``), at most once a second per agent and process."""
    now = time.monotonic()
    if now - _touched.get(agent_id, -_TOUCH_EVERY_SEC) < _TOUCH_EVERY_SEC:
        return
    if len(_touched) > 10_000:
        _touched.clear()
    _touched[agent_id] = now
    Session.objects.filter(agent_id=agent_id, active=True).update(last_seen=timezone.now())


def sessions_prune_expired() -> list[Session]:
    """Deactivate sessions past the presence TTL and release their work.

    For each session this call deactivates (a conditional update, so two workers
    never both recover the same agent), the agent's active claims and locks are
    released and a recovery ``notice`` is posted for each, as Arc does.
    """
    ttl = settings.ARC_PRESENCE_TTL_SEC
    expired: list[Session] = []
    for candidate in list(Session.objects.stale(ttl)):
        with transaction.atomic():
            cutoff = timezone.now() - timedelta(seconds=ttl)
            won = Session.objects.filter(pk=candidate.pk, active=True, last_seen__lt=cutoff).update(active=False)
            if not won:
                continue
            candidate.active = False
            expired.append(candidate)
            events.publish(
                "presence", {"agent_id": candidate.agent_id, "state": "expired", "session": candidate.as_wire()}
            )
            _recover_work_of(candidate.agent_id)
        log.info("session expired: agent=%s session=%s", candidate.agent_id, candidate.session_id)
    return expired


def sessions_roster(*, capability: str | None = None) -> list[dict[str, Any]]:
    """The live agents (``capability`` filters), as the wire shows them, after expiring stale sessions."""
    sessions_prune_expired()
    return [session.as_wire() for session in selectors.agents_live(capability=capability)]


def _recover_work_of(agent_id: str) -> None:
    now = timezone.now()
    for claim in Claim.objects.active(now).filter(owner_agent_id=agent_id):
        if Claim.objects.filter(pk=claim.pk, owner_agent_id=agent_id, released_at__isnull=True).update(released_at=now):
            claim.released_at = now
            _lease_event(claim, "recovered", stale_agent_id=agent_id)
            message_post(
                from_agent=SYSTEM_AGENT,
                channel=_thread_room(claim.thread_id),
                kind="notice",
                body=f"Recovered stale claim {claim.claim_key} from {agent_id}. Work is available for pickup.",
                reply_to=claim.task_message_id,
                thread_id=claim.thread_id,
                metadata={
                    "recovery": True,
                    "stale_agent_id": agent_id,
                    "claim_key": claim.claim_key,
                    "task_message_id": claim.task_message_id,
                },
                touch=False,
            )
    for lock in Lock.objects.active(now).filter(agent_id=agent_id):
        if Lock.objects.filter(pk=lock.pk, agent_id=agent_id, released_at__isnull=True).update(released_at=now):
            lock.released_at = now
            _lease_event(lock, "recovered", stale_agent_id=agent_id)
            thread_id = lock.metadata.get("thread_id") if isinstance(lock.metadata, dict) else None
            thread_id = None if thread_id is None else str(thread_id)
            fallback = lock.metadata.get("channel") if isinstance(lock.metadata, dict) else None
            message_post(
                from_agent=SYSTEM_AGENT,
                channel=_thread_room(thread_id, fallback=str(fallback) if fallback else "general"),
                kind="notice",
                body=f"Recovered stale lock on {lock.file_path} from {agent_id}. The file is available for pickup.",
                thread_id=thread_id,
                metadata={"recovery": True, "stale_agent_id": agent_id, "file_path": lock.file_path},
                touch=False,
            )


def _thread_room(thread_id: str | None, *, fallback: str = "general") -> str:
    """The room a thread lives in: its root task's, else its first message's (Arc's rule)."""
    if thread_id:
        root = Task.objects.filter(thread_id=thread_id, parent__isnull=True).order_by("task_id").first()
        if root is not None:
            return root.channel
        first = Message.objects.filter(thread_id=thread_id).order_by("id").only("channel").first()
        if first is not None:
            return first.channel
    if not Room.objects.filter(pk=fallback).exists():
        return "general"
    return fallback


# ── Rooms ─────────────────────────────────────────────────────────────────


def room_create(
    *, name: str, created_by: str | None = None, metadata: dict[str, Any] | None = None
) -> tuple[Room, bool]:
    """Create a room; an existing room is returned unchanged with ``created=False``."""
    name = _required(name, "name")
    if len(name) > 200:
        raise Invalid("name must be at most 200 characters")
    existing = Room.objects.filter(pk=name).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            return Room.objects.create(name=name, created_by=created_by, metadata=dict(metadata or {})), True
    except IntegrityError:
        return Room.objects.get(pk=name), False


# Rooms are never deleted, so a room seen once exists for good: every broadcast asks,
# and this process answers from memory after the first time.
_known_rooms: set[str] = set()


def _room_exists(name: str) -> bool:
    if name in _known_rooms:
        return True
    if Room.objects.filter(pk=name).exists():
        if len(_known_rooms) > 10_000:
            _known_rooms.clear()
        _known_rooms.add(name)
        return True
    return False


def rooms_ensure_defaults() -> None:
    for name in DEFAULT_ROOMS:
        Room.objects.get_or_create(name=name, defaults={"created_by": SYSTEM_AGENT})


# ``direct`` holds direct messages, which are not room posts and which a close does not stop:
# a closed ``direct`` would tell its readers to stop waiting for messages that still come.
UNCLOSABLE_ROOMS = frozenset({"direct"})


def room_close(*, name: str, actor: str) -> tuple[Room, bool]:
    """Close room ``name``: posts to it get ``Conflict`` (409) until it is reopened.

    Returns ``(room, changed)``; closing a closed room changes and announces nothing,
    and of concurrent closes exactly one announces: a notice in the room saying who
    closed it, then a ``room`` event that wakes the room's waiting readers. Direct
    messages are not room posts and keep working. ``direct`` cannot be closed.
    """
    if (name or "").strip() in UNCLOSABLE_ROOMS:
        raise Invalid(f"the {name} room cannot be closed: it carries direct messages, which a close does not stop")
    return _room_set_closed(name=name, actor=actor, closed=True)


def room_reopen(*, name: str, actor: str) -> tuple[Room, bool]:
    """Reopen room ``name``: posts are accepted again. ``(room, changed)``, as ``room_close``."""
    return _room_set_closed(name=name, actor=actor, closed=False)


def _room_set_closed(*, name: str, actor: str, closed: bool) -> tuple[Room, bool]:
    name, actor = _required(name, "name"), _required(actor, "actor")
    verb = "closed" if closed else "reopened"
    with transaction.atomic():
        # The row count picks the one caller that changes the state; only it announces.
        changed = Room.objects.filter(pk=name, closed_at__isnull=closed).update(
            closed_at=timezone.now() if closed else None, closed_by=actor if closed else None
        )
        room = Room.objects.filter(pk=name).first()
        if room is None:
            raise NotFound("channel not found")
        if changed:
            # Posted after the change, as a hub notice (which a closed room lets in), in the same
            # transaction: nobody sees the room closed without its notice, or the notice twice.
            # Posts check the room under the message-order lock this notice takes too, so every
            # post that found the room open comes before the notice and none after: a reader
            # that stops at the notice has missed nothing.
            message_post(
                from_agent=SYSTEM_AGENT,
                channel=name,
                kind=Message.Kind.NOTICE,
                body=f"{actor} closed this room: posts to it are refused until an admin reopens it."
                if closed
                else f"{actor} reopened this room: posts are accepted again.",
                metadata={"room_action": verb, "room": name, "by": actor},
                touch=False,
            )
            events.publish("room", {"action": verb, "channel": name, "by": actor, "room": room.as_wire()})
    return room, bool(changed)


def _room_check_open(name: str, *, from_agent: str, touch: bool) -> None:
    """Refuse a post into a closed room (``Conflict``); call it under the message-order lock.

    Read from the database on every post, never cached: another process may have
    closed the room a moment ago. The hub's own notices (as ``system`` with
    ``touch=False``, which no edge can send) still go in: housekeeping (recovered
    claims, task rollups, shutdown, the close notice itself) must not fail because
    a room was closed.
    """
    if from_agent == SYSTEM_AGENT and not touch:
        return
    state = Room.objects.filter(pk=name).values_list("closed_at", "closed_by").first()
    if state is not None and state[0] is not None:
        raise Conflict(
            f"channel {name} is closed (by {state[1] or 'an admin'}): posts to it are refused until an admin "
            f"reopens it (POST /v1/channels/{name}/reopen); direct messages still work"
        )


# ── Messages ──────────────────────────────────────────────────────────────


def message_post(
    *,
    from_agent: str,
    to_agent: str | None = None,
    channel: str | None = None,
    kind: str = "chat",
    body: str = "",
    attachments: list[Any] | None = None,
    reply_to: int | None = None,
    thread_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    parent_task_id: int | None = None,
    priority: str = Message.Priority.NORMAL,
    ttl_sec: int | None = None,
    expects_reply: str = "none",
    to_capability: str | None = None,
    max_attempts: int | None = None,
    touch: bool = True,
    queue: bool = True,
) -> Message:
    """Post a message and apply its side effects in one transaction.

    ``task``/``task_request`` messages register a task (optionally under
    ``parent_task_id``); a ``task_request`` may name ``to_capability`` instead of
    ``to_agent`` and the hub picks the assignee (``_pick_assignee``); a
    ``task_result`` replying to an unfinished task finishes it (``metadata.success:
    false`` fails it); the sender's presence is refreshed. A direct message gets a
    delivery record (``max_attempts`` for its work queue) unless ``queue`` is false.
    """
    from_agent = _required(from_agent, "from_agent")
    to_agent = (to_agent.strip() or None) if to_agent is not None else None
    if max_attempts is not None and not 1 <= max_attempts <= MAX_DELIVERY_ATTEMPTS:
        raise Invalid(f"max_attempts must be between 1 and {MAX_DELIVERY_ATTEMPTS}")
    if to_capability is not None:
        to_capability = _required(to_capability, "to_capability")
        if to_agent is not None:
            raise Invalid("give to_agent or to_capability, not both")
        if (kind or "").strip().lower() != Message.Kind.TASK_REQUEST:
            raise Invalid("to_capability is for task_request messages (delegation by capability)")
    room = (channel or ("direct" if to_agent or to_capability else "general")).strip()
    _fits(Message, from_agent=from_agent, to_agent=to_agent, channel=room, thread_id=thread_id)
    _fits(Message, expects_reply=expects_reply)
    if not room:
        raise Invalid("channel must be non-empty")
    kind = (kind or "chat").strip().lower()
    if kind not in Message.Kind.values:
        raise Invalid(f"unsupported kind: {kind} (one of {', '.join(Message.Kind.values)})")
    if priority not in Message.Priority.values:
        raise Invalid(f"priority must be one of {', '.join(Message.Priority.values)}")
    if len(body) > settings.ARC_MAX_BODY_CHARS:
        raise Invalid(f"body exceeds max size ({settings.ARC_MAX_BODY_CHARS} characters)")
    normalized = _attachments_normalize(attachments or [])
    if not body and not normalized:
        raise Invalid("body or attachments is required")
    if ttl_sec is not None and ttl_sec < 1:
        raise Invalid("ttl_sec must be at least 1")
    expects_reply = (expects_reply or "none").strip() or "none"
    meta = dict(metadata or {})

    with transaction.atomic():
        if to_capability is not None:
            to_agent = _pick_assignee(to_capability, exclude=from_agent)
            meta["to_capability"] = to_capability
        if to_agent is None and not _room_exists(room):
            raise Invalid(f"channel does not exist: {room}")
        parent = None
        if parent_task_id is not None:
            parent = Task.objects.filter(pk=parent_task_id).first()
            if parent is None:
                raise Invalid("parent_task_id references unknown task")
        finishes = _task_finished_by(kind, reply_to, meta, from_agent)
        if finishes is not None:
            meta["task_completed" if finishes[1] else "task_failed"] = finishes[0].task_id
        _serialize_on(_MESSAGE_ORDER_LOCK)
        if to_agent is None:
            _room_check_open(room, from_agent=from_agent, touch=touch)
        prev_id = selectors.message_newest_id()
        now = timezone.now()
        message = Message.objects.create(
            ts=now,
            from_agent=from_agent,
            to_agent=to_agent,
            channel=room,
            kind=kind,
            body=body,
            attachments=normalized,
            reply_to=reply_to,
            thread_id=thread_id,
            metadata=meta,
            priority=priority,
            expires_at=now + timedelta(seconds=ttl_sec) if ttl_sec is not None else None,
            expects_reply=expects_reply,
        )
        # Announced in id order, before anything this post causes (task rollup notices).
        events.publish_message(message.as_wire(), prev_id=prev_id)
        if to_agent is not None and queue:
            _delivery_create(message, max_attempts=max_attempts or DEFAULT_DELIVERY_ATTEMPTS)
        if kind in (Message.Kind.TASK, Message.Kind.TASK_REQUEST):
            task = Task.objects.create(
                task_id=message.id,
                parent=parent,
                channel=room,
                thread_id=thread_id,
                created_at=now,
                requester=from_agent,
                assignee=to_agent if kind == Message.Kind.TASK_REQUEST else None,
                deadline=message.expires_at,
            )
            events.publish("task", {"action": "created", "task": task.as_wire()})
        if finishes is not None:
            finished, success = finishes
            if success:
                task_complete(task_id=finished.task_id)
            else:
                task_fail(
                    task_id=finished.task_id, reason=str(meta.get("error") or message.body or "task_result failed")
                )
        if touch:
            session_touch(agent_id=from_agent)
    return message


PRIORITY_RANK = {"low": 0, "normal": 1, "high": 2, "critical": 3}
DEFAULT_DELIVERY_ATTEMPTS = 5
MAX_DELIVERY_ATTEMPTS = 100


def _delivery_create(message: Message, *, max_attempts: int) -> Delivery:
    assert message.to_agent is not None
    return Delivery.objects.create(
        message=message,
        agent_id=message.to_agent,
        priority=PRIORITY_RANK[message.priority],
        max_attempts=max_attempts,
        created_at=message.ts,
        available_at=message.ts,
        expires_at=message.expires_at,
    )


def deliveries_mark_delivered(*, agent_id: str, message_ids: Iterable[int] = (), through_id: int | None = None) -> int:
    """Record what a poll, stream or socket handed to ``agent_id``.

    ``message_ids``: direct messages handed out; they move from ``queued`` to
    ``delivered`` (a ``delivery`` event says so). ``through_id``: the agent's whole
    feed is handed out up to this id, which also covers its broadcasts (its feed
    cursor rises). Returns how many deliveries moved.
    """
    now = timezone.now()
    ids = set(message_ids)
    with transaction.atomic():
        pending = Delivery.objects.filter(agent_id=agent_id, state=Delivery.State.QUEUED)
        if through_id is not None:
            pending = pending.filter(Q(message_id__in=ids) | Q(message_id__lte=through_id))
        else:
            pending = pending.filter(message_id__in=ids)
        moved = list(pending.values_list("message_id", flat=True)) if (ids or through_id) else []
        if moved:
            Delivery.objects.filter(agent_id=agent_id, state=Delivery.State.QUEUED, message_id__in=moved).update(
                state=Delivery.State.DELIVERED, delivered_at=now
            )
            events.publish("delivery", {"agent_id": agent_id, "state": "delivered", "message_ids": sorted(moved)})
        if through_id is not None:
            _feed_cursor_raise(agent_id, through_id, now)
    return len(moved)


def _feed_cursor_raise(agent_id: str, through_id: int, now: datetime) -> None:
    if FeedCursor.objects.filter(agent_id=agent_id, delivered_id__lt=through_id).update(
        delivered_id=through_id, updated_at=now
    ):
        return
    if FeedCursor.objects.filter(agent_id=agent_id).exists():
        return
    try:
        with transaction.atomic():
            FeedCursor.objects.create(agent_id=agent_id, delivered_id=through_id, updated_at=now)
    except IntegrityError:
        FeedCursor.objects.filter(agent_id=agent_id, delivered_id__lt=through_id).update(
            delivered_id=through_id, updated_at=now
        )


def reply_claim(*, message_id: int, agent_id: str) -> tuple[Message, bool]:
    """Claim the right to answer a message that expects a reply. Returns ``(message, acquired)``.

    One conditional update decides it: for ``expects_reply: "anyone"`` exactly one agent
    wins and every other learns the winner (``reply_claimed_by``); for a named agent only
    that agent may claim (``Forbidden`` for others). Claiming again as the winner is a no-op
    that still answers ``acquired: true``. A message expecting no reply is a ``Conflict``.
    """
    agent_id = _required(agent_id, "agent_id")
    with transaction.atomic():
        message = Message.objects.filter(pk=message_id).first()
        if message is None:
            raise NotFound("message not found")
        if message.expects_reply == "none":
            raise Conflict(f"message {message_id} expects no reply (expects_reply is none)")
        if message.expects_reply not in ("anyone", agent_id):
            raise Forbidden(f"message {message_id} expects a reply from {message.expects_reply} only")
        won = Message.objects.filter(pk=message_id, reply_claimed_by__isnull=True).update(reply_claimed_by=agent_id)
        message.refresh_from_db(fields=["reply_claimed_by"])
        acquired = bool(won) or message.reply_claimed_by == agent_id
        if won:
            events.publish("reply_claim", {"message_id": message_id, "agent_id": agent_id, "channel": message.channel})
        return message, acquired


def _task_finished_by(
    kind: str, reply_to: int | None, metadata: dict[str, Any], poster: str
) -> tuple[Task, bool] | None:
    """The unfinished task a ``task_result`` finishes, and whether it succeeded.

    A request addressed to an agent is finished only by that agent (or its requester
    or claimant); an open request (no assignee) by whoever answers, as in Arc.
    """
    if kind != Message.Kind.TASK_RESULT or reply_to is None:
        return None
    task = Task.objects.filter(pk=reply_to, status__in=Task.UNFINISHED).first()
    if task is None or not Message.objects.filter(pk=reply_to, kind=Message.Kind.TASK_REQUEST).exists():
        return None
    if task.assignee is not None:
        try:
            _task_actor_check(task, poster, "finish")
        except Forbidden:
            return None
    return task, metadata.get("success") is not False


def _attachments_normalize(raw: list[Any]) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise Invalid("attachments must be a list")
    if len(raw) > settings.ARC_MAX_ATTACHMENTS:
        raise Invalid(f"too many attachments (at most {settings.ARC_MAX_ATTACHMENTS})")
    return [_attachment_normalize(item, index) for index, item in enumerate(raw)]


def _attachment_normalize(item: Any, index: int) -> dict[str, Any]:
    where = f"attachments[{index}]"
    if not isinstance(item, dict):
        raise Invalid(f"{where} must be a JSON object")
    kind = str(item.get("type", "")).strip()
    if kind not in INLINE_ATTACHMENTS | REFERENCE_ATTACHMENTS:
        raise Invalid(
            f"{where}: unsupported attachment type: {kind or '(missing)'} (one of code, diff_ref, file_ref, json, text)"
        )
    out: dict[str, Any] = {"type": kind}
    if kind in INLINE_ATTACHMENTS:
        if "content" not in item:
            raise Invalid(f"{where}: attachment type {kind} requires content")
        if len(json.dumps(item["content"])) > settings.ARC_MAX_ATTACHMENT_CHARS:
            raise Invalid(
                f"{where}: attachment type {kind} exceeds max size ({settings.ARC_MAX_ATTACHMENT_CHARS} characters)"
            )
        out["content"] = item["content"]
        if kind == "code" and item.get("language") is not None:
            out["language"] = str(item["language"])
    else:
        path = item.get("path")
        if not isinstance(path, str) or not path.strip():
            raise Invalid(f"{where}: attachment type {kind} requires path")
        out["path"] = path.strip()
        for key in ("description", "base", "head"):
            if item.get(key) is not None:
                out[key] = item[key]
        for key in ("start_line", "end_line"):
            if item.get(key) is not None:
                out[key] = _int(item[key], f"{where}.{key}")
    return out


# ── Claims and locks ──────────────────────────────────────────────────────


def claim_acquire(
    *,
    owner_agent_id: str,
    claim_key: str | None = None,
    task_message_id: int | None = None,
    thread_id: str | None = None,
    ttl_sec: int = 300,
    metadata: dict[str, Any] | None = None,
) -> tuple[Claim, bool]:
    """Acquire, refresh (same owner) or be denied a claim. Returns ``(claim, acquired)``."""
    owner_agent_id = _required(owner_agent_id, "owner_agent_id")
    if not claim_key:
        if task_message_id is None:
            raise Invalid("claim_key or task_message_id is required")
        claim_key = f"task-{task_message_id}"
    values = {"thread_id": thread_id or None, "task_message_id": task_message_id, "metadata": dict(metadata or {})}
    with transaction.atomic():
        claim, acquired = _lease_acquire(
            Claim, claim_key, "owner_agent_id", owner_agent_id, "claimed_at", ttl_sec, values
        )
        if acquired and task_message_id is not None:
            _task_begin(task_message_id, owner_agent_id)  # claiming a task starts it (SPEC 2)
    session_touch(agent_id=owner_agent_id)
    return claim, acquired


def claim_refresh(*, claim_key: str, owner_agent_id: str, ttl_sec: int = 300) -> Claim:
    claim = _lease_refresh(Claim, claim_key, "owner_agent_id", owner_agent_id, ttl_sec)
    if claim is None:
        raise NotFound("claim not found or not owned by owner_agent_id")
    session_touch(agent_id=owner_agent_id)
    return claim


def claim_release(*, claim_key: str, agent_id: str) -> Claim:
    claim = _lease_release(Claim, claim_key, "owner_agent_id", agent_id)
    if claim is None:
        raise NotFound("claim not found or not owned by agent_id")
    session_touch(agent_id=agent_id)
    return claim


def lock_acquire(
    *, agent_id: str, file_path: str, ttl_sec: int = 300, metadata: dict[str, Any] | None = None
) -> tuple[Lock, bool]:
    """Acquire, refresh (same holder) or be denied a file lock. Returns ``(lock, acquired)``."""
    agent_id = _required(agent_id, "agent_id")
    file_path = _required(file_path, "file_path")
    lock, acquired = _lease_acquire(
        Lock, file_path, "agent_id", agent_id, "locked_at", ttl_sec, {"metadata": dict(metadata or {})}
    )
    session_touch(agent_id=agent_id)
    return lock, acquired


def lock_refresh(*, file_path: str, agent_id: str, ttl_sec: int = 300) -> Lock:
    lock = _lease_refresh(Lock, file_path, "agent_id", agent_id, ttl_sec)
    if lock is None:
        raise NotFound("lock not found or not owned by agent_id")
    session_touch(agent_id=agent_id)
    return lock


def lock_release(*, file_path: str, agent_id: str) -> Lock:
    lock = _lease_release(Lock, file_path, "agent_id", agent_id)
    if lock is None:
        raise NotFound("lock not found or not owned by agent_id")
    session_touch(agent_id=agent_id)
    return lock


def claim_force_release(*, claim_key: str, actor: str) -> Claim:
    """An admin takes back a claim from whoever holds it (dashboard, Django admin).

    The holder is told (a direct ``notice``) and a ``released`` claim event says who
    forced it. ``NotFound`` when no such claim is held now.
    """
    return _lease_force_release(Claim, claim_key, "owner_agent_id", actor)


def lock_force_release(*, file_path: str, actor: str) -> Lock:
    """An admin takes back a file lock from its holder; as ``claim_force_release``."""
    return _lease_force_release(Lock, file_path, "agent_id", actor)


def _lease_force_release(model: type[Claim] | type[Lock], key: str, owner_field: str, actor: str) -> Any:
    now = timezone.now()
    with transaction.atomic():
        # Only a lease held now: a lapsed one is anyone's already, and the sweeper tells its holder.
        held = model.objects.filter(pk=key).active(now)
        lease = held.first()
        # Conditional on the holder read just now: a release or takeover in between wins.
        if lease is None or not held.filter(**{owner_field: getattr(lease, owner_field)}).update(released_at=now):
            raise NotFound(f"no {model.__name__.lower()} {key} is held")
        lease.refresh_from_db()
        noun, what = _lease_names(lease)
        _lease_event(lease, "released", forced_by=actor)
        _lease_notice(
            lease,
            getattr(lease, owner_field),
            f"Your {what} was released by {actor}; others may take it now.",
            {f"{noun}_released": key, "released_by": actor},
        )
        return lease


def _lease_names(lease: Claim | Lock) -> tuple[str, str]:
    """``("claim", "claim K")`` or ``("lock", "lock on PATH")``: how notices name a lease."""
    if isinstance(lease, Claim):
        return "claim", f"claim {lease.pk}"
    return "lock", f"lock on {lease.pk}"


def _lease_notice(lease: Claim | Lock, holder: str, body: str, metadata: dict[str, Any]) -> None:
    """Tell a lease's holder directly what became of it (a ``notice`` from the hub, in its thread)."""
    message_post(
        from_agent=SYSTEM_AGENT,
        to_agent=holder,
        kind=Message.Kind.NOTICE,
        body=body,
        thread_id=getattr(lease, "thread_id", None),
        metadata=metadata,
        touch=False,
    )


def _lease_acquire(
    model: type[Claim] | type[Lock],
    key: str,
    owner_field: str,
    owner: str,
    started_field: str,
    ttl_sec: int,
    values: dict[str, Any],
) -> tuple[Any, bool]:
    """The claim/lock state machine of Arc (acquire, same-owner refresh, deny, take over).

    Three conditional statements, each decided by the database: take over a released
    or expired row; else extend our own live row; else insert a new row, where the
    primary key lets exactly one concurrent inserter win. Anything else is a denial.
    """
    _ttl_check(ttl_sec)
    now = timezone.now()
    expires_at = now + timedelta(seconds=ttl_sec)
    with transaction.atomic():
        rows = model.objects.filter(pk=key)
        action: str | None = None
        _lease_tell_expired(model, key, owner_field, now, taker=owner)  # the holder hears first (SPEC 2)
        if rows.filter(Q(released_at__isnull=False) | Q(expires_at__lt=now)).update(
            **{owner_field: owner, started_field: now},
            expires_at=expires_at,
            released_at=None,
            expiry_noticed_at=None,
            **values,
        ):
            action = "acquired"  # took over a released or expired lease
        elif rows.filter(**{owner_field: owner}, released_at__isnull=True, expires_at__gte=now).update(
            expires_at=expires_at
        ):
            action = "refreshed"
        else:
            try:
                with transaction.atomic():
                    model.objects.create(
                        pk=key, **{owner_field: owner, started_field: now}, expires_at=expires_at, **values
                    )
                action = "acquired"
            except IntegrityError:
                action = None  # someone else holds it (or just won it)
        lease = model.objects.get(pk=key)
        if action is not None:
            _lease_event(lease, action)
        acquired = action is not None
        return lease, acquired


def _lease_refresh(model: type[Claim] | type[Lock], key: str, owner_field: str, owner: str, ttl_sec: int) -> Any:
    _ttl_check(ttl_sec)
    now = timezone.now()
    with transaction.atomic():
        updated = model.objects.filter(
            pk=key, **{owner_field: owner}, released_at__isnull=True, expires_at__gte=now
        ).update(expires_at=now + timedelta(seconds=ttl_sec))
        if not updated:
            return None
        lease = model.objects.get(pk=key)
        _lease_event(lease, "refreshed")
        return lease


def _lease_release(model: type[Claim] | type[Lock], key: str, owner_field: str, owner: str) -> Any:
    """Release a held lease. Releasing an already released lease returns it unchanged (Arc)."""
    with transaction.atomic():
        released = model.objects.filter(pk=key, **{owner_field: owner}, released_at__isnull=True).update(
            released_at=timezone.now()
        )
        lease = model.objects.filter(pk=key, **{owner_field: owner}).first()
        if released and lease is not None:
            _lease_event(lease, "released")
        return lease


def leases_tell_expired() -> int:
    """Tell each holder whose claim or lock ran out (a direct ``notice`` and an ``expired``
    event), once. Run by the sweeper; a taker tells the holder itself before taking over
    (``_lease_acquire``), so the holder always hears before anyone else wins it."""
    now = timezone.now()
    told = 0
    for model, owner_field in ((Claim, "owner_agent_id"), (Lock, "agent_id")):
        lapsed = model.objects.filter(released_at__isnull=True, expires_at__lt=now, expiry_noticed_at__isnull=True)
        for key in list(lapsed.values_list("pk", flat=True)):
            with transaction.atomic():
                told += _lease_tell_expired(model, key, owner_field, now)
    return told


def _lease_tell_expired(
    model: type[Claim] | type[Lock], key: str, owner_field: str, now: datetime, *, taker: str | None = None
) -> bool:
    """If the lease ``key`` ran out and its holder was not told yet, tell it (a conditional
    update marks it told, so concurrent sweepers and takers tell once). A holder taking
    back its own lapsed lease needs no notice."""
    lapsed = model.objects.filter(pk=key, released_at__isnull=True, expires_at__lt=now, expiry_noticed_at__isnull=True)
    lease = lapsed.first()
    if lease is None or getattr(lease, owner_field) == taker:
        return False
    if not lapsed.filter(**{owner_field: getattr(lease, owner_field)}).update(expiry_noticed_at=now):
        return False
    noun, what = _lease_names(lease)
    expired_at = lease.as_wire()["expires_at"]
    _lease_event(lease, "expired")
    _lease_notice(
        lease,
        getattr(lease, owner_field),
        f"Your {what} expired at {expired_at} and others may take it now; acquire it again if you still need it.",
        {f"{noun}_expired": key, "expired_at": expired_at},
    )
    return True


def _lease_event(lease: Claim | Lock, action: str, **extra: Any) -> None:
    """Publish a ``claim`` or ``lock`` event (after commit) for a lease's state change."""
    name = "claim" if isinstance(lease, Claim) else "lock"
    events.publish(name, {"action": action, name: lease.as_wire(), **extra})


def _ttl_check(ttl_sec: int) -> None:
    if ttl_sec < MIN_TTL_SEC:
        raise Invalid(f"ttl_sec must be at least {MIN_TTL_SEC}")


# ── Tasks ─────────────────────────────────────────────────────────────────


def task_complete(*, task_id: int, actor: str | None = None, admin: bool = False) -> tuple[Task, bool]:
    """Mark a task done and roll completion up its parents.

    Returns ``(task, parent_completed)``. Completing a done task is a no-op (Arc);
    a failed or timed-out task cannot be completed (``Conflict``). When the last
    unfinished sibling completes, the parent completes too and a ``notice`` says so
    in the parent's room and thread; that may in turn complete the grandparent.
    An ``actor`` (a key's agent) must be the task's requester, assignee or claimant.
    """
    with transaction.atomic():
        task = Task.objects.filter(pk=task_id).first()
        if task is None:
            raise NotFound("task not found")
        _task_actor_check(task, actor, "complete", admin=admin)
        if task.status == Task.Status.DONE:
            return task, False
        if task.status not in Task.UNFINISHED:
            raise Conflict(f"task {task_id} is {task.status}; only open or in_progress tasks can be completed")
        now = timezone.now()
        Task.objects.filter(pk=task_id, status__in=Task.UNFINISHED).update(status=Task.Status.DONE, completed_at=now)
        task.refresh_from_db()
        events.publish("task", {"action": "done", "task": task.as_wire()})
        parent_completed = _task_rollup(task)
        return task, parent_completed


def _task_rollup(task: Task) -> bool:
    if task.parent_id is None:
        return False
    # Lock the parent so two siblings finishing at once cannot both see the other
    # still open (PostgreSQL); SQLite's single writer serialises them already.
    parent = Task.objects.select_for_update().filter(pk=task.parent_id).first()
    if parent is None or parent.status not in Task.UNFINISHED:
        return False
    siblings = Task.objects.filter(parent_id=parent.task_id)
    if siblings.exclude(status=Task.Status.DONE).exists():
        return False
    Task.objects.filter(pk=parent.task_id).update(status=Task.Status.DONE, completed_at=timezone.now())
    parent.refresh_from_db()
    events.publish("task", {"action": "done", "task": parent.as_wire(), "rollup": True})
    message_post(
        from_agent=SYSTEM_AGENT,
        channel=parent.channel,
        kind="notice",
        body=f"All {siblings.count()} subtasks of task {parent.task_id} are complete.",
        reply_to=parent.task_id,
        thread_id=parent.thread_id,
        metadata={"auto_rollup": True, "parent_task_id": parent.task_id},
        touch=False,
    )
    _task_rollup(parent)
    return True


def _task_actor_check(task: Task, actor: str | None, verb: str, *, admin: bool = False) -> None:
    """Only the task's requester, assignee or claimant may ``verb`` it (an admin may act on any task)."""
    if admin or actor is None or actor in (task.requester, task.assignee):
        return
    claimed = (
        Claim.objects.active()
        .filter(owner_agent_id=actor)
        .filter(Q(task_message_id=task.task_id) | Q(claim_key=f"task-{task.task_id}"))
    )
    if not claimed.exists():
        raise Forbidden(f"only the task's requester, assignee or claimant may {verb} task {task.task_id}")


def task_start(*, task_id: int, actor: str | None = None, admin: bool = False) -> Task:
    """Move an open task to ``in_progress`` (its assignee becomes ``actor`` if it had none).

    Starting a task already in progress by the same agent is a no-op; any other start
    of a task that is not open is a ``Conflict`` (409).
    """
    with transaction.atomic():
        task = Task.objects.filter(pk=task_id).first()
        if task is None:
            raise NotFound("task not found")
        if task.assignee is not None:  # an unassigned task is anyone's to start
            _task_actor_check(task, actor, "start", admin=admin)
        if task.status == Task.Status.IN_PROGRESS and (actor is None or task.assignee in (None, actor)):
            return task
        if not _task_begin(task_id, actor):
            task.refresh_from_db()
            raise Conflict(f"task {task_id} is {task.status}; only an open task can be started")
        task.refresh_from_db()
        return task


def _task_begin(task_id: int, agent_id: str | None) -> bool:
    """open → in_progress, once (a conditional update); the agent becomes the assignee if there was none."""
    now = timezone.now()
    rows = Task.objects.filter(pk=task_id, status=Task.Status.OPEN)
    started = rows.filter(assignee__isnull=True).update(
        status=Task.Status.IN_PROGRESS, started_at=now, assignee=agent_id
    )
    started = started or rows.update(status=Task.Status.IN_PROGRESS, started_at=now)
    if started:
        task = Task.objects.get(pk=task_id)
        events.publish("task", {"action": "started", "task": task.as_wire()})
    return bool(started)


def tasks_time_out() -> list[Task]:
    """Tasks past their deadline and still unfinished become ``timeout``; each requester is told.

    Run by the hub's sweeper. A conditional update per task, so two sweeping workers
    never time out (or announce) the same task twice.
    """
    now = timezone.now()
    timed_out: list[Task] = []
    for task in Task.objects.filter(status__in=Task.UNFINISHED, deadline__lt=now):
        with transaction.atomic():
            if not Task.objects.filter(pk=task.pk, status__in=Task.UNFINISHED).update(
                status=Task.Status.TIMEOUT, completed_at=now
            ):
                continue
            task.refresh_from_db()
            events.publish("task", {"action": "timeout", "task": task.as_wire()})
            if task.requester and task.requester != SYSTEM_AGENT:
                message_post(
                    from_agent=SYSTEM_AGENT,
                    to_agent=task.requester,
                    kind="notice",
                    body=f"Task {task.task_id} timed out before it finished"
                    + (f" (assigned to {task.assignee})." if task.assignee else "."),
                    reply_to=task.task_id,
                    thread_id=task.thread_id,
                    metadata={"task_timeout": task.task_id, "assignee": task.assignee},
                    touch=False,
                )
            timed_out.append(task)
    return timed_out


def task_fail(*, task_id: int, reason: str, actor: str | None = None, admin: bool = False) -> Task:
    """Mark an unfinished task failed with ``reason`` (``Conflict`` if already finished)."""
    task = Task.objects.filter(pk=task_id).first()
    if task is not None:
        _task_actor_check(task, actor, "fail", admin=admin)
    with transaction.atomic():
        updated = Task.objects.filter(pk=task_id, status__in=Task.UNFINISHED).update(
            status=Task.Status.FAILED, completed_at=timezone.now(), failure_reason=reason
        )
        task = Task.objects.filter(pk=task_id).first()
        if task is None:
            raise NotFound("task not found")
        if not updated:
            raise Conflict(f"task {task_id} is {task.status}; only open or in_progress tasks can fail")
        events.publish("task", {"action": "failed", "task": task.as_wire()})
        return task


def task_delegate(
    *,
    from_agent: str,
    body: str,
    to_agent: str | None = None,
    to_capability: str | None = None,
    payload: Any = None,
    ttl_sec: int | None = None,
    channel: str | None = None,
    thread_id: str | None = None,
) -> Message:
    """Hand a task to an agent, named or picked by capability; returns the ``task_request`` message.

    By capability the hub picks a live agent that declared it (never the requester):
    fewest unfinished assigned tasks first, then the one assigned least recently.
    ``Conflict`` when no live agent has the capability. The request is a direct
    message to the assignee; its task records requester, assignee and deadline.
    """
    if (to_agent is None) == (to_capability is None):
        raise Invalid("give exactly one of to_agent or to_capability")
    metadata: dict[str, Any] = {}
    if payload is not None:
        metadata["payload"] = payload
    return message_post(
        from_agent=from_agent,
        to_agent=to_agent,
        to_capability=to_capability,
        channel=channel,
        kind=Message.Kind.TASK_REQUEST,
        body=body,
        metadata=metadata,
        thread_id=thread_id,
        ttl_sec=ttl_sec,
    )


def _live_with_capability(capability: str, *, exclude: str) -> list[str]:
    """Live agents (other than ``exclude``) that declared ``capability``; ``Conflict`` if none."""
    live = sorted(
        {
            s.agent_id
            for s in Session.objects.live(settings.ARC_PRESENCE_TTL_SEC).exclude(agent_id=exclude)
            if capability in (s.capabilities or [])
        }
    )
    if not live:
        raise Conflict(f"no live agent has the capability {capability!r}")
    return live


def _pick_assignee(capability: str, *, exclude: str) -> str:
    live = _live_with_capability(capability, exclude=exclude)
    load = {
        row["assignee"]: (row["open"], row["last"])
        for row in Task.objects.filter(assignee__in=live)
        .values("assignee")
        .annotate(open=Count("task_id", filter=Q(status__in=Task.UNFINISHED)), last=Max("created_at"))
    }
    never = timezone.now() - timedelta(days=36500)
    return min(live, key=lambda agent: (load.get(agent, (0, never))[0], load.get(agent, (0, never))[1] or never))


def task_result(*, from_agent: str, task_id: int, success: bool = True, body: str = "", payload: Any = None) -> Message:
    """Answer a task: a ``task_result`` to its requester (a direct message) that finishes the task."""
    task = Task.objects.filter(pk=task_id).first()
    if task is None:
        raise NotFound("task not found")
    metadata: dict[str, Any] = {"success": bool(success)}
    if payload is not None:
        metadata["payload"] = payload
    return message_post(
        from_agent=from_agent,
        to_agent=task.requester,
        channel=task.channel if task.requester is None else None,
        kind=Message.Kind.TASK_RESULT,
        body=body or ("done" if success else "failed"),
        reply_to=task.task_id,
        thread_id=task.thread_id,
        metadata=metadata,
    )


# ── Reliable direct delivery (a work queue per recipient) ──────────────────
#
# queued/delivered ──lease──▶ leased ──ack──▶ acked
#        ▲                      │
#        └──nack, lease expiry──┘──(attempts used up)──▶ failed (a dead letter)
# Past the message's ttl_sec any unfinished delivery becomes expired.
# ``delivered`` only says a poll, stream or socket showed the message; it stays
# pending for the work queue until acked. Each lease is one attempt.

PENDING_DELIVERY = (Delivery.State.QUEUED, Delivery.State.DELIVERED)
OPEN_DELIVERY = (Delivery.State.QUEUED, Delivery.State.DELIVERED, Delivery.State.LEASED)
MAX_LEASE_BATCH = 100
MAX_LEASE_SEC = 3600


def inbox_lease(*, agent_id: str, max_messages: int = 10, lease_sec: int = 60) -> list[Delivery]:
    """Lease up to ``max_messages`` of ``agent_id``'s pending direct messages for ``lease_sec``.

    Highest priority first, then oldest. Each lease counts as one attempt. Two
    consumers leasing at once never get the same message: on PostgreSQL the
    candidate rows are locked and others skip them (``SKIP LOCKED``); SQLite has one
    writer at a time. Expired leases and deliveries past their ``ttl_sec`` of this
    agent are settled first, so the order is always the current one.
    """
    agent_id = _required(agent_id, "agent_id")
    if not 1 <= max_messages <= MAX_LEASE_BATCH:
        raise Invalid(f"max must be between 1 and {MAX_LEASE_BATCH}")
    if not MIN_TTL_SEC <= lease_sec <= MAX_LEASE_SEC:
        raise Invalid(f"lease_sec must be between {MIN_TTL_SEC} and {MAX_LEASE_SEC}")
    deliveries_settle(agent_id=agent_id)
    now = timezone.now()
    with transaction.atomic():
        candidates = (
            Delivery.objects.filter(agent_id=agent_id, state__in=PENDING_DELIVERY, available_at__lte=now)
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
            .order_by("-priority", "message_id")
        )
        if connection.vendor == "postgresql":
            candidates = candidates.select_for_update(skip_locked=True)
        picked = list(candidates.values_list("pk", flat=True)[:max_messages])
        if not picked:
            return []
        Delivery.objects.filter(pk__in=picked, state__in=PENDING_DELIVERY).update(
            state=Delivery.State.LEASED,
            leased_until=now + timedelta(seconds=lease_sec),
            attempts=F("attempts") + 1,
            delivered_at=Coalesce("delivered_at", Value(now)),
        )
        leased = list(
            Delivery.objects.select_related("message").filter(pk__in=picked).order_by("-priority", "message_id")
        )
        events.publish(
            "delivery", {"agent_id": agent_id, "state": "leased", "message_ids": [d.message_id for d in leased]}
        )
    session_touch(agent_id=agent_id)
    return leased


def ask_post(
    *,
    from_agent: str,
    body: str,
    channel: str | None = None,
    to_capability: str | None = None,
    max_replies: int = 5,
    timeout_sec: float = 30.0,
    thread_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    expects_reply: str = "none",
) -> list[Message]:
    """Post a question for ``POST /v1/ask``; returns the question messages whose replies to gather.

    To a room (``channel``, default ``general``): one message there. To a capability: a
    direct message to each live agent that declared it (never the asker), ``Conflict``
    when there is none. Each carries ``metadata.ask`` (how many replies are wanted and
    until when), so answering agents know a reply is expected.
    """
    if channel is not None and to_capability is not None:
        raise Invalid("give channel or to_capability, not both")
    deadline = timezone.now() + timedelta(seconds=timeout_sec)
    meta = {**(metadata or {}), "ask": {"max_replies": max_replies, "until": iso(deadline)}}
    common: dict[str, Any] = {"from_agent": from_agent, "body": body, "thread_id": thread_id, "metadata": meta}
    with transaction.atomic():
        if to_capability is None:
            return [message_post(channel=channel or "general", expects_reply=expects_reply, **common)]
        to_capability = _required(to_capability, "to_capability")
        askees = _live_with_capability(to_capability, exclude=from_agent)
        meta["to_capability"] = to_capability
        return [message_post(to_agent=agent, expects_reply=agent, **common) for agent in askees]


def delivery_ack(*, agent_id: str, message_ids: Iterable[int]) -> int:
    """The recipient has handled these direct messages: their deliveries become ``acked``.

    Acking a delivery that is queued, delivered or leased (even past its lease, if
    nobody has taken it since) is accepted; acked, failed and expired ones are left
    as they are. Returns how many moved.
    """
    now = timezone.now()
    ids = sorted(set(message_ids))
    with transaction.atomic():
        moved = list(
            Delivery.objects.filter(agent_id=agent_id, message_id__in=ids, state__in=OPEN_DELIVERY).values_list(
                "message_id", flat=True
            )
        )
        acked = Delivery.objects.filter(agent_id=agent_id, message_id__in=moved, state__in=OPEN_DELIVERY).update(
            state=Delivery.State.ACKED, acked_at=now, leased_until=None
        )
        if acked:
            events.publish("delivery", {"agent_id": agent_id, "state": "acked", "message_ids": sorted(moved)})
    return acked


def delivery_nack(*, agent_id: str, message_id: int, reason: str = "", delay_sec: int = 0) -> Delivery:
    """The recipient could not handle a direct message now: queue it again after ``delay_sec``,
    or mark it ``failed`` (a dead letter) once it has used its ``max_attempts``.

    A leased delivery already counted its attempt when it was leased; nacking one
    that was never leased counts one now.
    """
    if not 0 <= delay_sec <= MAX_LEASE_SEC:
        raise Invalid(f"delay_sec must be between 0 and {MAX_LEASE_SEC}")
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().filter(agent_id=agent_id, message_id=message_id).first()
        if delivery is None:
            raise NotFound(f"no delivery of message {message_id} to {agent_id}")
        if delivery.state not in OPEN_DELIVERY:
            raise Conflict(f"the delivery is {delivery.state}; only queued, delivered or leased ones can be nacked")
        if delivery.state != Delivery.State.LEASED:
            delivery.attempts += 1
        delivery.last_error = reason or None
        delivery.leased_until = None
        if delivery.attempts >= delivery.max_attempts:
            delivery.state = Delivery.State.FAILED
        else:
            delivery.state = Delivery.State.QUEUED
            delivery.available_at = timezone.now() + timedelta(seconds=delay_sec)
        delivery.save(update_fields=["attempts", "last_error", "leased_until", "state", "available_at"])
        events.publish(
            "delivery",
            {"agent_id": agent_id, "state": delivery.state, "message_ids": [message_id], "reason": reason or None},
        )
    return delivery


def deliveries_retry(*, message_ids: Iterable[int], agent_id: str | None = None) -> int:
    """Put dead letters (``failed`` deliveries) back in their queues with fresh attempts (admin)."""
    ids = sorted(set(message_ids))
    if not ids:
        raise Invalid("message_ids must list at least one message id")
    with transaction.atomic():
        rows = Delivery.objects.filter(message_id__in=ids, state=Delivery.State.FAILED)
        if agent_id:
            rows = rows.filter(agent_id=agent_id)
        retried = list(rows.values_list("agent_id", "message_id"))
        Delivery.objects.filter(pk__in=rows.values("pk")).update(
            state=Delivery.State.QUEUED, attempts=0, available_at=timezone.now(), leased_until=None
        )
        by_agent: dict[str, list[int]] = {}
        for agent, message_id in retried:
            by_agent.setdefault(agent, []).append(message_id)
        for agent, moved in sorted(by_agent.items()):
            events.publish("delivery", {"agent_id": agent, "state": "queued", "message_ids": moved, "retried": True})
    return len(retried)


def deliveries_settle(*, agent_id: str | None = None) -> tuple[int, int]:
    """Settle what time has decided: expired leases go back to the queue (or to the dead
    letters once their attempts are used up), and the holder is told at once; deliveries
    past their message's ``ttl_sec`` become ``expired``. Returns ``(leases_ended, expired)``.

    Run by the sweeper for everyone and before each lease for that agent. Conditional
    updates, so sweeping processes never settle (or announce) one delivery twice.
    """
    now = timezone.now()
    scope = Delivery.objects.all() if agent_id is None else Delivery.objects.filter(agent_id=agent_id)
    expired_ids = list(
        scope.filter(state__in=OPEN_DELIVERY, expires_at__lte=now).values_list("pk", "agent_id", "message_id")
    )
    if expired_ids:
        with transaction.atomic():
            Delivery.objects.filter(pk__in=[pk for pk, _, _ in expired_ids], state__in=OPEN_DELIVERY).update(
                state=Delivery.State.EXPIRED, leased_until=None
            )
            by_agent: dict[str, list[int]] = {}
            for _, agent, message_id in expired_ids:
                by_agent.setdefault(agent, []).append(message_id)
            for agent, moved in sorted(by_agent.items()):
                events.publish("delivery", {"agent_id": agent, "state": "expired", "message_ids": moved})
    ended = 0
    for delivery in scope.filter(state=Delivery.State.LEASED, leased_until__lt=now):
        with transaction.atomic():
            spent = delivery.attempts >= delivery.max_attempts
            state = Delivery.State.FAILED if spent else Delivery.State.QUEUED
            if not Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.LEASED, leased_until__lt=now).update(
                state=state, leased_until=None, available_at=now, last_error="lease expired before an ack"
            ):
                continue
            ended += 1
            events.publish(
                "delivery", {"agent_id": delivery.agent_id, "state": state, "message_ids": [delivery.message_id]}
            )
            then = "it is a dead letter now" if spent else "it is queued again for the next lease"
            message_post(
                from_agent=SYSTEM_AGENT,
                to_agent=delivery.agent_id,
                kind=Message.Kind.NOTICE,
                body=f"Your lease on message {delivery.message_id} expired before an ack "
                f"(attempt {delivery.attempts} of {delivery.max_attempts}); {then}.",
                reply_to=delivery.message_id,
                metadata={"lease_expired": delivery.message_id, "state": state, "attempts": delivery.attempts},
                touch=False,
                queue=False,  # a notice about the queue is not itself queued work
            )
    return ended, len(expired_ids)


# ── Hub-wide state ────────────────────────────────────────────────────────


def hub_state() -> HubState:
    """The hub's one state row, created on first use."""
    state = HubState.objects.filter(pk=1).first()
    if state is not None:
        return state
    try:
        with transaction.atomic():
            return HubState.objects.create(pk=1, birth_marker=uuid.uuid4().hex, allow_remote=settings.ARC_ALLOW_REMOTE)
    except IntegrityError:
        return HubState.objects.get(pk=1)


def network_set(*, allow_remote: bool) -> HubState:
    hub_state()
    HubState.objects.filter(pk=1).update(allow_remote=allow_remote, allow_remote_set=True)
    return HubState.objects.get(pk=1)


def remote_allowed() -> bool:
    """Remote access: the network toggle once used, else ``ARC_ALLOW_REMOTE``."""
    state = hub_state()
    return state.allow_remote if state.allow_remote_set else bool(settings.ARC_ALLOW_REMOTE)


# ── Small shared checks ───────────────────────────────────────────────────


def _serialize_on(key: str) -> None:
    """Hold a PostgreSQL transaction-scoped advisory lock on ``key`` (no-op on SQLite's single writer)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [key])


def _fits(model: type[Any], **values: str | None) -> None:
    """Each text value fits its column (``field = value``): ``Invalid`` rather than a database error.

    The REST serializers check lengths too; this is the rule itself, for every entry point.
    """
    for name, value in values.items():
        limit = model._meta.get_field(name).max_length
        if value is not None and limit is not None and len(value) > limit:
            raise Invalid(f"{name} must be at most {limit} characters")


def _required(value: str | None, name: str) -> str:
    text = (value or "").strip() if isinstance(value, str) or value is None else str(value).strip()
    if not text:
        raise Invalid(f"{name} is required")
    return text


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise Invalid(f"{name} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise Invalid(f"{name} must be an integer") from exc


# ── Agent keys (SPEC section 3) ───────────────────────────────────────────

KEY_TOUCH_EVERY_SEC = 60  # last_used_at is kept to the minute, not written on every request


def key_mint(
    *,
    agent_id: str,
    rooms: Iterable[str] = (),
    expires: str = "never",
    admin: bool = False,
    label: str = "",
    created_by: str = "",
) -> tuple[AgentKey, str]:
    """Mint a key for ``agent_id``. Returns the row and the plaintext key, which is never stored
    (only its SHA-256) and so can be shown only this once."""
    agent_id, room_names, seconds = key_check(agent_id=agent_id, rooms=rooms, expires=expires)
    _fits(AgentKey, label=label, created_by=created_by)
    now = timezone.now()
    prefix = secrets.token_hex(6)
    plaintext = f"arc_{prefix}_{secrets.token_urlsafe(32)}"
    key = AgentKey.objects.create(
        prefix=prefix,
        digest=_key_digest(plaintext),
        agent_id=agent_id,
        rooms=room_names,
        is_admin=admin,
        label=label,
        created_by=created_by,
        created_at=now,
        expires_at=now + timedelta(seconds=seconds) if seconds is not None else None,
    )
    return key, plaintext


def key_check(*, agent_id: str, rooms: Iterable[str] = (), expires: str = "never") -> tuple[str, list[str], int | None]:
    """What ``key_mint`` would mint with: the agent id, the room names and the lifetime in seconds
    (``None``: never expires); ``Invalid`` when one of them is not acceptable."""
    agent_id = _required(agent_id, "agent_id")
    _fits(AgentKey, agent_id=agent_id)
    if expires not in AgentKey.EXPIRY_CHOICES:
        raise Invalid(f"expires must be one of {', '.join(AgentKey.EXPIRY_CHOICES)}")
    room_names = sorted({_required(room, "rooms[]") for room in rooms})
    unknown = [name for name in room_names if not Room.objects.filter(pk=name).exists()]
    if unknown:
        raise Invalid(f"unknown rooms: {', '.join(unknown)}")
    return agent_id, room_names, AgentKey.EXPIRY_CHOICES[expires]


def key_revoke(*, key_id: str) -> AgentKey:
    """Revoke a key at once: its next request gets 401, its open streams and sockets close."""
    with transaction.atomic():
        key = AgentKey.objects.filter(prefix=key_id).first()
        if key is None:
            raise NotFound(f"no key {key_id}")
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            events.publish("key", {"action": "revoked", "key_id": key.prefix, "agent_id": key.agent_id})
        return key


def key_authenticate(*, presented: str) -> AgentKey:
    """The usable key ``presented`` (``arc_<prefix>_<secret>``), or ``Unauthorized``.

    Records ``last_used_at`` (to the minute)."""
    parts = presented.split("_")
    if len(parts) < 3 or parts[0] != "arc":
        raise Unauthorized("malformed agent key (expected arc_<id>_<secret>)")
    key = AgentKey.objects.filter(prefix=parts[1]).first()
    if key is None or not hmac.compare_digest(key.digest, _key_digest(presented)):
        raise Unauthorized("unknown agent key")
    now = timezone.now()
    if key.revoked_at is not None:
        raise Unauthorized("this agent key was revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthorized("this agent key has expired")
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() >= KEY_TOUCH_EVERY_SEC:
        AgentKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def _key_digest(plaintext: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(plaintext.encode()).hexdigest()


# ── Dashboard login links ─────────────────────────────────────────────────

LOGIN_LINK_TTL = timedelta(hours=24)


def login_link_mint(*, username: str) -> str:
    """A one-time dashboard login token for ``username``: a staff user, created (as superuser) if absent.

    Only whoever can run the hub's commands on its storage gets one (``up``, ``ensure``,
    ``login``), so that user is trusted as an administrator, like a notebook server's owner.
    The token is returned once; only its hash is kept.
    """
    from django.contrib.auth import get_user_model

    username = _required(username, "username")
    user_model = get_user_model()
    with transaction.atomic():
        user, created = user_model.objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_unusable_password()  # the links are the way in; a password can be set in the admin
            user.save(update_fields=["password"])
        elif not (user.is_staff and user.is_active):
            # Never promote or revive an account someone made or switched off on purpose.
            raise Invalid(f"the user {username} exists but is not an active staff user; pick another name (--user)")
        now = timezone.now()
        LoginLink.objects.filter(expires_at__lt=now).delete()
        token = secrets.token_urlsafe(32)
        LoginLink.objects.create(digest=_key_digest(token), username=username, expires_at=now + LOGIN_LINK_TTL)
    return token


def login_link_redeem(*, token: str) -> Any:
    """The user a login token lets in, once: a second use, an expired or unknown token is ``Unauthorized``."""
    from django.contrib.auth import get_user_model

    now = timezone.now()
    digest = _key_digest(token)
    with transaction.atomic():
        # One conditional update: of two tabs opening the same link, one gets in.
        if not LoginLink.objects.filter(digest=digest, used_at__isnull=True, expires_at__gte=now).update(used_at=now):
            raise Unauthorized(
                "this login link is unknown, expired or already used; run `manage.py login` for a new one"
            )
        username = LoginLink.objects.get(pk=digest).username
        user = get_user_model().objects.filter(username=username, is_active=True, is_staff=True).first()
        if user is None:
            raise Unauthorized(f"the user {username} of this login link is no longer an active staff user")
        return user
