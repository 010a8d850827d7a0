"""Reliable direct delivery: a work queue per recipient, and the record of what each feed handed out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from coordination.core import events
from coordination.core.errors import Conflict, Invalid, NotFound
from coordination.core.models import Delivery, FeedCursor, Message
from coordination.core.parsing import required_text
from coordination.core.services import leases, messages, sessions

PRIORITY_RANK = {"low": 0, "normal": 1, "high": 2, "critical": 3}
DEFAULT_DELIVERY_ATTEMPTS = 5
MAX_DELIVERY_ATTEMPTS = 100


def delivery_create(message: Message, *, max_attempts: int) -> Delivery:
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
    return deliveries_mark_delivered_many({agent_id: (message_ids, through_id)})


def deliveries_mark_delivered_many(entries: Mapping[str, tuple[Iterable[int], int | None]]) -> int:
    """``deliveries_mark_delivered`` for many agents at once, in one transaction (``agent → (ids, through)``).

    Its statements grow with the distinct ``through`` ids, not with the agents: a broadcast
    handed to 200 streaming agents raises 200 cursors to one id with one ``UPDATE``.
    """
    now = timezone.now()
    explicit = {agent: set(ids) for agent, (ids, _) in entries.items()}
    by_through: dict[int, list[str]] = defaultdict(list)
    for agent, (_, through) in entries.items():
        if through is not None:
            by_through[through].append(agent)
    wanted = Q()
    for through, agents in by_through.items():
        wanted |= Q(agent_id__in=agents, message_id__lte=through)
    for agent, ids in explicit.items():
        if ids:
            wanted |= Q(agent_id=agent, message_id__in=ids)
    if not wanted:
        return 0
    with transaction.atomic():
        moved = list(
            Delivery.objects.filter(wanted, state=Delivery.State.QUEUED).values_list("pk", "agent_id", "message_id")
        )
        if moved:
            Delivery.objects.filter(pk__in=[pk for pk, _, _ in moved], state=Delivery.State.QUEUED).update(
                state=Delivery.State.DELIVERED, delivered_at=now
            )
            per_agent: dict[str, list[int]] = defaultdict(list)
            for _, agent, message_id in moved:
                per_agent[agent].append(message_id)
            for agent, message_ids in per_agent.items():
                events.publish(
                    "delivery", {"agent_id": agent, "state": "delivered", "message_ids": sorted(message_ids)}
                )
        for through, agents in by_through.items():
            _feed_cursors_raise(agents, through, now)
    return len(moved)


def feed_cursor_start(*, agent_id: str, through_id: int) -> None:
    """Raise ``agent_id``'s feed cursor to ``through_id`` (creating it) without counting anything below it as
    delivered: where a reader that saw only some of the past (a first look) says the agent's news begins."""
    with transaction.atomic():
        _feed_cursors_raise([agent_id], through_id, timezone.now())


def _feed_cursors_raise(agents: list[str], through_id: int, now: datetime) -> None:
    """Raise these agents' feed cursors to ``through_id`` (never lower), creating the missing ones."""
    raised = FeedCursor.objects.filter(agent_id__in=agents, delivered_id__lt=through_id).update(
        delivered_id=through_id, updated_at=now
    )
    if raised == len(agents):
        return
    # Some have no cursor yet (or one already past through_id): insert what is missing, keep what exists;
    # a cursor another process created meanwhile is then raised like the others.
    FeedCursor.objects.bulk_create(
        [FeedCursor(agent_id=agent, delivered_id=through_id, updated_at=now) for agent in agents],
        ignore_conflicts=True,
    )
    FeedCursor.objects.filter(agent_id__in=agents, delivered_id__lt=through_id).update(
        delivered_id=through_id, updated_at=now
    )


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
    agent_id = required_text(agent_id, "agent_id")
    if not 1 <= max_messages <= MAX_LEASE_BATCH:
        raise Invalid(f"max must be between 1 and {MAX_LEASE_BATCH}")
    if not leases.MIN_TTL_SEC <= lease_sec <= MAX_LEASE_SEC:
        raise Invalid(f"lease_sec must be between {leases.MIN_TTL_SEC} and {MAX_LEASE_SEC}")
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
    sessions.session_touch(agent_id=agent_id)
    return leased


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
            messages.message_post(
                from_agent=messages.SYSTEM_AGENT,
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
