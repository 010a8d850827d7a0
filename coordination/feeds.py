"""Ordered, gap-free message feeds woken by push (long-poll, SSE and WebSocket share this).

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
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async

from coordination import events, selectors, services


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
        if kind == "message":
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
        while True:
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

    def _drain(self) -> Iterable[dict[str, Any]]:
        while not self._queue.empty():
            yield self._queue.get_nowait()

    async def _take(self, batch: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        messages: list[dict[str, Any]] = []
        others: list[dict[str, Any]] = []
        for event in batch:
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
    is how broadcasts count as delivered. Writes at most every ``FLUSH_SEC``.
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
        if self.agent_id is None or not self.dirty:
            return
        if not force and time.monotonic() - self._last_flush < self.FLUSH_SEC:
            return
        ids, through = self._ids, self._through
        self._ids, self._through = [], 0
        self._last_flush = time.monotonic()
        await sync_to_async(services.deliveries_mark_delivered)(
            agent_id=self.agent_id, message_ids=ids, through_id=through or None
        )


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
        if event.get("event") == "presence":
            self._changed.set()

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
