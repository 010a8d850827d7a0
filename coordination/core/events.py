"""Real-time events: services publish after commit, waiters in this process listen.

Every state change a client may wait for (a message, a claim, a lock, a task,
presence, a delivery) is published by the service that made it, through
``publish``, which defers to ``transaction.on_commit``: nothing is announced
that could still roll back. Events travel over the channel layer (in-memory in
one process, Redis across several) to one group; each serving process keeps
one channel in that group and a ``Dispatcher`` hands every event to the local
listeners (long-polls, SSE streams, WebSockets), so an event costs one
channel-layer message per process however many clients wait.

Message events carry ``prev_id``, the id of the message committed just before
(messages commit in id order: SQLite has one writer, PostgreSQL posts hold an
advisory lock). From those the dispatcher knows since when it has seen every
message without a break and stamps each event with it (``chain_start``); a
reader uses that to trust the payload or read a gap from the database (see
``coordination.core.feeds``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger("arc.events")

GROUP = "arc.events"
# What every listener of a stopping process hears (``Dispatcher.drain``): answer now, clients reconnect.
DRAINING: dict[str, Any] = {"event": "hub", "action": "draining"}
# Bigger message payloads are not copied through the channel layer; readers fetch them.
MAX_INLINE_PAYLOAD = 64 * 1024

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def publish(event: str, data: dict[str, Any]) -> None:
    """Announce ``event`` once the current transaction commits (at once outside a transaction)."""
    message = {"type": "arc.event", "event": event, **data}
    transaction.on_commit(lambda: _send(message))


def publish_message(wire: dict[str, Any], *, prev_id: int) -> None:
    """Announce a committed message; ``prev_id`` is the id committed just before it."""
    data: dict[str, Any] = {
        "id": wire["id"],
        "prev_id": prev_id,
        "from_agent": wire["from_agent"],
        "to_agent": wire["to_agent"],
        "channel": wire["channel"],
        "thread_id": wire["thread_id"],
        "reply_to": wire["reply_to"],
    }
    if len(json.dumps(wire, ensure_ascii=False)) <= MAX_INLINE_PAYLOAD:
        data["message"] = wire
    publish("message", data)


def bind_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Remember the serving event loop, so events published from worker threads are sent from it."""
    global _loop
    with _loop_lock:
        _loop = loop


