"""The hub's data model.

Arc v1 names are kept where they reach the wire: a ``Room`` is an Arc *channel*
(``name`` is its key), a ``Session`` is an agent's presence, a ``Task`` shares its
id with the message that created it. Agent ids are plain strings, as in Arc: an
agent exists once it has a session or has posted.

Writes go through ``coordination.core.services``; reusable reads are QuerySet methods
here, joined reads live in ``coordination.core.selectors``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone


def iso(value: datetime | None) -> str | None:
    """Arc's wire timestamp: ISO 8601 UTC, seconds precision, ``Z`` suffix."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Room(models.Model):
    """A named message stream (an Arc *channel* on the wire)."""

    name = models.CharField(primary_key=True, max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200, null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Room lifecycle (docs/protocol.md): a closed room refuses posts until reopened.
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.CharField(max_length=200, null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def as_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "created_at": iso(self.created_at),
            "created_by": self.created_by,
            "metadata": self.metadata,
            "closed": self.closed_at is not None,
            "closed_at": iso(self.closed_at),
            "closed_by": self.closed_by,
        }


class SessionQuerySet(models.QuerySet["Session"]):
    def live(self, ttl_sec: int, now: datetime | None = None) -> SessionQuerySet:
        cutoff = (now or timezone.now()) - timedelta(seconds=ttl_sec)
        return self.filter(active=True, last_seen__gte=cutoff)

    def stale(self, ttl_sec: int, now: datetime | None = None) -> SessionQuerySet:
        cutoff = (now or timezone.now()) - timedelta(seconds=ttl_sec)
        return self.filter(active=True, last_seen__lt=cutoff)


class Session(models.Model):
    """An agent's presence. At most one active session per agent id."""

    session_id = models.CharField(primary_key=True, max_length=64)
    agent_id = models.CharField(max_length=200)
    display_name = models.CharField(max_length=200)
    capabilities = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    active = models.BooleanField(default=True)

    objects = SessionQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["agent_id"]),
            models.Index(fields=["active", "last_seen"]),
        ]
        constraints = [
            # The database, not a read-then-write, enforces one active session per agent.
            models.UniqueConstraint(fields=["agent_id"], condition=Q(active=True), name="one_active_session_per_agent"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id} ({self.session_id})"

    def as_wire(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "agent_id": self.agent_id,
            "display_name": self.display_name,
            "capabilities": self.capabilities,
            "metadata": self.metadata,
            "created_at": iso(self.created_at),
            "last_seen": iso(self.last_seen),
            "active": self.active,
        }


class Message(models.Model):
    """A message in a room, or a direct message when ``to_agent`` is set."""

    class Kind(models.TextChoices):
        CHAT = "chat"
        NOTICE = "notice"
        TASK = "task"
        CLAIM = "claim"
        RELEASE = "release"
        ARTIFACT = "artifact"
        TASK_REQUEST = "task_request"
        TASK_RESULT = "task_result"
        STATUS_UPDATE = "status_update"
        CODE_REVIEW = "code_review"

    class Priority(models.TextChoices):
        LOW = "low"
        NORMAL = "normal"
        HIGH = "high"
        CRITICAL = "critical"

    id = models.BigAutoField(primary_key=True)
    ts = models.DateTimeField(default=timezone.now)
    from_agent = models.CharField(max_length=200)
    to_agent = models.CharField(max_length=200, null=True, blank=True)
    # Not a foreign key: Arc lets a direct message name any channel (default "direct").
    channel = models.CharField(max_length=200)
    kind = models.CharField(max_length=32, choices=Kind.choices, default=Kind.CHAT)
    body = models.TextField(blank=True, default="")
    attachments = models.JSONField(default=list, blank=True)
    reply_to = models.BigIntegerField(null=True, blank=True)
    thread_id = models.CharField(max_length=200, null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Extensions (docs/protocol.md): delivery priority, expiry, reply etiquette.
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.NORMAL)
    expires_at = models.DateTimeField(null=True, blank=True)
    expects_reply = models.CharField(max_length=200, default="none")
    reply_claimed_by = models.CharField(max_length=200, null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["channel", "id"]),
            models.Index(fields=["to_agent", "id"]),
            models.Index(fields=["thread_id", "id"]),
            models.Index(fields=["reply_to", "id"]),  # a task's conversation and answer (its request's replies)
            models.Index(fields=["ts"]),  # where a window of time starts (coordination.core.glance)
        ]

    def __str__(self) -> str:
        return f"#{self.id} {self.from_agent} → {self.to_agent or self.channel}"

    def as_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "id": self.id,
            "ts": iso(self.ts),
            "from_agent": self.from_agent,
            "to_agent": self.to_agent,
            "channel": self.channel,
            "kind": self.kind,
            "body": self.body,
            "attachments": self.attachments,
            "reply_to": self.reply_to,
            "thread_id": self.thread_id,
            "metadata": self.metadata,
        }
        # Extension fields appear only when set, so Arc-shaped messages stay Arc-shaped.
        if self.priority != Message.Priority.NORMAL:
            wire["priority"] = self.priority
        if self.expires_at is not None:
            wire["expires_at"] = iso(self.expires_at)
        if self.expects_reply != "none":
            wire["expects_reply"] = self.expects_reply
            wire["reply_claimed_by"] = self.reply_claimed_by
        return wire


