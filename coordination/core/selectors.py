"""Reads that the API (and later the dashboard and MCP tools) share.

Each returns model instances or plain dicts in the Arc wire shape; none writes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Exists, Max, OuterRef, Q, QuerySet
from django.utils import timezone

from coordination.core.errors import Invalid, NotFound
from coordination.core.models import (
    AgentKey,
    Claim,
    Delivery,
    FeedCursor,
    Lock,
    Message,
    PushConfig,
    RemoteAgent,
    RemoteCall,
    Room,
    Session,
    Task,
    TurnState,
    iso,
)


def room_get(name: str) -> Room:
    room = Room.objects.filter(pk=name).first()
    if room is None:
        raise NotFound("channel not found")
    return room


def rooms_list() -> list[Room]:
    return list(Room.objects.order_by("name"))


def agents_live(*, capability: str | None = None) -> list[Session]:
    agents = list(Session.objects.live(settings.ARC_PRESENCE_TTL_SEC).order_by("agent_id"))
    if capability:
        agents = [a for a in agents if capability in (a.capabilities or [])]
    return agents


def message_newest_id() -> int:
    """The id of the newest message (0 when there is none): an index lookup, on every post."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MAX(id) FROM {Message._meta.db_table}")  # a table name, no input
        row = cursor.fetchone()
    return int(row[0] or 0) if row else 0


def messages_feed(
    *,
    agent_id: str | None = None,
    channel: str | None = None,
    thread_id: str | None = None,
    rooms: frozenset[str] = frozenset(),
    exclude_self: bool = False,
    broadcast_only: bool = False,
    after: int = 0,
    through: int | None = None,
    limit: int = 100,
    newest: bool = False,
) -> list[Message]:
    """Messages after id ``after`` (up to ``through``) in id order, as one reader sees them.

    With ``agent_id``: Arc's event feed, broadcasts plus direct messages to that agent
    (``exclude_self`` drops its own posts). ``broadcast_only``: no direct messages at
    all (Arc's ``GET /v1/messages``). ``channel``, ``thread_id`` and ``rooms`` narrow it.
    ``newest``: the last ``limit`` of them (still in id order) instead of the first.
    """
    rows = _feed_rows(
        agent_id=agent_id,
        channel=channel,
        thread_id=thread_id,
        rooms=rooms,
        exclude_self=exclude_self,
        broadcast_only=broadcast_only,
        after=after,
        through=through,
    )
    if newest:
        return list(reversed(rows.order_by("-id")[:limit]))
    return list(rows.order_by("id")[:limit])


def messages_feed_count(*, agent_id: str, rooms: frozenset[str] = frozenset(), after: int, through: int | None) -> int:
    """How many messages of ``agent_id``'s feed (its own posts left out) lie after ``after`` (up to ``through``)."""
    return _feed_rows(agent_id=agent_id, rooms=rooms, exclude_self=True, after=after, through=through).count()


def _feed_rows(
    *,
    agent_id: str | None = None,
    channel: str | None = None,
    thread_id: str | None = None,
    rooms: frozenset[str] = frozenset(),
    exclude_self: bool = False,
    broadcast_only: bool = False,
    after: int = 0,
    through: int | None = None,
) -> QuerySet[Message]:
    rows = Message.objects.filter(id__gt=after)
    if through is not None:
        rows = rows.filter(id__lte=through)
    if broadcast_only:
        rows = rows.filter(to_agent__isnull=True)
    elif agent_id is not None:
        rows = rows.filter(Q(to_agent__isnull=True) | Q(to_agent=agent_id))
    if channel is not None:
        rows = rows.filter(channel=channel)
    if thread_id is not None:
        rows = rows.filter(thread_id=thread_id)
    if rooms:  # narrows broadcasts; the reader's own direct messages always pass
        rows = rows.filter(Q(channel__in=rooms) | Q(to_agent__isnull=False))
    if exclude_self and agent_id is not None:
        rows = rows.exclude(from_agent=agent_id)
    return rows


def message_get(message_id: int) -> Message:
    message = Message.objects.filter(pk=message_id).first()
    if message is None:
        raise NotFound("message not found")
    return message


