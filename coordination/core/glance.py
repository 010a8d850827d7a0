"""Reads for the humans' views at a glance (docs/dashboard.md): the task board, the traffic between agents,
activity over time, and everything about one agent.

Each is a bounded number of indexed queries over the database (no second store): a window of time is
found once through the messages' ``ts`` index as the first message id in it, and read from there
through the id-ordered indexes; every list is capped or paged.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import Substr
from django.utils import timezone

from coordination.core.errors import Invalid
from coordination.core.models import AgentKey, Claim, Delivery, Lock, Message, Session, Task

BOARD_COLUMNS = ("open", "in_progress", "done", "failed", "timeout")
FINISHED = ("done", "failed", "timeout")
PAGE = 20  # cards per finished column, a page at a time
UNFINISHED_PAGE = 50  # cards per open or in-progress column, a page at a time
TITLE_CHARS = 140
WINDOWS = {"hour": (timedelta(hours=1), timedelta(minutes=1)), "day": (timedelta(days=1), timedelta(hours=1))}
MAX_EDGES = 300
MAX_NODES = 120
LAG_SAMPLE = 5000
MESSAGES, TASKS, DELIVERIES = Message._meta.db_table, Task._meta.db_table, Delivery._meta.db_table


def first_id_since(since: datetime) -> int | None:
    """The id of the first message at or after ``since`` (the ``ts`` index), ``None`` when there is none."""
    return Message.objects.filter(ts__gte=since).order_by("ts", "id").values_list("id", flat=True).first()


def window_of(name: str) -> tuple[timedelta, timedelta]:
    if name not in WINDOWS:
        raise Invalid(f"window must be one of {', '.join(WINDOWS)}")
    return WINDOWS[name]


# ── The task board ─────────────────────────────────────────────────────────


@dataclass
class Card:
    task: Task
    title: str
    capability: str | None
    overdue: bool


@dataclass
class Column:
    status: str
    count: int
    cards: list[Card]
    page: int = 1
    pages: int = 1


def task_board(
    *, room: str | None = None, assignee: str | None = None, capability: str | None = None, page: int = 1
) -> list[Column]:
    """The tasks as a board, a column per status, newest first, a page at a time (``page``: ``UNFINISHED_PAGE``
    open or in-progress cards a column, ``PAGE`` finished ones). Filters: the task's room, its assignee, the
    capability its request asked for. Seven queries whatever the number of tasks."""
    rows: QuerySet[Task] = Task.objects.all()
    if room:
        rows = rows.filter(channel=room)
    if assignee:
        rows = rows.filter(assignee=assignee)
    if capability:
        asked = Message.objects.filter(kind=Message.Kind.TASK_REQUEST, metadata__to_capability=capability)
        rows = rows.filter(task_id__in=asked.values("id"))
    counts = dict(rows.values_list("status").annotate(n=Count("task_id")).values_list("status", "n"))
    page = max(1, page)
    shown: list[tuple[Column, list[Task]]] = []
    for status in BOARD_COLUMNS:
        count = counts.get(status, 0)
        ordered = rows.filter(status=status).order_by("-task_id")
        size = PAGE if status in FINISHED else UNFINISHED_PAGE
        pages = max(1, -(-count // size))
        at = min(page, pages)
        shown.append((Column(status, count, [], at, pages), list(ordered[(at - 1) * size : at * size])))
    heads = _heads([t.task_id for _, tasks in shown for t in tasks])
    now = timezone.now()
    for column, tasks in shown:
        for task in tasks:
            head, metadata = heads.get(task.task_id, ("", {}))
            overdue = task.status in Task.UNFINISHED and task.deadline is not None and task.deadline < now
            column.cards.append(Card(task, first_line(head), metadata.get("to_capability"), overdue))
    return [column for column, _ in shown]


def _heads(task_ids: list[int]) -> dict[int, tuple[str, dict[str, Any]]]:
    """Each task's request: the start of its body (never all of a long one) and its metadata; one query."""
    rows = (
        Message.objects.filter(pk__in=task_ids)
        .annotate(head=Substr("body", 1, TITLE_CHARS * 2))
        .values_list("id", "head", "metadata")
    )
    return {i: (str(head or ""), metadata if isinstance(metadata, dict) else {}) for i, head, metadata in rows}