class LeaseQuerySet(models.QuerySet[Any]):
    """The one definition of a lease's life (claims, locks): active until released or past ``expires_at``."""

    def active(self, now: datetime | None = None) -> LeaseQuerySet:
        return self.filter(released_at__isnull=True, expires_at__gte=now or timezone.now())

    def lapsed(self, now: datetime | None = None) -> LeaseQuerySet:
        """Never released, but past ``expires_at``: anyone's to take (its holder is told first)."""
        return self.filter(released_at__isnull=True, expires_at__lt=now or timezone.now())

    def free(self, now: datetime | None = None) -> LeaseQuerySet:
        """Released or lapsed: a new holder may take it over."""
        return self.filter(Q(released_at__isnull=False) | Q(expires_at__lt=now or timezone.now()))

    def unreleased(self) -> LeaseQuerySet:
        return self.filter(released_at__isnull=True)

    def held_by(self, holder: str) -> LeaseQuerySet:
        return self.filter(**{self.model.HOLDER_FIELD: holder})


class Lease(models.Model):
    """What claims and locks share: a holder, a TTL, a release and the notice of their expiry."""

    HOLDER_FIELD: str  # the holder's column (``owner_agent_id`` on claims, ``agent_id`` on locks)
    STARTED_FIELD: str  # when the current holder took it

    expires_at = models.DateTimeField()
    released_at = models.DateTimeField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # When the holder was told its lease ran out (docs/protocol.md, "Expiry is told to the holder").
    expiry_noticed_at = models.DateTimeField(null=True, blank=True)

    objects = LeaseQuerySet.as_manager()

    class Meta:
        abstract = True

    @property
    def holder(self) -> str:
        return str(getattr(self, self.HOLDER_FIELD))

    def is_active(self, now: datetime | None = None) -> bool:
        return self.released_at is None and self.expires_at >= (now or timezone.now())

    @property
    def state(self) -> str:
        """``active``, ``expired`` (ran out, never released) or ``released``."""
        if self.released_at is not None:
            return "released"
        return "active" if self.is_active() else "expired"


class Claim(Lease):
    """Atomic ownership of a unit of work, with a TTL."""

    HOLDER_FIELD = "owner_agent_id"
    STARTED_FIELD = "claimed_at"

    claim_key = models.CharField(primary_key=True, max_length=300)
    thread_id = models.CharField(max_length=200, null=True, blank=True)
    task_message_id = models.BigIntegerField(null=True, blank=True)
    owner_agent_id = models.CharField(max_length=200)
    claimed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["thread_id"]), models.Index(fields=["owner_agent_id"])]

    def __str__(self) -> str:
        return self.claim_key

    def as_wire(self) -> dict[str, Any]:
        return {
            "claim_key": self.claim_key,
            "thread_id": self.thread_id,
            "task_message_id": self.task_message_id,
            "owner_agent_id": self.owner_agent_id,
            "claimed_at": iso(self.claimed_at),
            "expires_at": iso(self.expires_at),
            "released_at": iso(self.released_at),
            "metadata": self.metadata,
        }


