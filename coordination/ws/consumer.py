"""The WebSocket door, ``/v1/ws`` (docs/websocket.md): one consumer per socket, thin.

Each client frame is read (``coordination.ws.frames``), handed to one operation
(``coordination.core.operations``, as every door) through ``database_sync_to_async``
and answered with one frame; domain errors become ``error`` frames and never close
the socket.

A registered socket follows its agent's feed (broadcasts plus its direct
messages) with the same gap-free ``MessageFeed`` as ``/v1/stream``, in a task of
its own: messages are pushed in id order as ``message``/``task``/``result``
frames, subscribed state changes as ``event`` frames (and, unasked, a ``room`` event
when a room it follows closes or reopens), and what was handed out is recorded as
delivered. ``subscribe`` replaces that feed (rooms, event types,
resume point) without a gap or a duplicate.

Idle sockets: after ``ARC_WS_PING_SEC`` without a client frame the hub sends
``{"type": "ping"}``; after ``ARC_WS_IDLE_SEC`` it closes the socket with 4408.
The agent's session is left as it is: nothing touches it any more, so presence
expires by ``ARC_PRESENCE_TTL_SEC`` like any silent agent's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from coordination.core import access, events, selectors, services
from coordination.core import operations as ops
from coordination.core.errors import ArcError, Conflict, Invalid, NotFound, Unauthorized
from coordination.core.feeds import DeliveryMarker, FeedFilter, MessageFeed
from coordination.core.models import Session, iso
from coordination.ws import frames

log = logging.getLogger("arc.ws")

CLOSE_UNAUTHORIZED = 4401  # the key was revoked or expired
CLOSE_FORBIDDEN = 4403
CLOSE_IDLE = 4408
CLOSE_NO_ROUTE = 4404
CLOSE_INTERNAL = 1011
# Client frames other than heartbeat refresh the agent's presence at most this often.
TOUCH_SEC = 10.0

Frame = dict[str, Any]
FrameId = str | int | None


@dataclass(frozen=True)
class Subscription:
    """What a registered socket is pushed: its agent's messages (``rooms`` narrows broadcasts) and events."""

    since_id: int
    rooms: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    exclude_self: bool = True

    def shows(self, message: dict[str, Any]) -> bool:
        """Direct messages to the agent always come through; broadcasts only from the subscribed rooms."""
        return message.get("to_agent") is not None or not self.rooms or message.get("channel") in self.rooms


# Sockets hear the hub's events through the process's one dispatcher (coordination.core.events), so a
# consumer needs no channel of its own on the channel layer: an alias no layer has gives it none.
NO_CHANNEL_LAYER = "arc.none"


