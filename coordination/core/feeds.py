"""Waiting on the hub: ordered, gap-free message feeds woken by push, shared by every door that waits.

A ``MessageFeed`` follows the hub's messages in id order for one reader (an
agent's view, a room, a thread). It subscribes to this process's event
dispatcher *before* reading the backlog from the database, so nothing can fall
between the two. Afterwards only message events the reader may see reach it;
the dispatcher stamps each with ``chain_start``, the id from which it has seen
every message without a break, so a feed whose cursor is at or past it knows it
missed nothing and uses the payload as is. Anything else (a lost event, another
worker's post not yet seen, a payload too large to inline) makes the feed read
the gap from the database.

Other events (claims, locks, tasks, presence, deliveries) are passed through
to readers that asked for them, best-effort and unordered. A ``room`` event (a
room closed or reopened) reaches every reader that follows that room, asked for
or not: it is how a reader learns to stop waiting there. It never moves the
cursor, so it cannot cost a message.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async

from coordination.core import events, selectors, services
from coordination.core.access import Identity
from coordination.core.errors import Invalid, NotFound

log = logging.getLogger("arc.feeds")
_background: set[asyncio.Task[None]] = set()  # delivery records being written after an answer left


@dataclass
class FeedFilter:
    """Which messages a reader sees. ``agent_id`` set: Arc's event feed (broadcasts + DMs to it)."""

    agent_id: str | None = None
    channel: str | None = None
    thread_id: str | None = None
    rooms: frozenset[str] = frozenset()
    exclude_self: bool = False
    broadcast_only: bool = False

    def matches(self, m: dict[str, Any]) -> bool:
        to_agent = m.get("to_agent")
        if self.broadcast_only and to_agent is not None:
            return False
        if self.agent_id is not None and to_agent is not None and to_agent != self.agent_id:
            return False
        if self.channel is not None and m.get("channel") != self.channel:
            return False
        if self.thread_id is not None and m.get("thread_id") != self.thread_id:
            return False
        if self.rooms and to_agent is None and m.get("channel") not in self.rooms:
            return False  # rooms narrow broadcasts; direct messages to the reader always pass
        return not (self.exclude_self and self.agent_id is not None and m.get("from_agent") == self.agent_id)

    @classmethod
    def for_agent(
        cls,
        who: Identity,
        agent_id: str | None,
        *,
        channel: str | None = None,
        thread_id: str | None = None,
        rooms: Iterable[str] = (),
        exclude_self: bool = False,
    ) -> FeedFilter:
        """An agent's feed as ``who`` may read it: as its own agent, within its key's rooms (narrowed by ``rooms``)."""
        agent_id = who.act_as(agent_id, "agent_id")
        if not agent_id:
            raise Invalid("agent_id query parameter is required")
        who.require_room(channel)
        return cls(
            agent_id=agent_id,
            channel=channel,
            thread_id=thread_id,
            rooms=who.visible_rooms(rooms),
            exclude_self=exclude_self,
        )

    @classmethod
    def for_room(cls, who: Identity, *, channel: str | None, thread_id: str | None) -> FeedFilter:
        """A room's or a thread's broadcasts (Arc's ``GET /v1/messages``) as ``who`` may read them."""
        if not channel and not thread_id:
            raise Invalid("channel or thread_id query parameter is required")
        who.require_room(channel)
        return cls(channel=channel, thread_id=thread_id, rooms=who.rooms, broadcast_only=True)

    def follows_room(self, name: str) -> bool:
        """Can broadcasts in room ``name`` reach this reader (its channel and rooms allow it)?"""
        if self.channel is not None and self.channel != name:
            return False
        return not self.rooms or name in self.rooms

    def route(self, event_types: frozenset[str] = frozenset()) -> events.Route:
        """The events this reader can possibly want, for the dispatcher's index."""
        if self.agent_id is None and not self.broadcast_only:
            return events.Route(every_message=True, kinds=event_types)
        rooms: frozenset[str] | None = None
        if self.channel is not None:
            rooms = frozenset({self.channel}) if not self.rooms or self.channel in self.rooms else frozenset()
        elif self.rooms:
            rooms = self.rooms
        return events.Route(rooms=rooms, agent_id=None if self.broadcast_only else self.agent_id, kinds=event_types)

    def query(self, *, after: int, through: int | None, limit: int) -> list[dict[str, Any]]:
        rows = selectors.messages_feed(
            agent_id=self.agent_id,
            channel=self.channel,
            thread_id=self.thread_id,
            rooms=self.rooms,
            exclude_self=self.exclude_self,
            broadcast_only=self.broadcast_only,
            after=after,
            through=through,
            limit=limit,
        )
        return [m.as_wire() for m in rows]