class Lock(Lease):
    """An advisory lock on a file path, with a TTL."""

    HOLDER_FIELD = "agent_id"
    STARTED_FIELD = "locked_at"

    file_path = models.CharField(primary_key=True, max_length=1000)
    agent_id = models.CharField(max_length=200)
    locked_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["agent_id"])]

    def __str__(self) -> str:
        return self.file_path

    def as_wire(self) -> dict[str, Any]:
        return {
            "file_path": self.file_path,
            "agent_id": self.agent_id,
            "locked_at": iso(self.locked_at),
            "expires_at": iso(self.expires_at),
            "released_at": iso(self.released_at),
            "metadata": self.metadata,
        }


class Task(models.Model):
    """A unit of work; its id is the id of the ``task``/``task_request`` message that made it."""

    class Status(models.TextChoices):
        OPEN = "open"
        IN_PROGRESS = "in_progress"
        DONE = "done"
        FAILED = "failed"
        TIMEOUT = "timeout"

    UNFINISHED = (Status.OPEN, Status.IN_PROGRESS)

    task_id = models.BigIntegerField(primary_key=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="subtasks", db_column="parent_task_id"
    )
    channel = models.CharField(max_length=200)
    thread_id = models.CharField(max_length=200, null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    # Extensions (docs/protocol.md): who asked, who does it, by when, and why it failed.
    requester = models.CharField(max_length=200, null=True, blank=True)
    assignee = models.CharField(max_length=200, null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["status"]),
            models.Index(fields=["thread_id"]),
            models.Index(fields=["assignee", "status"]),
            models.Index(fields=["requester", "status"]),
            models.Index(fields=["created_at"]),  # tasks opened and finished over time (coordination.core.glance)
            models.Index(fields=["completed_at"]),
        ]

    def __str__(self) -> str:
        return f"task {self.task_id} ({self.status})"

    def as_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "task_id": self.task_id,
            "parent_task_id": self.parent_id,
            "channel": self.channel,
            "thread_id": self.thread_id,
            "status": self.status,
            "created_at": iso(self.created_at),
            "completed_at": iso(self.completed_at),
        }
        for name in ("requester", "assignee"):
            value = getattr(self, name)
            if value is not None:
                wire[name] = value
        if self.started_at is not None:
            wire["started_at"] = iso(self.started_at)
        if self.deadline is not None:
            wire["deadline"] = iso(self.deadline)
        if self.failure_reason is not None:
            wire["failure_reason"] = self.failure_reason
        return wire


class Delivery(models.Model):
    """One direct message's way to one recipient (docs/protocol.md, "Reliable direct delivery").

    ``queued`` → ``delivered`` when a poll, stream or socket hands it out; leases,
    acks, nacks, retries and dead letters move it further (``leased``, ``acked``,
    ``failed``, ``expired``).
    """

    class State(models.TextChoices):
        QUEUED = "queued"
        DELIVERED = "delivered"
        LEASED = "leased"
        ACKED = "acked"
        FAILED = "failed"
        EXPIRED = "expired"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries")
    agent_id = models.CharField(max_length=200)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    priority = models.PositiveSmallIntegerField(default=2, help_text="0 low … 3 critical, for lease order")
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=5)
    created_at = models.DateTimeField(default=timezone.now)
    available_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    leased_until = models.DateTimeField(null=True, blank=True)
    acked_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message", "agent_id"], name="one_delivery_per_recipient")]
        indexes = [
            models.Index(fields=["agent_id", "state", "message"]),
            # Lease order: highest priority, then oldest, among an agent's pending deliveries.
            models.Index(fields=["agent_id", "state", "-priority", "message"], name="delivery_lease_order"),
            models.Index(fields=["state", "leased_until"], name="delivery_lease_expiry"),
            models.Index(fields=["delivered_at"], name="delivery_delivered_at"),  # delivery lag over time
        ]

    def __str__(self) -> str:
        return f"message {self.message_id} → {self.agent_id}: {self.state}"

    def as_wire(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "agent_id": self.agent_id,
            "state": self.state,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "created_at": iso(self.created_at),
            "delivered_at": iso(self.delivered_at),
            "leased_until": iso(self.leased_until),
            "acked_at": iso(self.acked_at),
            "expires_at": iso(self.expires_at),
            "last_error": self.last_error,
        }