class HubConsumer(AsyncWebsocketConsumer):
    channel_layer_alias = NO_CHANNEL_LAYER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.agent_id: str | None = None
        self.session_id: str | None = None
        # Who the socket acts as; None until a key arrives when the upgrade carried none and one is needed.
        self.identity: access.Identity | None = None
        self._feed_task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._key_watch: asyncio.Task[None] | None = None
        # Held while the pump pushes a batch, so replacing the feed never cuts a batch in half.
        self._pushing = asyncio.Lock()
        self._resume_id = 0  # every visible message up to this id has been pushed
        self._key: str | None = None  # the idempotency key of the frame being handled
        self._last_heard = time.monotonic()
        self._last_ping = 0.0
        self._last_touch = 0.0
        self._handlers: dict[str, Callable[[Frame, FrameId], Awaitable[None]]] = {
            "register": self._register,
            "deregister": self._deregister,
            "discover": self._discover,
            "post": self._post,
            "delegate": self._delegate,
            "result": self._result,
            "status": self._status,
            "broadcast": self._broadcast,
            "subscribe": self._subscribe,
            "lease": self._lease,
            "ack": self._ack,
            "nack": self._nack,
            "heartbeat": self._heartbeat,
        }

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:  # however the connection ends (disconnect, server cancel), stop our tasks
            await self._teardown()

    # ── Connection ────────────────────────────────────────────────────────

    async def connect(self) -> None:
        client = self.scope.get("client")
        self.client = client[0] if client else None
        authorization = dict(self.scope.get("headers") or {}).get(b"authorization", b"").decode("latin-1") or None
        try:
            self.identity = await database_sync_to_async(access.resolve)(
                authorization=authorization, client=self.client
            )
        except Unauthorized as exc:
            if authorization:
                # A bad, revoked or expired key on the upgrade: accepted, told why, closed with 4401,
                # as every other door says 401 (a refused handshake would read as 403).
                await self.accept()
                await self._send(frames.error_frame(exc, None))
                await self.close(code=CLOSE_UNAUTHORIZED)
                return
            self.identity = None  # no key yet: the first frame must be a register carrying one
        except ArcError:
            await self.close(code=CLOSE_FORBIDDEN)  # remote while remote access is off: 403 at the handshake
            return
        await self.accept()
        self._last_heard = time.monotonic()
        self._watchdog = asyncio.create_task(self._watch_idle())
        self._watch_key()

    async def disconnect(self, code: int) -> None:
        await self._teardown()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self._last_heard = time.monotonic()
        frame_id: FrameId = None
        try:
            frame = frames.decode(text_data, limit=settings.ARC_MAX_REQUEST_BYTES)
            frame_id = frames.correlation_id(frame)
            kind = frames.frame_type(frame)
            data = frames.fields(kind, frame, agent_id=self.agent_id)
            self._key = frames.idempotency_key(frame)
            if self.identity is None and kind != "register":
                raise Unauthorized(
                    "this hub needs an agent key: send it in the upgrade (Authorization: Bearer) or in register"
                )
            if kind != "heartbeat":
                await self._touch(force=False)
            await self._handlers[kind](data, frame_id)
        except ArcError as exc:
            await self._send(frames.error_frame(exc, frame_id))
        except Exception:  # the edge: a failure is an error frame, never a dropped socket
            log.exception("websocket frame failed")
            await self._send(frames.internal_error_frame(frame_id))

    def _who(self) -> access.Identity:
        if self.identity is None:
            raise Unauthorized("this hub needs an agent key")
        return self.identity

    async def _send(self, frame: Frame) -> None:
        await self.send(text_data=json.dumps(frame, ensure_ascii=False))

    async def _touch(self, *, force: bool) -> None:
        if self.agent_id is None or (not force and time.monotonic() - self._last_touch < TOUCH_SEC):
            return
        self._last_touch = time.monotonic()
        await database_sync_to_async(services.session_touch)(agent_id=self.agent_id)

    # ── Client frames: fields (done) → one operation → one reply ──────────

    async def _register(self, data: Frame, frame_id: FrameId) -> None:
        data = frames.shape("register", data)
        key = data.pop("key", None)
        if key is not None:
            self.identity = await database_sync_to_async(access.resolve)(
                authorization=f"Bearer {key}", client=self.client
            )
            self._watch_key()
        if self.identity is None:
            raise Unauthorized(
                "this hub needs an agent key: send it in the upgrade (Authorization: Bearer) or in register"
            )
        agent_id = self.identity.act_as(data.get("agent_id"), "agent_id")
        if not agent_id:
            raise Invalid("agent_id is required (or a key that says who you are)")
        if self.agent_id is not None and agent_id != self.agent_id:
            raise Conflict(f"this socket is registered as {self.agent_id}; send deregister first")
        session, newest = await database_sync_to_async(_session_open)(self.identity, agent_id, data)
        first = self.agent_id is None
        self.agent_id, self.session_id = session["agent_id"], session["session_id"]
        self._last_touch = time.monotonic()
        if not first and "since_id" not in data:  # registered again: refresh the session, keep the feed
            await self._send(frames.reply("registered", frame_id, session=session, since_id=self._resume_id))
            return
        await self._replace_feed(
            Subscription(since_id=data.get("since_id", newest), rooms=self.identity.rooms),
            frames.reply("registered", frame_id, session=session),
        )

    async def _deregister(self, data: Frame, frame_id: FrameId) -> None:
        agent_id, session_id = self.agent_id, self.session_id
        await self._stop_feed()
        self.agent_id = self.session_id = None
        session: Session | None = None
        # Already replaced by a newer registration, or expired: not registered here either way.
        with contextlib.suppress(NotFound):
            session = await database_sync_to_async(services.session_close)(session_id=session_id or "")
        await self._send(
            frames.reply(
                "deregistered", frame_id, agent_id=agent_id, session=session.as_wire() if session is not None else None
            )
        )

    async def _discover(self, data: Frame, frame_id: FrameId) -> None:
        data = frames.shape("discover", data)
        agents = await database_sync_to_async(services.sessions_roster)(capability=data.get("capability"))
        await self._send(frames.reply("agents", frame_id, agents=agents))

    async def _operate(self, operation: Callable[..., ops.Answer], *args: Any) -> ops.Answer:
        """One operation for the frame being handled (with its idempotency key, when it is a state change)."""
        keyed = {"key": self._key} if self._key is not None and operation in ops.KEYABLE else {}
        answer: ops.Answer = await database_sync_to_async(operation)(self._who(), *args, **keyed)
        return answer

    async def _post(self, data: Frame, frame_id: FrameId) -> None:
        posted = await self._operate(ops.message_post, data)
        await self._send(frames.reply("posted", frame_id, message=posted.result, **posted.extra))

    async def _broadcast(self, data: Frame, frame_id: FrameId) -> None:
        body = frames.shape("broadcast", data)["body"]
        posted = await self._operate(
            ops.message_post, {"from_agent": self.agent_id, "channel": "general", "body": body}
        )
        await self._send(frames.reply("posted", frame_id, message=posted.result, **posted.extra))

    async def _delegate(self, data: Frame, frame_id: FrameId) -> None:
        delegated = await self._operate(ops.task_delegate, data)
        await self._send(frames.reply("delegated", frame_id, message=delegated.result, **delegated.extra))

    async def _result(self, data: Frame, frame_id: FrameId) -> None:
        answered = await self._operate(ops.task_result, data)
        await self._send(frames.reply("posted", frame_id, message=answered.result, **answered.extra))

    async def _status(self, data: Frame, frame_id: FrameId) -> None:
        data = frames.shape("status", data)
        if "task_id" in data:
            task = (await self._operate(ops.task_get, data["task_id"])).result
            await self._send(frames.reply("status", frame_id, task=task))
        else:
            await self._send(frames.reply("status", frame_id, hub=await database_sync_to_async(selectors.hub_stats)()))

    async def _subscribe(self, data: Frame, frame_id: FrameId) -> None:
        data = frames.shape("subscribe", data)
        # Checked before the old feed stops, so a refused subscribe leaves it running.
        rooms = self._who().visible_rooms(data.get("channels") or ())
        # Without since_id the new feed goes on from where the old one stopped: no gap, no repeat.
        await self._stop_feed()
        subscription = Subscription(
            since_id=data.get("since_id", self._resume_id),
            rooms=rooms,
            types=frozenset(data.get("types") or ()) - {"message"},
            exclude_self=data.get("exclude_self", True),
        )
        await self._replace_feed(
            subscription,
            frames.reply(
                "subscribed",
                frame_id,
                channels=sorted(subscription.rooms),
                types=sorted(subscription.types),
                exclude_self=subscription.exclude_self,
            ),
        )

    async def _lease(self, data: Frame, frame_id: FrameId) -> None:
        leased = await self._operate(ops.inbox_lease, data)
        await self._send(frames.reply("leased", frame_id, messages=leased.result))

    async def _ack(self, data: Frame, frame_id: FrameId) -> None:
        acked = (await self._operate(ops.delivery_ack, data)).result
        await self._send(frames.reply("acked", frame_id, acked=acked["acked"], message_ids=acked["message_ids"]))

    async def _nack(self, data: Frame, frame_id: FrameId) -> None:
        nacked = await self._operate(ops.delivery_nack, data)
        await self._send(frames.reply("nacked", frame_id, delivery=nacked.result))

    async def _heartbeat(self, data: Frame, frame_id: FrameId) -> None:
        await self._touch(force=True)
        await self._send(frames.reply("heartbeat_ack", frame_id, ts=iso(timezone.now())))

    # ── The agent's feed ──────────────────────────────────────────────────

    async def _replace_feed(self, subscription: Subscription, answer: Frame) -> None:
        """Stop the current feed, answer (with the resume point), then start ``subscription``'s feed.

        The answer goes out between the two, so no frame of the old feed follows it.
        """
        await self._stop_feed()
        self._resume_id = subscription.since_id
        await self._send({**answer, "since_id": subscription.since_id})
        self._feed_task = asyncio.create_task(self._run_feed(subscription))

    async def _stop_feed(self) -> None:
        task, self._feed_task = self._feed_task, None
        if task is None:
            return
        async with self._pushing:  # never in the middle of a batch
            task.cancel()
        await asyncio.wait([task])

    async def _run_feed(self, subscription: Subscription) -> None:
        agent_id = self.agent_id
        assert agent_id is not None
        feed = MessageFeed(
            # Rooms in the filter itself: the dispatcher then wakes this socket only for what it shows.
            FeedFilter(agent_id=agent_id, rooms=subscription.rooms, exclude_self=subscription.exclude_self),
            cursor=subscription.since_id,
            limit=500,
            event_types=subscription.types,
        )
        # Rooms narrow only what is pushed, so the marker must not count the skipped broadcasts as delivered.
        marker = DeliveryMarker(FeedFilter(agent_id=agent_id, rooms=subscription.rooms))
        try:
            async with feed:
                while True:  # the backlog, in pages
                    rows = await feed.backlog()
                    await self._push(agent_id, subscription, rows, [], feed.cursor, marker)
                    if not rows:
                        break
                await marker.flush(force=True)
                while not feed.draining:  # (stopping: the server closes the socket with 1012, reconnect)
                    rows, others = await feed.next(DeliveryMarker.FLUSH_SEC if marker.dirty else None)
                    await self._push(agent_id, subscription, rows, others, feed.cursor, marker)
                    await marker.flush()
        except asyncio.CancelledError:
            raise
        except Exception:  # a dead feed must not look like a quiet one
            log.exception("websocket feed failed for %s", agent_id)
            await self._send(frames.internal_error_frame(None))
            await self.close(code=CLOSE_INTERNAL)
        finally:
            await asyncio.shield(marker.flush(force=True))

    async def _push(
        self,
        agent_id: str,
        subscription: Subscription,
        rows: list[dict[str, Any]],
        others: list[dict[str, Any]],
        cursor: int,
        marker: DeliveryMarker,
    ) -> None:
        async with self._pushing:
            shown = [m for m in rows if subscription.shows(m)]
            for message in shown:
                await self._send(frames.message_frame(message, agent_id))
            who = self._who()
            for event in others:
                if who.shows_event(event, agent_id, subscription.types):
                    await self._send(frames.event_frame(event))
            marker.note(shown, cursor)
            self._resume_id = cursor

    def _watch_key(self) -> None:
        """(Re)start watching the socket's key, if it has one: registered or not, the socket ends with it."""
        if self._key_watch is not None:
            self._key_watch.cancel()
            self._key_watch = None
        if self.identity is not None and self.identity.key_id is not None:
            self._key_watch = asyncio.create_task(self._watch_key_until_it_ends(self.identity))

    async def _watch_key_until_it_ends(self, who: access.Identity) -> None:
        ended = asyncio.Event()

        def on_event(event: dict[str, Any]) -> None:
            if who.ended_by(event):
                ended.set()

        why = "revoked"
        await events.dispatcher.add(on_event, events.Route(rooms=frozenset(), kinds=frozenset({"key"})))
        try:
            async with access.revocations.watching(who):
                # Revoked between the key's check and now, its event is already gone: look once.
                if await database_sync_to_async(access.key_usable)(who):
                    try:
                        await asyncio.wait_for(ended.wait(), who.seconds_left())
                    except TimeoutError:
                        why = "expired"
                elif (who.seconds_left() or 1.0) <= 0:
                    why = "expired"
        finally:
            events.dispatcher.remove(on_event)
        await self._stop_feed()
        await self._end_for_key(why)

    async def _end_for_key(self, why: str) -> None:
        await self._send({"type": "error", "id": None, "code": "unauthorized", "message": f"this agent key was {why}"})
        await self.close(code=CLOSE_UNAUTHORIZED)

    # ── Idle handling and teardown ────────────────────────────────────────

    async def _watch_idle(self) -> None:
        while True:
            ping_sec, idle_sec = float(settings.ARC_WS_PING_SEC), float(settings.ARC_WS_IDLE_SEC)
            now = time.monotonic()
            silent = now - self._last_heard
            if silent >= idle_sec:
                log.info("closing websocket of %s: silent for %.0f s", self.agent_id or "(unregistered)", silent)
                await self._stop_feed()
                await self.close(code=CLOSE_IDLE)
                return
            since_ping = now - max(self._last_heard, self._last_ping)
            if since_ping >= ping_sec:
                await self._send({"type": "ping", "close_in_sec": max(0, round(idle_sec - silent))})
                self._last_ping = now
                since_ping = 0.0
            await asyncio.sleep(max(0.01, min(ping_sec - since_ping, idle_sec - silent)))

    async def _teardown(self) -> None:
        for name in ("_watchdog", "_key_watch"):
            task = getattr(self, name)
            setattr(self, name, None)
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                await asyncio.wait([task])
        await self._stop_feed()


class NoRouteConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: refused (a 403 at the handshake)."""

    channel_layer_alias = NO_CHANNEL_LAYER

    async def connect(self) -> None:
        await self.close(code=CLOSE_NO_ROUTE)


# ── The sync side ──────────────────────────────────────────────────────


def _session_open(who: access.Identity, agent_id: str, data: Frame) -> tuple[dict[str, Any], int]:
    """Register (replacing any earlier session of the agent); also the newest message id, where its feed starts."""
    metadata = dict(data.get("metadata") or {})
    if "description" in data:
        metadata["description"] = data["description"]
    fields: dict[str, Any] = {k: data[k] for k in ("display_name", "capabilities") if k in data}
    opened = ops.session_open(who, {**fields, "agent_id": agent_id, "metadata": metadata, "replace": True})
    return opened.result, selectors.message_newest_id()