# Live agent ids, reused for half a second: every post asks (delivery truth) and the
# answer changes only when presence does. Session changes in this process clear it.
_LIVE_CACHE_SEC = 0.5
_live_cache: tuple[float, frozenset[str]] | None = None


def live_agent_ids() -> frozenset[str]:
    global _live_cache
    now = time.monotonic()
    if _live_cache is not None and now - _live_cache[0] < _LIVE_CACHE_SEC:
        return _live_cache[1]
    ids = frozenset(Session.objects.live(settings.ARC_PRESENCE_TTL_SEC).values_list("agent_id", flat=True))
    _live_cache = (now, ids)
    return ids


def live_agents_changed() -> None:
    global _live_cache
    _live_cache = None


def message_recipients(message: Message) -> list[str]:
    """The live agents that can see ``message`` now (never its sender)."""
    live = live_agent_ids()
    if message.to_agent is not None:
        return [message.to_agent] if message.to_agent in live and message.to_agent != message.from_agent else []
    return sorted(live - {message.from_agent})


def post_receipt(message: Message) -> dict[str, Any]:
    """Who a new post reached (delivery truth): ``recipients``, and a ``warning`` when nobody."""
    recipients = message_recipients(message)
    receipt: dict[str, Any] = {"recipients": len(recipients)}
    if message.to_agent is not None:
        receipt["delivery"] = {message.to_agent: Delivery.State.QUEUED.value}
        if not recipients:
            receipt["warning"] = f"{message.to_agent} is not live; the message waits in their inbox"
    elif not recipients:
        receipt["warning"] = "no other agent is live: nobody will see this message until one connects and reads"
    return receipt


def message_status(message: Message) -> dict[str, Any]:
    """Delivery truth for one message: per recipient, how far it got.

    A direct message has a delivery record for its recipient. A broadcast is
    ``delivered`` to each live agent whose feed (events, stream, socket) has
    handed out messages up to it, ``queued`` to the other live agents.
    """
    if message.to_agent is not None:
        recipients = [
            {"agent_id": d.agent_id, **{k: v for k, v in d.as_wire().items() if k not in {"message_id", "agent_id"}}}
            for d in Delivery.objects.filter(message=message).order_by("agent_id")
        ]
    else:
        agents = message_recipients(message)
        cursors = dict(FeedCursor.objects.filter(agent_id__in=agents).values_list("agent_id", "delivered_id"))
        recipients = [
            {"agent_id": agent, "state": "delivered" if cursors.get(agent, 0) >= message.id else "queued"}
            for agent in agents
        ]
    return {
        "message_id": message.id,
        "to_agent": message.to_agent,
        "channel": message.channel,
        "recipients": recipients,
    }


def inbox(*, agent_id: str, since_id: int = 0, limit: int = 100) -> list[Message]:
    return list(Message.objects.filter(to_agent=agent_id, id__gt=since_id).order_by("id")[:limit])


def replies_to(question_ids: Iterable[int], *, limit: int) -> list[dict[str, Any]]:
    """Replies (``reply_to``) to any of these messages, oldest first, as wire dicts."""
    rows = Message.objects.filter(reply_to__in=list(question_ids)).order_by("id")[:limit]
    return [m.as_wire() for m in rows]


def deliveries_list(*, agent_id: str | None = None, state: str | None = None, limit: int = 100) -> list[Delivery]:
    """Delivery records, newest message first; ``state="failed"`` lists the dead letters."""
    if state is not None and state not in Delivery.State.values:
        raise Invalid(f"state must be one of {', '.join(Delivery.State.values)}")
    rows = Delivery.objects.select_related("message")
    if agent_id:
        rows = rows.filter(agent_id=agent_id)
    if state:
        rows = rows.filter(state=state)
    return list(rows.order_by("-message_id", "agent_id")[:limit])


def leased_wire(delivery: Delivery) -> dict[str, Any]:
    """A leased direct message as a lease answers it: the message plus its ``delivery``."""
    return {**delivery.message.as_wire(), "delivery": delivery.as_wire()}


def feed_cursor(agent_id: str) -> int:
    """How far ``agent_id``'s whole feed has been handed out (its ``FeedCursor``; 0 if never)."""
    return feed_cursor_at(agent_id) or 0