class FeedCursor(models.Model):
    """How far an agent's feed (events long-poll, stream, socket) has handed out messages."""

    agent_id = models.CharField(primary_key=True, max_length=200)
    delivered_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.agent_id} through {self.delivered_id}"


class TurnState(models.Model):
    """A coding agent's client session as its turn-boundary hooks see it (docs/agents.md).

    ``touched``: the files its edits touched, whose locks by others the next turn hears of.
    ``stop_blocks`` counts the ``Stop`` hooks answered with a block since the user last
    prompted or a ``Stop`` went through: the hub blocks a stop only a few times in a row.
    """

    agent_id = models.CharField(max_length=200)
    client_session = models.CharField(max_length=200)
    stop_blocks = models.PositiveIntegerField(default=0)
    # The lock names of the files this session's edit tool touched, most recent last (at most TOUCHED_KEPT).
    touched = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent_id", "client_session"], name="one_turn_state_per_client_session")
        ]
        indexes = [models.Index(fields=["updated_at"])]

    def __str__(self) -> str:
        return f"{self.agent_id} in {self.client_session}: {self.stop_blocks} stop blocks"


class AgentKeyQuerySet(models.QuerySet["AgentKey"]):
    def usable(self, now: datetime | None = None) -> AgentKeyQuerySet:
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))


