"""REST endpoints that wait: the ``/v1/events`` and ``/v1/messages`` long-polls, ``/v1/agents?wait_for=``,
the ``/v1/stream`` SSE feed, and ``/v1/ask`` (docs/protocol.md).

They are async views: a waiting client holds no thread. They wait with the core's
waiting primitives (``coordination.core.feeds``), woken when a service publishes a
committed change (``coordination.core.events``), never on a timer over the database.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from coordination.api import envelope
from coordination.api.errors import response_for
from coordination.api.params import query_bool, query_int, query_limit, query_since_id, query_str, query_timeout
from coordination.core import access, feeds, selectors, services
from coordination.core import operations as ops
from coordination.core.errors import Invalid
from coordination.core.feeds import DeliveryMarker, FeedFilter, MessageFeed, Presence, closes_room
from coordination.core.inputs import EVENT_TYPES
from coordination.core.parsing import json_object

KEEPALIVE_SEC = 15.0
TOUCH_SEC = 30.0
STREAM_EVENT_TYPES = EVENT_TYPES | {"message"}

AsyncView = Callable[..., Coroutine[Any, Any, HttpResponse | StreamingHttpResponse]]


def endpoint(*methods: str) -> Callable[[AsyncView], AsyncView]:
    """An async Arc endpoint: other methods get 405, and any failure becomes an error envelope."""

    def wrap(view: AsyncView) -> AsyncView:
        @csrf_exempt
        @functools.wraps(view)
        async def handler(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse | StreamingHttpResponse:
            if request.method not in methods:
                return envelope.error(f'method "{request.method}" not allowed', 405)
            try:
                return await view(request, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the edge: every failure becomes an envelope
                return response_for(exc)

        return handler

    return wrap


def _poll_answer(rows: list[dict[str, Any]], room_closed: bool) -> HttpResponse:
    """A long-poll's envelope; on a closed room it says so (``room_closed: true``), so the reader stops waiting."""
    return envelope.ok(rows, room_closed=True) if room_closed else envelope.ok(rows)


@endpoint("GET", "POST")
async def messages(request: HttpRequest) -> HttpResponse:
    """``GET`` queries a room or thread (optionally long-polling); ``POST`` posts."""
    who = access.of(request)
    if request.method == "POST":
        key = envelope.idempotency_key(request)
        return envelope.answer(await sync_to_async(ops.message_post)(who, json_object(request.body), key=key))
    q = request.GET
    channel = query_str(q, "channel")
    flt = FeedFilter.for_room(who, channel=channel, thread_id=query_str(q, "thread_id"))
    rows, closed = await feeds.long_poll(flt, query_since_id(q), query_limit(q), query_timeout(q), None, room=channel)
    return _poll_answer(rows, closed)


def _agent_filter(request: HttpRequest, *, rooms: frozenset[str] = frozenset()) -> FeedFilter:
    """An agent's feed as its identity allows: its own id, its key's rooms (narrowed by ``rooms``)."""
    q = request.GET
    return FeedFilter.for_agent(
        access.of(request),
        query_str(q, "agent_id"),
        channel=query_str(q, "channel"),
        thread_id=query_str(q, "thread_id"),
        rooms=rooms,
        exclude_self=query_bool(q, "exclude_self"),
    )


@endpoint("GET")
async def events(request: HttpRequest) -> HttpResponse:
    """Arc's unified feed for one agent: broadcasts plus its direct messages, optionally long-polled."""
    flt = _agent_filter(request)
    q = request.GET
    since_id, limit, timeout = query_since_id(q), query_limit(q), query_timeout(q)
    if query_bool(q, "resume") and flt.agent_id:  # skip what any reader already handed this agent
        since_id = max(since_id, await sync_to_async(selectors.feed_cursor)(flt.agent_id))
    marker = None if query_bool(q, "peek") else DeliveryMarker(flt)  # peek: a watcher, not a reader
    rows, closed = await feeds.long_poll(flt, since_id, limit, timeout, marker, room=flt.channel)
    return _poll_answer(rows, closed)


@endpoint("GET")
async def agents(request: HttpRequest) -> HttpResponse:
    """Live agents (``capability=`` filters). ``wait_for=N&timeout=S`` waits until N are live.

    The wait wakes on presence events; the answer says ``ready`` (were N reached)
    and always carries the roster as it is.
    """
    q = request.GET
    capability = query_str(q, "capability")
    wait_for = query_int(q, "wait_for", 0, minimum=0)
    roster = await sync_to_async(services.sessions_roster)(capability=capability)
    if not wait_for:
        return envelope.ok(roster)
    deadline = time.monotonic() + query_timeout(q)
    async with Presence() as presence:
        roster = await sync_to_async(services.sessions_roster)(
            capability=capability
        )  # again, now that no change can be missed
        while len(roster) < wait_for and await presence.changed(deadline - time.monotonic()):
            roster = await sync_to_async(services.sessions_roster)(capability=capability)
    return envelope.ok(roster, ready=len(roster) >= wait_for)


def _stream_types(raw: str | None) -> frozenset[str]:
    if not raw:
        return frozenset({"message"})
    types = frozenset(t.strip() for t in raw.split(",") if t.strip())
    unknown = types - STREAM_EVENT_TYPES
    if unknown:
        raise Invalid(
            f"unknown event types: {', '.join(sorted(unknown))} (one of {', '.join(sorted(STREAM_EVENT_TYPES))})"
        )
    return types


