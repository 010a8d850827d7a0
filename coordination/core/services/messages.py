"""Messages: posting (the checks, then one transaction with its side effects) and reply-claims."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from coordination.core import db, events, selectors
from coordination.core.errors import Conflict, Forbidden, Invalid, NotFound
from coordination.core.models import Message, Task
from coordination.core.parsing import agent_name, as_int, fits, required_text
from coordination.core.services import deliveries, rooms, sessions, tasks

SYSTEM_AGENT = "system"  # the hub's own notices come from this agent id
INLINE_ATTACHMENTS = {"text", "json", "code"}
REFERENCE_ATTACHMENTS = {"file_ref", "diff_ref"}
MAX_TTL_SEC = 10 * 365 * 24 * 3600  # ten years: a message's or task's longest ttl_sec


@dataclass
class MessageDraft:
    """A post that passed ``check_message_post``: every field normalised, nothing stored yet."""

    from_agent: str
    to_agent: str | None
    to_capability: str | None
    channel: str
    kind: str
    body: str
    attachments: list[dict[str, Any]]
    reply_to: int | None
    thread_id: str | None
    metadata: dict[str, Any]
    parent_task_id: int | None
    priority: str
    ttl_sec: int | None
    expects_reply: str
    max_attempts: int
    actor: str | None
    admin: bool
    touch: bool
    queue: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def direct(self) -> bool:
        """A direct message (to an agent, or to one picked by capability), not a room post."""
        return self.to_agent is not None or self.to_capability is not None


def check_message_post(
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
    any_agent: bool = False,
    admin: bool = False,
    touch: bool = True,
    queue: bool = True,
) -> MessageDraft:
    """Every rule a post must pass before its transaction (``Invalid`` naming the first it breaks).

    When the post answers a task (a ``task_result``), the task rules check its sender,
    unless ``any_agent`` (a client that may act as any agent: loopback-open without a key,
    which the task endpoints check no further either) or ``admin`` (may answer any task).
    """
    from_agent = agent_name(from_agent, "from_agent")
    to_agent = agent_name(to_agent, "to_agent") if to_agent is not None and to_agent.strip() else None
    if max_attempts is not None and not 1 <= max_attempts <= deliveries.MAX_DELIVERY_ATTEMPTS:
        raise Invalid(f"max_attempts must be between 1 and {deliveries.MAX_DELIVERY_ATTEMPTS}")
    kind = (kind or "chat").strip().lower()
    if to_capability is not None:
        to_capability = required_text(to_capability, "to_capability")
        if to_agent is not None:
            raise Invalid("give to_agent or to_capability, not both")
        if kind != Message.Kind.TASK_REQUEST:
            raise Invalid("to_capability is for task_request messages (delegation by capability)")
    room = (channel or ("direct" if to_agent or to_capability else "general")).strip()
    if not room:
        raise Invalid("channel must be non-empty")
    fits(Message, from_agent=from_agent, to_agent=to_agent, channel=room, thread_id=thread_id)
    fits(Message, expects_reply=expects_reply)
    if kind not in Message.Kind.values:
        raise Invalid(f"unsupported kind: {kind} (one of {', '.join(Message.Kind.values)})")
    if priority not in Message.Priority.values:
        raise Invalid(f"priority must be one of {', '.join(Message.Priority.values)}")
    if len(body) > settings.ARC_MAX_BODY_CHARS:
        raise Invalid(f"body exceeds max size ({settings.ARC_MAX_BODY_CHARS} characters)")
    normalized = _attachments_normalize(attachments or [])
    if not body and not normalized:
        raise Invalid("body or attachments is required")
    if ttl_sec is not None and not 1 <= ttl_sec <= MAX_TTL_SEC:
        raise Invalid(f"ttl_sec must be between 1 and {MAX_TTL_SEC}")
    return MessageDraft(
        from_agent=from_agent,
        to_agent=to_agent,
        to_capability=to_capability,
        channel=room,
        kind=kind,
        body=body,
        attachments=normalized,
        reply_to=reply_to,
        thread_id=thread_id,
        metadata=dict(metadata or {}),
        parent_task_id=parent_task_id,
        priority=priority,
        ttl_sec=ttl_sec,
        expects_reply=(expects_reply or "none").strip() or "none",
        max_attempts=max_attempts or deliveries.DEFAULT_DELIVERY_ATTEMPTS,
        actor=None if any_agent else from_agent,
        admin=admin,
        touch=touch,
        queue=queue,
    )


def message_post(**fields: Any) -> Message:
    """Post a message: ``check_message_post(**fields)``, then ``do_message_post``."""
    return do_message_post(check_message_post(**fields))


def do_message_post(draft: MessageDraft) -> Message:
    """Store a checked post and apply its side effects in one transaction.

    ``task``/``task_request`` messages register a task (optionally under
    ``parent_task_id``); a ``task_request`` naming ``to_capability`` goes to the agent
    the hub picks (``tasks.assignee_pick``); a ``task_result`` replying to an unfinished
    task finishes it (``metadata.success: false`` fails it), if its ``actor`` may
    (``Forbidden`` otherwise); the sender's presence is refreshed. A direct message gets
    a delivery record (``max_attempts`` for its work queue) unless ``queue`` is false.
    """
    d = draft
    meta = dict(d.metadata)
    to_agent = d.to_agent
    with transaction.atomic():
        if d.to_capability is not None:
            to_agent = tasks.assignee_pick(d.to_capability, exclude=d.from_agent)
            meta["to_capability"] = d.to_capability
        if to_agent is None and not rooms.room_exists(d.channel):
            raise Invalid(f"channel does not exist: {d.channel}")
        parent = None
        if d.parent_task_id is not None:
            parent = Task.objects.filter(pk=d.parent_task_id).first()
            if parent is None:
                raise Invalid("parent_task_id references unknown task")
        finishes = tasks.task_finished_by(d.kind, d.reply_to, meta, actor=d.actor, admin=d.admin)
        if finishes is not None:
            meta["task_completed" if finishes[1] else "task_failed"] = finishes[0].task_id
        db.serialize_on(db.MESSAGE_ORDER_LOCK)
        if to_agent is None:
            rooms.room_check_open(d.channel, from_agent=d.from_agent, touch=d.touch)
        prev_id = selectors.message_newest_id()
        now = timezone.now()
        message = _message_insert(
            ts=now,
            from_agent=d.from_agent,
            to_agent=to_agent,
            channel=d.channel,
            kind=d.kind,
            body=d.body,
            attachments=d.attachments,
            reply_to=d.reply_to,
            thread_id=d.thread_id,
            metadata=meta,
            priority=d.priority,
            expires_at=now + timedelta(seconds=d.ttl_sec) if d.ttl_sec is not None else None,
            expects_reply=d.expects_reply,
        )
        # Announced in id order, before anything this post causes (task rollup notices).
        events.publish_message(message.as_wire(), prev_id=prev_id)
        if to_agent is not None and d.queue:
            deliveries.delivery_create(message, max_attempts=d.max_attempts)
        if d.kind in (Message.Kind.TASK, Message.Kind.TASK_REQUEST):
            task = Task.objects.create(
                task_id=message.id,
                parent=parent,
                channel=d.channel,
                thread_id=d.thread_id,
                created_at=now,
                requester=d.from_agent,
                assignee=to_agent if d.kind == Message.Kind.TASK_REQUEST else None,
                deadline=message.expires_at,
            )
            events.publish("task", {"action": "created", "task": task.as_wire()})
        if finishes is not None:
            finished, success = finishes
            if success:
                tasks.task_complete(task_id=finished.task_id)
            else:
                tasks.task_fail(
                    task_id=finished.task_id, reason=str(meta.get("error") or message.body or "task_result failed")
                )
        if d.touch:
            sessions.session_touch(agent_id=d.from_agent)
    return message


def reply_claim(*, message_id: int, agent_id: str) -> tuple[Message, bool]:
    """Claim the right to answer a message that expects a reply. Returns ``(message, acquired)``.

    One conditional update decides it: for ``expects_reply: "anyone"`` exactly one agent
    wins and every other learns the winner (``reply_claimed_by``); for a named agent only
    that agent may claim (``Forbidden`` for others). Claiming again as the winner is a no-op
    that still answers ``acquired: true``. A message expecting no reply is a ``Conflict``.
    """
    agent_id = required_text(agent_id, "agent_id")
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
                out[key] = as_int(item[key], f"{where}.{key}")
    return out


def _message_insert(**values: Any) -> Message:
    """``Message.objects.create(**values)`` as one plain ``INSERT ... RETURNING id``, on every post.

    The same statement the ORM would write, with the same conversions (each field's
    ``get_db_prep_save``: JSON, datetimes, per database), without the ORM's per-insert
    compilation, which profiling found to be the largest single cost of a post. The model
    has no save signals; the search index is kept by the database's own triggers.
    """
    message = Message(**values)
    fields, sql = _insert_statement(connection.vendor)
    params = [f.get_db_prep_save(f.pre_save(message, add=True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        message.id = int(cursor.fetchone()[0])
    message._state.adding = False
    message._state.db = connection.alias
    return message


@functools.cache
def _insert_statement(vendor: str) -> tuple[list[Any], str]:
    """The message table's fields (all but the id) and its ``INSERT`` statement, made once per database kind."""
    fields = [f for f in Message._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(f.column)) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    return fields, f"INSERT INTO {quote(Message._meta.db_table)} ({columns}) VALUES ({marks}) RETURNING {quote('id')}"