def feed_cursor_at(agent_id: str) -> int | None:
    """``feed_cursor``, or ``None`` when the agent's feed was never read at all."""
    value = FeedCursor.objects.filter(agent_id=agent_id).values_list("delivered_id", flat=True).first()
    return None if value is None else int(value)


def session_live(agent_id: str) -> Session | None:
    """``agent_id``'s live session, if it has one."""
    return Session.objects.live(settings.ARC_PRESENCE_TTL_SEC).filter(agent_id=agent_id).first()


def delivery_wire(delivery: Delivery) -> dict[str, Any]:
    """A delivery as the wire shows it: the record plus its message."""
    return {**delivery.as_wire(), "message": delivery.message.as_wire()}


def bootstrap(*, agent_id: str) -> dict[str, Any]:
    session = Session.objects.filter(agent_id=agent_id, active=True).order_by("-created_at").first()
    latest = Message.objects.filter(Q(to_agent__isnull=True) | Q(to_agent=agent_id)).aggregate(mx=Max("id"))["mx"]
    return {
        "agent_id": agent_id,
        "session": session.as_wire() if session else None,
        "latest_visible_id": int(latest or 0),
        "live_agents": [s.as_wire() for s in agents_live()],
        "default_channel": "general",
    }


def claims_list(*, thread_id: str | None = None, active_only: bool = False) -> list[Claim]:
    rows: QuerySet[Claim] = Claim.objects.active() if active_only else Claim.objects.all()
    if thread_id is not None:
        rows = rows.filter(thread_id=thread_id)
    return list(rows.order_by("claimed_at", "claim_key"))


def locks_list(*, agent_id: str | None = None, active_only: bool = False) -> list[Lock]:
    rows: QuerySet[Lock] = Lock.objects.active() if active_only else Lock.objects.all()
    if agent_id is not None:
        rows = rows.filter(agent_id=agent_id)
    return list(rows.order_by("locked_at", "file_path"))


def locks_held_by_others(paths: Iterable[str], *, agent_id: str) -> list[Lock]:
    """Active locks on any of ``paths`` that another agent than ``agent_id`` holds."""
    return list(Lock.objects.active().filter(file_path__in=set(paths)).exclude(agent_id=agent_id).order_by("file_path"))


def inbox_waiting(*, agent_id: str, limit: int) -> list[Message]:
    """The oldest direct messages to ``agent_id`` that no reader has handed it yet (``queued``)."""
    ids = Delivery.objects.filter(agent_id=agent_id, state=Delivery.State.QUEUED).order_by("message_id")
    return list(Message.objects.filter(id__in=list(ids.values_list("message_id", flat=True)[:limit])).order_by("id"))


def agent_holdings(agent_id: str) -> dict[str, Any]:
    """What ``agent_id`` holds and owes: active claims and locks, unfinished tasks it was given or asked for,
    and how many direct messages wait in its inbox unread (``queued``)."""
    assigned = list(Task.objects.filter(assignee=agent_id, status__in=Task.UNFINISHED).order_by("task_id")[:50])
    requested = list(Task.objects.filter(requester=agent_id, status__in=Task.UNFINISHED).order_by("task_id")[:50])
    requests = Message.objects.filter(id__in=[t.task_id for t in assigned + requested]).values_list("id", "body")
    return {
        "claims": list(Claim.objects.active().filter(owner_agent_id=agent_id).order_by("claimed_at")[:50]),
        "locks": list(Lock.objects.active().filter(agent_id=agent_id).order_by("locked_at")[:50]),
        "tasks_assigned": assigned,
        "tasks_requested": requested,
        "task_requests": dict(requests),  # task id → the body of the message that asked for it
        "inbox_queued": Delivery.objects.filter(agent_id=agent_id, state=Delivery.State.QUEUED).count(),
    }


def turn_touched_files(*, agent_id: str, client_session: str) -> list[str]:
    """The lock names of the files this client session's edits touched, most recent last."""
    row = TurnState.objects.filter(agent_id=agent_id, client_session=client_session).values_list("touched")
    return list(row[0][0] or []) if row else []


def turn_stop_blocks(*, agent_id: str, client_session: str) -> int:
    """How many ``Stop`` hooks in a row this client session has had answered with a block."""
    row = TurnState.objects.filter(agent_id=agent_id, client_session=client_session).values_list("stop_blocks")
    return int(row[0][0]) if row else 0