def _send(message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    loop = _loop
    if loop is not None and loop.is_running():
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(_group_send(layer, message))
        else:
            # Fire and forget from a worker thread: the request does not wait for the fan-out.
            asyncio.run_coroutine_threadsafe(_group_send(layer, message), loop)
        return
    if loop is not None and not loop.is_closed():
        # The serving loop has stopped (the process is shutting down): a worker thread still
        # finishing a request must not wait on it (async_to_sync would wait for the stopped loop
        # forever, and the process would never exit). Readers' gap checks recover the event.
        log.debug("not publishing %s event: the serving loop has stopped", message.get("event"))
        return
    # No serving loop in this process (a management command, a test): send inline.
    async_to_sync(_group_send)(layer, message)


async def _group_send(layer: Any, message: dict[str, Any]) -> None:
    try:
        await layer.group_send(GROUP, message)
    except Exception:  # a lost event is recovered by readers' gap checks; never fail the caller
        log.exception("could not publish %s event", message.get("event"))


Listener = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Route:
    """Which events a listener wants, so that the dispatcher calls it only for those.

    Messages: broadcasts in ``rooms`` (``None``: every room; empty: none) and direct
    messages to ``agent_id``; ``every_message`` for all of them. Other events: by kind;
    ``room`` events (a room closed or reopened) also reach the readers of that room.
    A listener still filters what it is handed; the route only spares it the rest,
    so a thousand idle readers of other rooms cost nothing per post.
    """

    rooms: frozenset[str] | None = None
    agent_id: str | None = None
    every_message: bool = False
    kinds: frozenset[str] = frozenset()


class _Routes:
    """The dispatcher's index from an event to the listeners that want it."""

    def __init__(self) -> None:
        self.everything: set[Listener] = set()  # listeners without a route
        self.every_message: set[Listener] = set()
        self.all_rooms: set[Listener] = set()
        self.room: dict[str, set[Listener]] = defaultdict(set)
        self.direct: dict[str, set[Listener]] = defaultdict(set)
        self.kind: dict[str, set[Listener]] = defaultdict(set)

    def buckets(self, listener: Listener, route: Route | None) -> list[set[Listener]]:
        if route is None:
            return [self.everything]
        out = [self.kind[k] for k in route.kinds]
        if route.every_message:
            out.append(self.every_message)
        else:
            if route.rooms is None:
                out.append(self.all_rooms)
            else:
                out.extend(self.room[r] for r in route.rooms)
            if route.agent_id is not None:
                out.append(self.direct[route.agent_id])
        return out

    def targets(self, event: dict[str, Any]) -> set[Listener]:
        found = set(self.everything)
        if event.get("event") == "message":
            found |= self.every_message
            to_agent = event.get("to_agent")
            if to_agent is None:
                found |= self.all_rooms
                found |= self.room.get(str(event.get("channel")), set())
            else:
                found |= self.direct.get(str(to_agent), set())
        else:
            found |= self.kind.get(str(event.get("event")), set())
            if event.get("event") == "room":
                # A room closing or reopening reaches every reader of that room, whatever
                # kinds it asked for: it tells them to stop waiting there (or to go on).
                found |= self.every_message
                found |= self.all_rooms
                found |= self.room.get(str(event.get("channel")), set())
        return found


class Dispatcher:
    """This process's one subscription to the event group, fanning events out to local listeners.

    Listeners are plain callbacks run on the event loop; they must not block
    (they put the event on their own queue or set a future).
    """

    def __init__(self) -> None:
        self._listeners: dict[Listener, list[set[Listener]]] = {}
        self._routes = _Routes()
        # The message chain this process has seen without a break: every message with an
        # id in (chain_start, last_id] reached this dispatcher.
        self._chain_start: int | None = None
        self._last_id: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.draining = False

    async def add(self, listener: Listener, route: Route | None = None) -> None:
        """Register ``listener`` (for the events ``route`` names; all without one).

        Returns once this process is subscribed: no event can be missed after.
        """
        buckets = self._routes.buckets(listener, route)
        for bucket in buckets:
            bucket.add(listener)
        self._listeners[listener] = buckets
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            bind_loop(loop)
            self._chain_start = self._last_id = None  # a new subscription has seen nothing yet
            self._ready = asyncio.Event()
            self._task = loop.create_task(self._run(self._ready))
        assert self._ready is not None
        await self._ready.wait()
        if self.draining:
            listener(DRAINING)  # came in while the process stops: told at once

    def drain(self) -> None:
        """The process is stopping: tell every listener (whatever its route), and every later one."""
        self.draining = True
        for listener in list(self._listeners):
            try:
                listener(DRAINING)
            except Exception:
                log.exception("event listener failed")

    def remove(self, listener: Listener) -> None:
        for bucket in self._listeners.pop(listener, []):
            bucket.discard(listener)

    def deliver(self, message: dict[str, Any]) -> None:
        """Hand ``message`` to the listeners that want it (what arrives from the group, or a local finding)."""
        for listener in self._routes.targets(message):
            try:
                listener(message)
            except Exception:
                log.exception("event listener failed")

    @property
    def listener_count(self) -> int:
        return len(self._listeners)

    def _stamp_chain(self, event: dict[str, Any]) -> None:
        """Stamp a message event with ``chain_start``: from there to it, this process saw every message."""
        event_id, prev_id = int(event["id"]), int(event.get("prev_id", -1))
        if self._last_id is None or event_id > self._last_id:
            if self._last_id is None or prev_id != self._last_id:
                self._chain_start = prev_id  # a break (or the first event): vouch only from here
            self._last_id = event_id
            event["chain_start"] = self._chain_start
        else:
            event["chain_start"] = prev_id  # a late event (another worker's) vouches for itself only

    @staticmethod
    async def _rejoin(layer: Any, channel: str, every_sec: float = 3600.0) -> None:
        while True:
            await asyncio.sleep(every_sec)
            try:
                await layer.group_add(GROUP, channel)
            except Exception:
                log.exception("could not rejoin the event group; retrying later")

    async def _run(self, ready: asyncio.Event) -> None:
        layer = get_channel_layer()
        assert layer is not None, "CHANNEL_LAYERS must be configured"
        channel = await layer.new_channel("arc.dispatch.")
        await layer.group_add(GROUP, channel)
        ready.set()
        # Channel layers forget group members after group_expiry (a day on Redis): rejoin hourly.
        rejoin = asyncio.get_running_loop().create_task(self._rejoin(layer, channel))
        try:
            while True:
                try:
                    message = await layer.receive(channel)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("event receive failed; retrying")
                    await asyncio.sleep(0.5)
                    continue
                if message.get("event") == "message":
                    self._stamp_chain(message)
                self.deliver(message)
        finally:
            rejoin.cancel()
            try:
                await layer.group_discard(GROUP, channel)
            except Exception:  # the layer may already be gone at shutdown
                log.debug("group_discard failed at shutdown", exc_info=True)


dispatcher = Dispatcher()