@endpoint("GET")
async def stream(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """Server-Sent Events: each visible message as ``id: <id>`` + ``data: <message JSON>``.

    Resumes after ``Last-Event-ID`` (or ``since_id``) with no gap and no duplicate;
    ``channels=a,b`` narrows rooms; ``types=message,claim,lock,task,presence,delivery``
    adds named events (``event: claim``...) for those state changes (default: messages
    only, as in Arc); a comment line every 15 s keeps idle connections open.

    When a room the reader follows closes or reopens, an ``event: room`` (the room
    JSON under ``room``) is sent whatever ``types`` says. A stream narrowed to exactly
    one room (``channel=X``, or ``channels=X`` alone) then ends, after every message
    up to the closing notice; one that opens on a closed room sends its backlog and
    that event, and ends.
    """
    q = request.GET
    rooms = frozenset(name for name in (query_str(q, "channels") or "").split(",") if name)
    flt = _agent_filter(request, rooms=rooms)
    types = _stream_types(query_str(q, "types"))
    since_id = query_since_id(q)
    last_event = request.headers.get("Last-Event-ID")
    if last_event:
        try:
            since_id = max(since_id, int(last_event))
        except ValueError as exc:
            raise Invalid("Last-Event-ID must be a message id") from exc
    agent_id = flt.agent_id
    assert agent_id is not None
    who = access.of(request)
    # The one room this stream follows, if it follows just one: its closing ends the stream.
    only_room = flt.channel or (next(iter(rooms)) if len(rooms) == 1 else None)

    async def out() -> AsyncIterator[bytes]:
        marker = DeliveryMarker(flt)
        feed = MessageFeed(flt, cursor=since_id, limit=500, event_types=(types - {"message"}) | {"key"})
        async with feed, access.revocations.watching(who):
            last_touch = time.monotonic()
            yield b": connected\n\n"
            try:
                # Read once subscribed: a later close arrives as an event, an earlier one shows here.
                closed = await sync_to_async(feeds.room_closed)(only_room) if only_room else None
                rows = await feed.backlog()
                while rows:  # the whole backlog, in pages
                    if "message" in types:
                        yield _sse_messages(rows)
                        marker.note(rows, feed.cursor)
                    rows = await feed.backlog()
                await marker.flush(force=True)
                if closed:
                    yield _sse_event(
                        {
                            "event": "room",
                            "action": "closed",
                            "channel": only_room,
                            "by": closed["closed_by"],
                            "room": closed,
                        }
                    )
                    return  # nothing more will come in this room
                last_sent = time.monotonic()
                while True:
                    # Wake in time for the next keep-alive, the key's expiry, or to record deliveries.
                    idle = time.monotonic() - last_sent
                    wait = DeliveryMarker.FLUSH_SEC if marker.dirty else max(0.0, KEEPALIVE_SEC - idle)
                    left = who.seconds_left()
                    if left is not None:
                        if left <= 0:
                            yield b'event: key\ndata: {"action": "expired"}\n\n'
                            return
                        wait = min(wait, left)
                    rows, others = await feed.next(wait)
                    if feed.draining:
                        # The hub process is stopping: what arrived, then reconnect (to another worker).
                        if rows and "message" in types:
                            yield _sse_messages(rows)
                            marker.note(rows, feed.cursor)
                        yield b'retry: 500\nevent: hub\ndata: {"action": "draining"}\n\n'
                        return
                    if any(who.ended_by(event) for event in others):
                        yield b'event: key\ndata: {"action": "revoked"}\n\n'
                        return  # the key was revoked: close the stream now
                    ending = only_room is not None and any(closes_room(event, only_room) for event in others)
                    while ending and (more := await feed.backlog()):
                        rows += more  # up to the closing notice, if its event is still on the way
                    chunks = []
                    if rows and "message" in types:
                        chunks.append(_sse_messages(rows))
                        marker.note(rows, feed.cursor)
                    chunks.extend(
                        _sse_event(event)
                        for event in others
                        # The feed passes room events only for rooms this reader follows (and may see).
                        if who.shows_event(event, agent_id, types)
                    )
                    if chunks:
                        yield b"".join(chunks)
                        last_sent = time.monotonic()
                    elif time.monotonic() - last_sent >= KEEPALIVE_SEC:
                        yield b": keep-alive\n\n"
                        last_sent = time.monotonic()
                    if ending:
                        return  # the one room this stream follows is closed: nothing more will come
                    await marker.flush()
                    if time.monotonic() - last_touch >= TOUCH_SEC:
                        last_touch = time.monotonic()
                        await sync_to_async(services.session_touch)(agent_id=agent_id)
            finally:
                await asyncio.shield(marker.flush(force=True))

    response = StreamingHttpResponse(out(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _sse_messages(rows: list[dict[str, Any]]) -> bytes:
    return "".join(f"id: {m['id']}\ndata: {json.dumps(m, ensure_ascii=False)}\n\n" for m in rows).encode()


def _sse_event(event: dict[str, Any]) -> bytes:
    data = {k: v for k, v in event.items() if k not in {"type", "event"}}
    return f"event: {event['event']}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