TALK_SHOWN = 50  # the newest messages of a task's conversation that a reader of the task is shown


@dataclass(frozen=True)
class TaskExchange:
    """A task, the message that asked for it, its conversation (the messages in reply to the request
    other than its answer, oldest first, the newest ``TALK_SHOWN``) and the ``task_result`` that answered it."""

    task: Task
    request: Message | None
    talk: list[Message]
    answer: Message | None


def task_exchange(task_id: int) -> TaskExchange:
    task = task_get(task_id)
    request = Message.objects.filter(pk=task_id).first()
    replies = Message.objects.filter(reply_to=task_id)
    talk = list(replies.exclude(kind=Message.Kind.TASK_RESULT).order_by("-id")[:TALK_SHOWN])[::-1]
    answer = None
    if task.status not in Task.UNFINISHED:
        answer = replies.filter(kind=Message.Kind.TASK_RESULT).order_by("id").first()
    return TaskExchange(task, request, talk, answer)


def tasks_of(*, requester: str | None, assignee: str | None, limit: int) -> list[Task]:
    """The newest tasks (at most ``limit``) that ``requester`` asked for and ``assignee`` was given (each if named)."""
    rows = Task.objects.all()
    if requester is not None:
        rows = rows.filter(requester=requester)
    if assignee is not None:
        rows = rows.filter(assignee=assignee)
    return list(rows.order_by("-task_id")[:limit])


def task_find(task_id: int) -> Task | None:
    return Task.objects.filter(pk=task_id).first()


def task_get(task_id: int) -> Task:
    task = task_find(task_id)
    if task is None:
        raise NotFound("task not found")
    return task


def tasks_list(
    *,
    parent_id: int | None = None,
    status: str | None = None,
    channel: str | None = None,
    thread_id: str | None = None,
    assignee: str | None = None,
) -> list[Task]:
    if status is not None and status not in Task.Status.values:
        raise Invalid(f"status must be one of {', '.join(Task.Status.values)}")
    rows = Task.objects.all()
    if parent_id is not None:
        rows = rows.filter(parent_id=parent_id)
    if status is not None:
        rows = rows.filter(status=status)
    if channel is not None:
        rows = rows.filter(channel=channel)
    if thread_id is not None:
        rows = rows.filter(thread_id=thread_id)
    if assignee is not None:
        rows = rows.filter(assignee=assignee)
    return list(rows.order_by("task_id"))


# ── Threads ───────────────────────────────────────────────────────────────


def _thread_locks(thread_ids: set[str] | None = None) -> dict[str, list[Lock]]:
    """Locks grouped by ``metadata.thread_id`` (Arc scopes locks to threads through metadata)."""
    grouped: dict[str, list[Lock]] = defaultdict(list)
    for lock in Lock.objects.filter(metadata__has_key="thread_id").order_by("locked_at", "file_path"):
        tid = lock.metadata.get("thread_id") if isinstance(lock.metadata, dict) else None
        if tid is None:
            continue
        tid = str(tid)
        if thread_ids is None or tid in thread_ids:
            grouped[tid].append(lock)
    return grouped


def _summary(
    thread_id: str, messages: list[Message], tasks: list[Task], claims: list[Claim], locks: list[Lock]
) -> dict[str, Any]:
    now = timezone.now()
    latest = messages[-1] if messages else None
    artifact_ids = [m.id for m in messages if m.kind == Message.Kind.ARTIFACT]
    roots = sorted((t for t in tasks if t.parent_id is None), key=lambda t: t.task_id)
    unfinished = sum(1 for t in tasks if t.status in Task.UNFINISHED)
    active_claims = sum(1 for c in claims if c.is_active(now))
    active_locks = sum(1 for lk in locks if lk.is_active(now))
    if tasks and all(t.status == Task.Status.DONE for t in tasks):
        status = "completed"
    elif active_claims or active_locks:
        status = "open"
    else:
        status = "waiting"
    channel = (
        roots[0].channel if roots else (messages[0].channel if messages else (tasks[0].channel if tasks else None))
    )
    return {
        "thread_id": thread_id,
        "channel": channel,
        "root_task_id": roots[0].task_id if roots else None,
        "latest_message_id": latest.id if latest else None,
        "latest_message_ts": iso(latest.ts) if latest else None,
        "latest_artifact_id": max(artifact_ids) if artifact_ids else None,
        "message_count": len(messages),
        "total_task_count": len(tasks),
        "open_task_count": unfinished,
        "active_claim_count": active_claims,
        "active_lock_count": active_locks,
        "status": status,
    }