@dataclass
class MessageFeed:
    filter: FeedFilter
    cursor: int
    limit: int = 100
    event_types: frozenset[str] = frozenset()
    _queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    _started: bool = False
    # The serving process is stopping (``events.DRAINING``): ``next`` waits no more; answer and end.
    draining: bool = False

    async def __aenter__(self) -> MessageFeed:
        await events.dispatcher.add(self._on_event, self.filter.route(self.event_types))
        self._started = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        events.dispatcher.remove(self._on_event)

    def _on_event(self, event: dict[str, Any]) -> None:
        """Runs on the loop for every event of the process: only what this reader sees wakes it.

        Message events carry the routing fields (sender, recipient, room, thread), so a
        reader filters without the payload; an idle reader costs one call per message.
        """
        kind = event.get("event")
        if event is events.DRAINING:
            self.draining = True
            self._queue.put_nowait(event)
        elif kind == "message":
            if self.filter.matches(event):
                self._queue.put_nowait(event)
        elif kind == "room":
            if self.filter.follows_room(str(event.get("channel"))):
                self._queue.put_nowait(event)
        elif kind in self.event_types:
            self._queue.put_nowait(event)

    async def backlog(self) -> list[dict[str, Any]]:
        """Messages after the cursor already in storage (up to ``limit``); advances the cursor."""
        rows, self.cursor = await sync_to_async(_read_after)(self.filter, self.cursor, self.limit)
        return rows

    async def next(self, timeout: float | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Wait up to ``timeout`` seconds (``None``: forever) for news.

        Returns ``(messages, other_events)``; both empty when the time ran out.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.draining:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return [], []
            try:
                event = await asyncio.wait_for(self._queue.get(), remaining)
            except TimeoutError:
                return [], []
            messages, others = await self._take([event, *self._drain()])
            if messages or others:
                return messages, others
        return [], [events.DRAINING]

    def _drain(self) -> Iterable[dict[str, Any]]:
        while not self._queue.empty():
            yield self._queue.get_nowait()

    async def _take(self, batch: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        messages: list[dict[str, Any]] = []
        others: list[dict[str, Any]] = []
        for event in batch:
            if event is events.DRAINING:
                continue  # ``draining`` says it; ``next`` returns it once nothing else is left
            if event.get("event") != "message":
                others.append(event)
                continue
            event_id = int(event["id"])
            if event_id <= self.cursor:
                continue  # already read (from the backlog or an earlier gap read)
            # The dispatcher saw every message from chain_start on; those it did not pass
            # to us were not ours to see. So from a cursor at or past chain_start nothing
            # is missing, and the payload can be used as it is.
            if self.cursor >= int(event.get("chain_start", event_id)) and "message" in event:
                self.cursor = event_id
                messages.append(event["message"])
                continue
            # A gap, or a payload left out: the database is the truth.
            messages.extend(await self.backlog())
        return messages, others


def closes_room(event: dict[str, Any], name: str) -> bool:
    """Is ``event`` the news that room ``name`` closed?"""
    return event.get("event") == "room" and event.get("channel") == name and event.get("action") == "closed"


def _read_after(flt: FeedFilter, cursor: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Visible messages after ``cursor`` and the new cursor.

    The hub's newest id is read first: messages commit in id order, so every
    message up to it is already visible to the query that follows.
    """
    newest = selectors.message_newest_id()
    if newest <= cursor:
        return [], cursor
    rows = flt.query(after=cursor, through=newest, limit=limit)
    if len(rows) == limit:
        return rows, int(rows[-1]["id"])
    return rows, newest


class DeliveryMarker:
    """Records what a feed handed to its agent (delivery truth), in batches.

    Direct messages handed out become ``delivered``; a feed that is the agent's
    whole view (no room or thread filter) also raises the agent's cursor, which
    is how broadcasts count as delivered. A reader hands its records over at most
    every ``FLUSH_SEC``; what every reader of this loop hands over while a write is
    under way is written together by the next one (``_GroupWrite``): a broadcast
    shown to 200 streaming agents costs two writes, not 200.
    """

    FLUSH_SEC = 0.25

    def __init__(self, flt: FeedFilter) -> None:
        self.agent_id = flt.agent_id
        self.whole_feed = flt.agent_id is not None and not (flt.channel or flt.thread_id or flt.rooms)
        self._ids: list[int] = []
        self._through = 0
        self._last_flush = 0.0

    @property
    def dirty(self) -> bool:
        return bool(self._ids) or self._through > 0

    def note(self, rows: list[dict[str, Any]], cursor: int) -> None:
        if self.agent_id is None:
            return
        self._ids.extend(int(r["id"]) for r in rows if r.get("to_agent") == self.agent_id)
        if self.whole_feed:
            self._through = max(self._through, cursor)

    async def flush(self, *, force: bool = False) -> None:
        """Hand the records over; ``force``: now, and return once they are written."""
        if self.agent_id is None or not self.dirty:
            return
        if not force and time.monotonic() - self._last_flush < self.FLUSH_SEC:
            return
        ids, through = self._ids, self._through
        self._ids, self._through = [], 0
        self._last_flush = time.monotonic()
        await _GroupWrite.of_this_loop().write(self.agent_id, ids, through, wait=force)


class _GroupWrite:
    """One loop's delivery records, written by whichever reader comes when no write is under way.

    That reader (the leader) writes what is pending, then what arrived meanwhile, until
    nothing is left. The write runs in the leader's own task and context, as a reader's
    own write would: no timer, no task of its own. A reader that must know its records
    are written waits for its batch; if the leader is cancelled first (its client went
    away), the batch goes back to pending and a waiter takes over. A failed write fails
    its waiters' flushes, as their own write would have, and the leader goes on.
    """

    _loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _GroupWrite] = weakref.WeakKeyDictionary()

    def __init__(self) -> None:
        self._pending: dict[str, tuple[set[int], int]] = {}
        self._waiters: list[asyncio.Future[None]] = []  # of the pending records: done once written
        self._leader: asyncio.Future[None] | None = None  # set while a reader writes; done when it stops

    @classmethod
    def of_this_loop(cls) -> _GroupWrite:
        loop = asyncio.get_running_loop()
        if (group := cls._loops.get(loop)) is None:
            group = cls._loops[loop] = cls()
        return group

    async def write(self, agent_id: str, ids: list[int], through: int, *, wait: bool) -> None:
        known_ids, known_through = self._pending.get(agent_id, (set(), 0))
        self._pending[agent_id] = (known_ids | set(ids), max(known_through, through))
        mine: asyncio.Future[None] | None = None
        if wait:
            mine = asyncio.get_running_loop().create_future()
            mine.add_done_callback(_retrieved)
            self._waiters.append(mine)
        if self._leader is None:
            await self._lead()
        while mine is not None and not mine.done():
            if self._leader is None:
                await self._lead()
            else:
                await asyncio.wait({mine, self._leader}, return_when=asyncio.FIRST_COMPLETED)
        if mine is not None:
            mine.result()

    async def _lead(self) -> None:
        self._leader = leader = asyncio.get_running_loop().create_future()
        try:
            while self._pending:
                pending, waiters = self._pending, self._waiters
                self._pending, self._waiters = {}, []
                entries = {agent: (sorted(ids), through or None) for agent, (ids, through) in pending.items()}
                try:
                    await sync_to_async(services.deliveries_mark_delivered_many)(entries)
                except asyncio.CancelledError:
                    self._requeue(pending, waiters)  # (the thread may still write it: a second write changes nothing)
                    raise
                except Exception as exc:  # noqa: BLE001 - the waiters' flushes raise it
                    log.warning("could not record deliveries for %d agents: %s", len(entries), exc)
                    for waiter in waiters:
                        waiter.set_exception(exc)
                    continue
                for waiter in waiters:
                    waiter.set_result(None)
        finally:
            self._leader = None
            leader.set_result(None)

    def _requeue(self, pending: dict[str, tuple[set[int], int]], waiters: list[asyncio.Future[None]]) -> None:
        for agent, (ids, through) in self._pending.items():
            known_ids, known_through = pending.get(agent, (set(), 0))
            pending[agent] = (known_ids | ids, max(known_through, through))
        self._pending, self._waiters = pending, [*waiters, *self._waiters]


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # its waiter raises it; if the waiter is gone, the leader has logged it


class Presence:
    """Wakes a waiter when any agent's presence changes (session opened, closed or expired)."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Presence:
        await events.dispatcher.add(self._on_event, events.Route(rooms=frozenset(), kinds=frozenset({"presence"})))
        return self

    async def __aexit__(self, *exc: object) -> None:
        events.dispatcher.remove(self._on_event)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("event") in ("presence", "hub"):
            self._changed.set()  # (a draining process answers its waiters now)

    async def changed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a change; ``False`` when none came."""
        if timeout <= 0:
            return False
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        self._changed.clear()
        return True


def room_closed(name: str) -> dict[str, Any] | None:
    """Room ``name`` as on the wire if it is closed; ``None`` if it is open or does not exist (yet)."""
    try:
        room = selectors.room_get(name)
    except NotFound:
        return None
    return room.as_wire() if room.closed_at is not None else None


async def long_poll(
    flt: FeedFilter,
    since_id: int,
    limit: int,
    timeout: float,
    marker: DeliveryMarker | None,
    *,
    room: str | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """Messages after ``since_id``, waiting up to ``timeout`` s for the first; and is ``room`` closed?

    The one long-poll every door waits with (``/v1/events``, ``/v1/messages``, MCP's poll).
    A poll on a ``room`` (404 if unknown) that is closed, or closes while it waits,
    answers at once with what it has: nothing more will come there. What it hands out
    is recorded by ``marker`` right after the answer leaves (the reader does not wait).
    """
    deadline = time.monotonic() + timeout
    async with MessageFeed(flt, cursor=since_id, limit=limit) as feed:
        # Read once subscribed: a close from now on wakes the wait, an earlier one shows here.
        closed = room is not None and await sync_to_async(_room_closed_or_missing)(room)
        rows = await feed.backlog()
        while not rows and not closed and not feed.draining and (left := deadline - time.monotonic()) > 0:
            rows, others = await feed.next(left)
            if room is not None and any(closes_room(event, room) for event in others):
                closed = True
                rows += await feed.backlog()  # up to the closing notice, if its event is still on the way
            elif room is not None and rows:
                # The closing notice is announced just before its room event: look, so a poll
                # woken by it says the room is closed rather than answering the next poll.
                closed = await sync_to_async(_room_closed_or_missing)(room)
        if marker is not None and rows:
            marker.note(rows, feed.cursor)
            task = asyncio.get_running_loop().create_task(marker.flush(force=True))
            _background.add(task)
            task.add_done_callback(_background.discard)
        return rows, closed


async def background_settled() -> None:
    """Wait until the delivery records this loop's long-polls write after answering are written (for tests, shutdown).

    Only this loop's writes: a task of another loop (a test's, since closed) can never finish here.
    """
    loop = asyncio.get_running_loop()
    while True:
        for task in list(_background):
            if task.get_loop() is not loop and (task.done() or task.get_loop().is_closed()):
                _background.discard(task)
        mine = [task for task in _background if task.get_loop() is loop]
        if not mine:
            return
        await asyncio.wait(mine)


def _room_closed_or_missing(name: str) -> bool:
    return selectors.room_get(name).closed_at is not None  # NotFound for an unknown room


async def gather(
    who: Identity, question_ids: list[int], *, max_replies: int, timeout: float, room: str | None = None
) -> tuple[list[dict[str, Any]], bool, bool]:
    """Up to ``max_replies`` replies to ``question_ids`` the reader may see, waiting up to
    ``timeout`` seconds for them (less if ``room``, where the question was asked, closes).
    Returns ``(replies, complete, room_closed)``.

    Woken by every message replying to one of the questions (the events' ``reply_to``
    routing field), never by a timer.
    """
    wanted = set(question_ids)
    woken = asyncio.Event()
    closed = draining = False

    def on_event(event: dict[str, Any]) -> None:
        nonlocal closed, draining
        if event.get("event") == "message" and event.get("reply_to") in wanted:
            woken.set()
        elif event is events.DRAINING:
            draining = True
            woken.set()
        elif room is not None and closes_room(event, room):
            closed = True
            woken.set()

    def visible() -> list[dict[str, Any]]:
        rows = selectors.replies_to(wanted, limit=max_replies * 4 + 50)
        return [m for m in rows if who.may_read(m)][:max_replies]

    deadline = time.monotonic() + timeout
    await events.dispatcher.add(on_event, events.Route(every_message=True))
    try:
        replies = await sync_to_async(visible)()  # after subscribing: no reply can fall between
        while len(replies) < max_replies and (left := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(woken.wait(), left)
            except TimeoutError:
                break
            woken.clear()
            replies = await sync_to_async(visible)()
            if closed or draining:
                break  # nobody can reply in a closed room; a stopping process answers now
    finally:
        events.dispatcher.remove(on_event)
    return replies, len(replies) >= max_replies, closed
