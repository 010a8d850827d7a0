"""Rooms (Arc channels): creating them, closing and reopening them, and the checks posts make on them."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from coordination.core import events
from coordination.core.errors import Conflict, Invalid, NotFound
from coordination.core.models import Message, Room, Task
from coordination.core.parsing import required_text
from coordination.core.services import messages

DEFAULT_ROOMS = ("general", "direct")


def room_create(
    *, name: str, created_by: str | None = None, metadata: dict[str, Any] | None = None
) -> tuple[Room, bool]:
    """Create a room; an existing room is returned unchanged with ``created=False``."""
    name = required_text(name, "name")
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


def known_rooms_forget() -> None:
    _known_rooms.clear()


def room_exists(name: str) -> bool:
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
        Room.objects.get_or_create(name=name, defaults={"created_by": messages.SYSTEM_AGENT})


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
    name, actor = required_text(name, "name"), required_text(actor, "actor")
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
            messages.message_post(
                from_agent=messages.SYSTEM_AGENT,
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


def room_check_open(name: str, *, from_agent: str, touch: bool) -> None:
    """Refuse a post into a closed room (``Conflict``); call it under the message-order lock.

    Read from the database on every post, never cached: another process may have
    closed the room a moment ago. The hub's own notices (as ``system`` with
    ``touch=False``, which no edge can send) still go in: housekeeping (recovered
    claims, task rollups, shutdown, the close notice itself) must not fail because
    a room was closed.
    """
    if from_agent == messages.SYSTEM_AGENT and not touch:
        return
    # One indexed read on every post: plain SQL, a fifth of the ORM's cost for the same statement.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT closed_at, closed_by FROM {Room._meta.db_table} WHERE name = %s", [name])
        state = cursor.fetchone()
    if state is not None and state[0] is not None:
        raise Conflict(
            f"channel {name} is closed (by {state[1] or 'an admin'}): posts to it are refused until an admin "
            f"reopens it (POST /v1/channels/{name}/reopen); direct messages still work"
        )


def thread_room(thread_id: str | None, *, fallback: str = "general") -> str:
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