def threads_list() -> list[dict[str, Any]]:
    """One summary per thread, newest activity first (Arc's order)."""
    ids: set[str] = set()
    for model in (Message, Task, Claim):
        ids.update(
            str(t) for t in model.objects.filter(thread_id__isnull=False).values_list("thread_id", flat=True).distinct()
        )
    messages: dict[str, list[Message]] = defaultdict(list)
    for message in Message.objects.filter(thread_id__isnull=False).order_by("id"):
        messages[str(message.thread_id)].append(message)
    tasks: dict[str, list[Task]] = defaultdict(list)
    for task in Task.objects.filter(thread_id__isnull=False).order_by("task_id"):
        tasks[str(task.thread_id)].append(task)
    claims: dict[str, list[Claim]] = defaultdict(list)
    for claim in Claim.objects.filter(thread_id__isnull=False).order_by("claimed_at"):
        claims[str(claim.thread_id)].append(claim)
    locks = _thread_locks(ids)
    summaries = [_summary(tid, messages[tid], tasks[tid], claims[tid], locks.get(tid, [])) for tid in ids]
    summaries.sort(
        key=lambda s: (s["latest_message_id"] if s["latest_message_id"] is not None else -1, s["thread_id"]),
        reverse=True,
    )
    return summaries


def thread_detail(*, thread_id: str) -> dict[str, Any]:
    messages = list(Message.objects.filter(thread_id=thread_id).order_by("id"))
    tasks = list(Task.objects.filter(thread_id=thread_id).order_by("task_id"))
    claims = list(Claim.objects.filter(thread_id=thread_id).order_by("claimed_at"))
    locks = _thread_locks({thread_id}).get(thread_id, [])
    if not (messages or tasks or claims or locks):
        raise NotFound("thread not found")
    return {
        "thread": _summary(thread_id, messages, tasks, claims, locks),
        "messages": [m.as_wire() for m in messages],
        "tasks": [t.as_wire() for t in tasks],
        "claims": [c.as_wire() for c in claims],
        "locks": [lk.as_wire() for lk in locks],
    }


def messages_recent(*, limit: int = 50) -> list[Message]:
    """The newest messages of the whole hub, newest first (for the humans' overview)."""
    return list(Message.objects.order_by("-id")[:limit])


def hub_stats() -> dict[str, Any]:
    """Counts that summarise the hub: messages, agents, deliveries by state, tasks by status, leases."""
    from django.db.models import Count

    now = timezone.now()
    live = Session.objects.live(settings.ARC_PRESENCE_TTL_SEC).count()
    return {
        "messages": Message.objects.count(),
        "agents": {"live": live, "idle": Session.objects.filter(active=True).count() - live},
        "deliveries": dict(Delivery.objects.values_list("state").annotate(n=Count("id")).values_list("state", "n")),
        "tasks": dict(Task.objects.values_list("status").annotate(n=Count("task_id")).values_list("status", "n")),
        "claims_active": Claim.objects.active(now).count(),
        "locks_active": Lock.objects.active(now).count(),
        "rooms": Room.objects.count(),
    }


def keys_list(*, agent_id: str | None = None, usable_only: bool = True) -> list[AgentKey]:
    rows = AgentKey.objects.usable() if usable_only else AgentKey.objects.all()
    if agent_id:
        rows = rows.filter(agent_id=agent_id)
    return list(rows.order_by("agent_id", "-created_at"))


# ── The humans' dashboard ─────────────────────────────────────────────────


def room_messages(*, name: str, through: int | None = None, limit: int = 100) -> list[Message]:
    """The newest ``limit`` broadcasts in room ``name`` (up to id ``through``), oldest first (as a chat reads)."""
    rows = Message.objects.filter(channel=name, to_agent__isnull=True)
    if through is not None:
        rows = rows.filter(id__lte=through)
    newest = rows.order_by("-id")[:limit]
    return list(reversed(newest))