def first_line(text: str) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


# ── Traffic between agents ─────────────────────────────────────────────────


@dataclass
class Node:
    agent_id: str
    live: bool
    capabilities: list[str] = field(default_factory=list)
    sent: int = 0
    received: int = 0


@dataclass
class Edge:
    source: str
    target: str
    direct: int = 0
    tasks: int = 0
    results: int = 0

    @property
    def weight(self) -> int:
        return self.direct + self.tasks + self.results


def agent_traffic(*, window: str = "hour") -> tuple[list[Node], list[Edge]]:
    """Live agents and those seen in the window, and who sent whom what within it (direct messages, task
    requests, task results), by count: three queries."""
    span, _ = window_of(window)
    now = timezone.now()
    since = now - span
    ttl = timedelta(seconds=settings.ARC_PRESENCE_TTL_SEC)
    sessions = (
        Session.objects.filter(Q(active=True) | Q(last_seen__gte=since))
        .order_by("-last_seen")
        .values("agent_id", "active", "last_seen", "capabilities")[: MAX_NODES * 3]
    )
    nodes: dict[str, Node] = {}
    for s in sessions:
        node = nodes.setdefault(s["agent_id"], Node(s["agent_id"], False, list(s["capabilities"] or [])))
        node.live = node.live or (s["active"] and s["last_seen"] >= now - ttl)
    start = first_id_since(since)
    edges: dict[tuple[str, str], Edge] = {}
    if start is not None:
        pairs = (
            Message.objects.filter(id__gte=start, to_agent__isnull=False)
            .values("from_agent", "to_agent", "kind")
            .annotate(n=Count("id"))
        )
        for row in pairs:
            pair = (str(row["from_agent"]), str(row["to_agent"]))
            edge = edges.setdefault(pair, Edge(*pair))
            if row["kind"] == Message.Kind.TASK_REQUEST:
                edge.tasks += row["n"]
            elif row["kind"] == Message.Kind.TASK_RESULT:
                edge.results += row["n"]
            else:
                edge.direct += row["n"]
    ranked = sorted(edges.values(), key=lambda e: (-e.weight, e.source, e.target))[:MAX_EDGES]
    for edge in ranked:
        for name in (edge.source, edge.target):
            nodes.setdefault(name, Node(name, False))
        nodes[edge.source].sent += edge.weight
        nodes[edge.target].received += edge.weight
    shown = sorted(nodes.values(), key=lambda n: (not n.live, -(n.sent + n.received), n.agent_id))[:MAX_NODES]
    names = {n.agent_id for n in shown}
    return shown, [e for e in ranked if e.source in names and e.target in names]


# ── Activity over time ─────────────────────────────────────────────────────


@dataclass
class Series:
    label: str
    values: list[float | None]
    total: float = 0


@dataclass
class Activity:
    window: str
    starts: list[datetime]
    messages: Series
    opened: Series
    finished: Series
    lag_ms: Series  # the median delivery lag in each bucket (None where nothing was delivered)
    dead_letters: int
    overdue: int


