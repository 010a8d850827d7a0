"""Endpoints that wait: the ``/v1/events`` and ``/v1/messages`` long-polls and the ``/v1/stream`` SSE feed.

They are async views so a waiting client holds no worker thread. Reads go
through the same selectors as every other endpoint.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from coordination import selectors, services
from coordination.api import envelope
from coordination.api.errors import response_for
from coordination.api.params import query_bool, query_limit, query_since_id, query_str, query_timeout
from coordination.api.views import MessagePostView
from coordination.errors import Invalid
from coordination.models import Message

# How often a waiting request looks again. A bounded re-check, not push: see the
# README ("Delivery latency") for what this costs and what replaces it.
RECHECK_SEC = 0.1
KEEPALIVE_SEC = 15.0
TOUCH_SEC = 30.0
STREAM_BATCH = 100

_post_message = MessagePostView.as_view()


async def _wait_for(fetch: Callable[[], list[Message]], timeout: float) -> list[Message]:
    """Run ``fetch`` until it returns rows or ``timeout`` seconds pass."""
    rows = await sync_to_async(fetch)()
    deadline = time.monotonic() + timeout
    while not rows:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await asyncio.sleep(min(RECHECK_SEC, remaining))
        rows = await sync_to_async(fetch)()
    return rows


@csrf_exempt
async def messages(request: HttpRequest) -> HttpResponse:
    """``GET`` queries a room or thread (optionally long-polling); ``POST`` posts."""
    if request.method == "POST":
        response: HttpResponse = await sync_to_async(_post_message)(request)
        return response
    if request.method != "GET":
        return envelope.error(f'method "{request.method}" not allowed', 405)
    try:
        q = request.GET
        channel, thread_id = query_str(q, "channel"), query_str(q, "thread_id")
        if not channel and not thread_id:
            raise Invalid("channel or thread_id query parameter is required")
        if channel:
            await sync_to_async(selectors.room_get)(channel)
        since_id, limit, timeout = query_since_id(q), query_limit(q), query_timeout(q)

        def fetch() -> list[Message]:
            if thread_id:
                return selectors.messages_in_thread(
                    thread_id=thread_id, channel=channel, since_id=since_id, limit=limit
                )
            assert channel is not None
            return selectors.messages_in_room(channel=channel, since_id=since_id, limit=limit)

        rows = await _wait_for(fetch, timeout)
    except Exception as exc:  # noqa: BLE001 - every failure becomes an envelope
        return response_for(exc)
    return envelope.ok([m.as_wire() for m in rows])


def _feed_params(request: HttpRequest) -> dict[str, Any]:
    q = request.GET
    agent_id = query_str(q, "agent_id")
    if not agent_id:
        raise Invalid("agent_id query parameter is required")
    return {"agent_id": agent_id, "exclude_self": query_bool(q, "exclude_self")}


@csrf_exempt
async def events(request: HttpRequest) -> HttpResponse:
    """Arc's unified feed for one agent: broadcasts plus its direct messages, optionally long-polled."""
    if request.method != "GET":
        return envelope.error(f'method "{request.method}" not allowed', 405)
    try:
        params = _feed_params(request)
        q = request.GET
        channel, thread_id = query_str(q, "channel"), query_str(q, "thread_id")
        if channel:
            await sync_to_async(selectors.room_get)(channel)
        since_id, limit, timeout = query_since_id(q), query_limit(q), query_timeout(q)
        rows = await _wait_for(
            lambda: selectors.messages_visible_to(
                since_id=since_id, limit=limit, channel=channel, thread_id=thread_id, **params
            ),
            timeout,
        )
    except Exception as exc:  # noqa: BLE001
        return response_for(exc)
    return envelope.ok([m.as_wire() for m in rows])


@csrf_exempt
async def stream(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """Server-Sent Events: each visible message as ``id:`` + ``data:`` lines.

    Resumes after ``Last-Event-ID`` (or ``since_id``); ``channels=a,b`` filters
    rooms; a comment line every 15 s keeps proxies from closing an idle stream.
    """
    if request.method != "GET":
        return envelope.error(f'method "{request.method}" not allowed', 405)
    try:
        params = _feed_params(request)
        q = request.GET
        since_id = query_since_id(q)
        last_event = request.headers.get("Last-Event-ID")
        if last_event:
            try:
                since_id = max(since_id, int(last_event))
            except ValueError as exc:
                raise Invalid("Last-Event-ID must be a message id") from exc
        rooms = {name for name in (query_str(q, "channels") or "").split(",") if name}
    except Exception as exc:  # noqa: BLE001
        return response_for(exc)

    async def events_out() -> AsyncIterator[bytes]:
        cursor = since_id
        last_sent = last_touch = time.monotonic()
        yield b": connected\n\n"
        while True:
            rows = await sync_to_async(selectors.messages_visible_to)(since_id=cursor, limit=STREAM_BATCH, **params)
            chunks = []
            for message in rows:
                cursor = max(cursor, message.id)
                if rooms and message.channel not in rooms:
                    continue
                chunks.append(f"id: {message.id}\ndata: {json.dumps(message.as_wire(), ensure_ascii=False)}\n\n")
            now = time.monotonic()
            if chunks:
                last_sent = now
                yield "".join(chunks).encode()
            elif now - last_sent >= KEEPALIVE_SEC:
                last_sent = now
                yield b": keep-alive\n\n"
            if now - last_touch >= TOUCH_SEC:
                last_touch = now
                await sync_to_async(services.session_touch)(agent_id=params["agent_id"])
            if len(rows) < STREAM_BATCH:
                await asyncio.sleep(RECHECK_SEC)

    response = StreamingHttpResponse(events_out(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