def waiting_on(*, operator: str, limit: int = 100) -> list[Message]:
    """Messages that expect a reply from the human ``operator`` and have none yet, oldest first.

    Those are: broadcasts and direct messages to the operator whose ``expects_reply`` names
    the operator, and direct messages to the operator that expect a reply from anyone. One
    stops waiting once the operator replied (``reply_to`` it) or another agent claimed the reply.
    """
    answered = Message.objects.filter(reply_to=OuterRef("id"), from_agent=operator)
    to_operator = Q(to_agent__isnull=True) | Q(to_agent=operator)
    rows = (
        Message.objects.filter(
            (Q(expects_reply=operator) & to_operator) | (Q(to_agent=operator) & Q(expects_reply="anyone"))
        )
        .filter(Q(reply_claimed_by__isnull=True) | Q(reply_claimed_by=operator))
        .exclude(Exists(answered))
        .order_by("id")
    )
    return list(rows[:limit])


def deliveries_by_agent(*, limit: int = 500) -> dict[str, dict[str, int]]:
    """Per recipient, how many deliveries are in each state (the dashboard's queues)."""
    from django.db.models import Count

    queues: dict[str, dict[str, int]] = defaultdict(dict)
    counts = Delivery.objects.values_list("agent_id", "state").annotate(n=Count("id")).order_by("agent_id")
    for agent_id, state, n in counts[:limit]:
        queues[agent_id][state] = n
    return dict(queues)


def remote_agents() -> list[RemoteAgent]:
    """The A2A agents elsewhere that the hub keeps as its own (docs/a2a.md, outbound), by name."""
    return list(RemoteAgent.objects.order_by("agent_id"))


@dataclass(frozen=True)
class RemoteWork:
    """A task the bridge is to send to a remote A2A agent (open), or to follow there (sent before a restart)."""

    task_id: int
    agent_id: str
    status: str
    body: str
    context_id: str
    deadline: Any  # its deadline (a datetime), or None
    remote_task_id: str
    attempts: int


def remote_work(names: Iterable[str], *, exclude: Iterable[int] = (), limit: int = 100) -> list[RemoteWork]:
    """The open tasks given to the remote agents ``names``, and their in-progress ones the bridge sent
    (a ``RemoteCall``), oldest first, leaving out ``exclude`` (the tasks the bridge already has in hand)."""
    names = list(names)
    if not names:
        return []
    calls = {c.task_id: c for c in RemoteCall.objects.filter(agent_id__in=names)}
    found = (
        Task.objects.filter(assignee__in=names)
        .filter(Q(status=Task.Status.OPEN) | Q(status=Task.Status.IN_PROGRESS, task_id__in=list(calls)))
        .exclude(task_id__in=list(exclude))
        .order_by("task_id")[:limit]
    )
    tasks = list(found)
    bodies = dict(Message.objects.filter(pk__in=[t.task_id for t in tasks]).values_list("id", "body"))
    out = []
    for task in tasks:
        call = calls.get(task.task_id) if task.status == Task.Status.IN_PROGRESS else None
        out.append(
            RemoteWork(
                task_id=task.task_id,
                agent_id=str(task.assignee),
                status=task.status,
                body=bodies.get(task.task_id, ""),
                context_id=task.thread_id or f"arc-task-{task.task_id}",
                deadline=task.deadline,
                remote_task_id=call.remote_task_id if call else "",
                attempts=call.attempts if call else 0,
            )
        )
    return out


def push_configs(*, task_id: int, owner: str) -> list[PushConfig]:
    return list(PushConfig.objects.filter(task_id=task_id, owner=owner).order_by("created_at", "pk"))


def pushes_open(*, limit: int = 500) -> list[PushConfig]:
    """The webhooks still to be told of their task's next change (oldest tasks first)."""
    return list(PushConfig.objects.filter(done=False).order_by("task_id", "pk")[:limit])


def keys_usable(key_ids: Iterable[str]) -> set[str]:
    """Which of ``key_ids`` are still usable (not revoked, not expired)."""
    return set(AgentKey.objects.usable().filter(prefix__in=list(key_ids)).values_list("prefix", flat=True))