def activity(*, window: str = "hour", room: str | None = None) -> Activity:
    """Messages, tasks opened and finished, and delivery lag (post → delivered, the median per bucket) over
    the last hour (a bucket a minute) or day (an hour), for the hub or one room; and what stands out now:
    dead letters and overdue tasks. Seven queries, each bounded by the window and counted by the database."""
    span, step = window_of(window)
    now = timezone.now()
    since = now - span
    count = int(span / step)
    starts = [since + step * i for i in range(count)]
    start = first_id_since(since)
    where, params = ("AND channel = %s", [room]) if room else ("", [])
    in_window = "id >= %s " + where
    messages = _counts(_per_bucket(MESSAGES, "ts", in_window, [start, *params], since, step)) if start else {}
    since_db = _db(since)
    opened = _counts(_per_bucket(TASKS, "created_at", "created_at >= %s " + where, [since_db, *params], since, step))
    finished = _counts(
        _per_bucket(TASKS, "completed_at", "completed_at >= %s " + where, [since_db, *params], since, step)
    )
    lags: dict[int, list[float]] = defaultdict(list)
    for index, lag in _lags(since, step, room):
        lags[min(int(index), count - 1)].append(max(0.0, float(lag)))
    lag_values: list[float | None] = [_median(lags[i]) if i in lags else None for i in range(count)]
    dead = Delivery.objects.filter(state=Delivery.State.FAILED)
    overdue = Task.objects.filter(status__in=Task.UNFINISHED, deadline__lt=now)
    if room:
        dead, overdue = dead.filter(message__channel=room), overdue.filter(channel=room)
    known = [v for v in lag_values if v is not None]
    return Activity(
        window=window,
        starts=starts,
        messages=_series("messages", messages.get("", {}), count),
        opened=_series("tasks opened", opened.get("", {}), count),
        finished=_series("tasks finished", finished.get("", {}), count),
        lag_ms=Series("delivery lag, ms (median)", lag_values, _median(known) if known else 0),
        dead_letters=dead.count(),
        overdue=overdue.count(),
    )


def rooms_activity(rooms: list[str], *, window: str = "hour") -> tuple[list[datetime], dict[str, Series]]:
    """Messages per bucket in each of ``rooms`` over the window: one query for them all."""
    span, step = window_of(window)
    since = timezone.now() - span
    count = int(span / step)
    start = first_id_since(since)
    per_room: dict[str, dict[int, int]] = {}
    if start is not None and rooms:
        marks = ", ".join(["%s"] * len(rooms))
        rows = _per_bucket(
            MESSAGES, "ts", f"id >= %s AND channel IN ({marks})", [start, *rooms], since, step, "channel"
        )
        per_room = _counts(rows)
    starts = [since + step * i for i in range(count)]
    return starts, {room: _series("messages", per_room.get(room, {}), count) for room in rooms}


def _db(at: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(at)


def _bucket_sql(column: str) -> str:
    """The SQL for a row's bucket: whole steps (``%s`` seconds) from the window's start (``%s``)."""
    if connection.vendor == "postgresql":
        return f"FLOOR(EXTRACT(EPOCH FROM ({column} - %s)) / %s)::integer"
    return f"CAST((julianday({column}) - julianday(%s)) * 86400.0 / %s AS INTEGER)"


def _per_bucket(
    table: str, column: str, where: str, params: list[Any], since: datetime, step: timedelta, group: str | None = None
) -> list[tuple[Any, int, int]]:
    """``(group, bucket, count)`` rows, counted by the database (``group`` '' when there is none)."""
    label = group or "''"
    grouped = f"{group}, " if group else ""
    sql = (
        f"SELECT {label}, {_bucket_sql(column)} AS bucket, COUNT(*) FROM {table} "  # names, no input
        f"WHERE {where} GROUP BY {grouped}bucket"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_db(since), step.total_seconds(), *params])
        return [(g, int(b), int(n)) for g, b, n in cursor.fetchall() if b is not None]


def _counts(rows: list[tuple[Any, int, int]]) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = defaultdict(dict)
    for group, index, n in rows:
        out[str(group)][index] = out[str(group)].get(index, 0) + n
    return out


def _series(label: str, counts: dict[int, int], count: int) -> Series:
    values: list[float | None] = [0.0] * count
    for index, n in counts.items():
        if index >= 0:
            i = min(index, count - 1)  # (a clock a little ahead: the newest bucket)
            values[i] = (values[i] or 0) + n
    return Series(label, values, float(sum(v or 0 for v in values)))