class AgentKey(models.Model):
    """A secret that lets one agent act on the hub (docs/access.md). Only its hash is stored.

    The key reads ``arc_<prefix>_<secret>``; ``prefix`` finds the row, the SHA-256
    of the whole key must match ``digest``. ``rooms`` empty means every room.
    """

    EXPIRY_CHOICES = {"10m": 600, "1h": 3600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400, "never": None}

    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    agent_id = models.CharField(max_length=200)
    rooms = models.JSONField(default=list, blank=True)
    is_admin = models.BooleanField(default=False)
    label = models.CharField(max_length=200, blank=True, default="")
    created_by = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = AgentKeyQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["agent_id"])]

    def __str__(self) -> str:
        return f"arc_{self.prefix}_… ({self.agent_id})"

    def is_usable(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def as_wire(self) -> dict[str, Any]:
        """What anyone may see of a key: never the secret or its hash."""
        return {
            "key_id": self.prefix,
            "agent_id": self.agent_id,
            "rooms": self.rooms,
            "admin": self.is_admin,
            "label": self.label,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "last_used_at": iso(self.last_used_at),
            "revoked_at": iso(self.revoked_at),
        }


class HubState(models.Model):
    """One row of hub-wide state shared by every worker process on this database."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    created_at = models.DateTimeField(default=timezone.now)
    birth_marker = models.CharField(max_length=64)
    allow_remote = models.BooleanField(default=False)
    allow_remote_set = models.BooleanField(
        default=False, help_text="True once the network toggle was used; then it wins over ARC_ALLOW_REMOTE."
    )

    class Meta:
        # The hub's one admin right for staff users (coordination.core.access.staff_admin).
        permissions = [("operate_hub", "Can administer the hub: keys, rooms, work, deliveries, network")]

    def __str__(self) -> str:
        return f"hub born {iso(self.created_at)}"


class LoginLink(models.Model):
    """A one-time link into the dashboard for the local user (docs/dashboard.md), printed by ``up``/``ensure``.

    Only the SHA-256 of the token is stored; the link works once, before ``expires_at``.
    """

    digest = models.CharField(max_length=64, primary_key=True)
    username = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"login link for {self.username}"


class IdempotencyRecord(models.Model):
    """The first answer to a state-changing request sent with an idempotency key (docs/protocol.md).

    A repeat by the same agent with the same key, within ``ARC_IDEMPOTENCY_TTL_SEC``, gets this
    answer again and changes nothing; the same key with another request is refused. ``fingerprint``
    is the SHA-256 of what was asked (the operation and its input); ``answer`` is what was answered.
    """

    agent_id = models.CharField(max_length=200)
    key = models.CharField(max_length=200)
    fingerprint = models.CharField(max_length=64)
    answer = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent_id", "key"], name="one_answer_per_agent_and_key")]
        indexes = [models.Index(fields=["expires_at"], name="idempotency_expiry")]

    def __str__(self) -> str:
        return f"{self.agent_id}: {self.key}"


class Duty(models.Model):
    """A job one process of the hub does at a time (the sweeper, a relay spool), held as a lease.

    The holder renews ``expires_at`` while it lives; once that passes, any process may take
    it over (``coordination.core.services.duties``). A database row, so it holds across worker
    processes and machines sharing the database, with no consensus of our own.
    """

    name = models.CharField(max_length=300, primary_key=True)
    holder = models.CharField(max_length=200)
    since = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {self.holder}"


class RemoteAgent(models.Model):
    """An A2A agent elsewhere that the hub's agents reach as one of their own (docs/a2a.md, outbound).

    An admin registers it by its Agent Card's URL; the hub keeps its card and a session for it
    under ``agent_id`` (its card's skills as capabilities), and the gateway's bridge sends it
    the tasks given to that name. ``credential`` is what the hub presents to it (a Bearer
    token): write-only, like a key's secret it is never shown or logged again.
    """

    agent_id = models.CharField(max_length=200, unique=True)
    card_url = models.CharField(max_length=2000)
    credential = models.TextField(blank=True, default="")
    card = models.JSONField(default=dict, blank=True)
    capabilities = models.JSONField(default=list, blank=True)
    registered_by = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    checked_at = models.DateTimeField(null=True, blank=True)  # its card last fetched (or tried)
    problem = models.TextField(blank=True, default="")  # why the last fetch failed; empty when it answered

    def __str__(self) -> str:
        return f"{self.agent_id} (A2A at {self.card_url})"

    def __repr__(self) -> str:  # never the credential
        return f"<RemoteAgent {self.agent_id} {self.card_url}>"

    def as_wire(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "card_url": self.card_url,
            "has_credential": bool(self.credential),
            "name": str(self.card.get("name") or "") if isinstance(self.card, dict) else "",
            "capabilities": list(self.capabilities or []),
            "registered_by": self.registered_by,
            "created_at": iso(self.created_at),
            "checked_at": iso(self.checked_at) if self.checked_at else None,
            "problem": self.problem or None,
        }


class RemoteCall(models.Model):
    """A hub task the bridge sent to a remote A2A agent: which, under what A2A task id there, how often tried.

    Kept so that a bridge taking over after a restart follows the remote task instead of sending it again.
    """

    task_id = models.BigIntegerField(primary_key=True)
    agent_id = models.CharField(max_length=200)
    remote_task_id = models.CharField(max_length=200, blank=True, default="")
    attempts = models.IntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"task {self.task_id} → {self.agent_id} ({self.remote_task_id or 'not yet sent'})"


class PushConfig(models.Model):
    """Where an A2A client wants to hear of a task's changes (A2A push notifications; docs/a2a.md).

    Kept for the client that set it (``owner``, with its key and rooms, so that what is pushed is what that
    client may read, and nothing once its key is revoked). ``sent_state`` is the task's A2A state last
    delivered (or given up on); ``done`` once its final state was.
    """

    task_id = models.BigIntegerField()
    config_id = models.CharField(max_length=200)
    owner = models.CharField(max_length=200)  # the requester it acts for
    key_id = models.CharField(max_length=64, null=True, blank=True)
    rooms = models.JSONField(default=list, blank=True)
    url = models.CharField(max_length=2000)
    token = models.CharField(max_length=500, blank=True, default="")
    auth_scheme = models.CharField(max_length=100, blank=True, default="")
    auth_credentials = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    sent_state = models.CharField(max_length=40, blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.IntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    done = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task_id", "config_id"], name="push_config_once_per_task")]
        indexes = [models.Index(fields=["done", "task_id"])]

    def __str__(self) -> str:
        return f"task {self.task_id} → {self.url}"

    def __repr__(self) -> str:  # never the token or credentials
        return f"<PushConfig {self.task_id}/{self.config_id} {self.url}>"