def _lags(since: datetime, step: timedelta, room: str | None) -> list[tuple[int, float]]:
    """``(bucket, lag in ms)`` of the newest ``LAG_SAMPLE`` deliveries in the window (post → delivered)."""
    if connection.vendor == "postgresql":
        lag = "EXTRACT(EPOCH FROM (d.delivered_at - m.ts)) * 1000.0"
    else:
        lag = "(julianday(d.delivered_at) - julianday(m.ts)) * 86400000.0"
    where, params = ("AND m.channel = %s", [room]) if room else ("", [])
    sql = (
        f"SELECT {_bucket_sql('d.delivered_at')}, {lag} FROM {DELIVERIES} d "
        f"JOIN {MESSAGES} m ON m.id = d.message_id WHERE d.delivered_at >= %s {where} "
        "ORDER BY d.delivered_at DESC LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_db(since), step.total_seconds(), _db(since), *params, LAG_SAMPLE])
        return [(int(b), float(v)) for b, v in cursor.fetchall() if b is not None and b >= 0 and v is not None]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


# ── One agent ──────────────────────────────────────────────────────────────


@dataclass
class AgentPage:
    agent_id: str
    session: Session | None
    live: bool
    keys: list[AgentKey]
    claims: list[Claim]
    locks: list[Lock]
    assigned: list[Task]
    requested: list[Task]
    queue: dict[str, int]
    dead: list[Delivery]
    messages: list[Message]
    timeline: Series
    starts: list[datetime]
    known: bool
    titles: dict[int, str] = field(default_factory=dict)  # each listed task's title (its request's first line)


def agent_page(agent_id: str, *, recent: int = 50) -> AgentPage:
    """Everything about one agent: its presence and capabilities, keys, what it holds (claims, locks, tasks
    assigned and requested), its delivery queue and dead letters, its recent messages and its last hour
    (messages sent and received per minute). Each list capped."""
    now = timezone.now()
    session = Session.objects.filter(agent_id=agent_id).order_by("-active", "-last_seen").first()
    live = bool(
        session and session.active and session.last_seen >= now - timedelta(seconds=settings.ARC_PRESENCE_TTL_SEC)
    )
    unfinished = Task.Status.OPEN, Task.Status.IN_PROGRESS
    assigned = list(Task.objects.filter(assignee=agent_id).order_by(_unfinished_first(unfinished), "-task_id")[:50])
    requested = list(Task.objects.filter(requester=agent_id).order_by(_unfinished_first(unfinished), "-task_id")[:50])
    queue = dict(
        Delivery.objects.filter(agent_id=agent_id)
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    mine = Q(from_agent=agent_id) | Q(to_agent=agent_id)
    messages = list(Message.objects.filter(mine).order_by("-id")[:recent])
    since = now - timedelta(hours=1)
    start = first_id_since(since)
    times = list(Message.objects.filter(mine, id__gte=start).values_list("ts", flat=True)[:20_000]) if start else []
    starts = [since + timedelta(minutes=i) for i in range(60)]
    per_minute = Counter(min(59, int((t - since).total_seconds() // 60)) for t in times if t >= since)
    known = bool(session or assigned or requested or messages or queue)
    return AgentPage(
        agent_id=agent_id,
        session=session,
        live=live,
        keys=list(AgentKey.objects.filter(agent_id=agent_id).order_by("-created_at")[:50]),
        claims=list(Claim.objects.active().filter(owner_agent_id=agent_id).order_by("claim_key")[:100]),
        locks=list(Lock.objects.active().filter(agent_id=agent_id).order_by("file_path")[:100]),
        assigned=assigned,
        requested=requested,
        queue=queue,
        dead=list(
            Delivery.objects.filter(agent_id=agent_id, state=Delivery.State.FAILED)
            .select_related("message")
            .order_by("-message_id")[:50]
        ),
        messages=messages,
        timeline=Series("messages sent and received", [float(per_minute.get(i, 0)) for i in range(60)], len(times)),
        starts=starts,
        known=known,
        titles={i: first_line(head) for i, (head, _) in _heads([t.task_id for t in assigned + requested]).items()},
    )


def _unfinished_first(unfinished: tuple[str, ...]) -> Any:
    from django.db.models import Case, IntegerField, Value, When

    return Case(When(status__in=unfinished, then=Value(0)), default=Value(1), output_field=IntegerField())
