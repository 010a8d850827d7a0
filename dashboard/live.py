"""``/live``: the dashboard's live regions, pushed over Server-Sent Events (htmx's ``sse`` extension).

One stream per open page, fed by the same ``MessageFeed`` as the API's streams (push
from the services' events, gap-free, no timer over the database). It sends:

- ``event: message``: each new message as the page's message row (HTML, escaped like
  every page), which htmx adds to the page's feed (``sse-swap="message"``);
- ``event: <region>`` with no content when a region's state changed (``agents``,
  ``rooms``, ``work``, ``deliveries``, ``keys``, ``waiting``; ``activity`` when messages came: the
  charts, the agent map, an agent's page), which makes that region
  fetch its partial again (``hx-trigger="sse:<region>"``).

Only a signed-in staff user gets a stream; anyone else gets 204, which tells the
browser's ``EventSource`` to stop reconnecting.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from importlib import import_module
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET

from coordination.core import selectors
from coordination.core.feeds import FeedFilter, MessageFeed
from coordination.core.parsing import as_id
from dashboard.auth import identity

KEEPALIVE_SEC = 15.0
RECHECK_SEC = 5.0  # how soon a stream ends after its user signs out or loses staff rights
_SSE_LINES = re.compile(r"\r\n|\r|\n")
REGION_OF_EVENT = {
    "presence": "agents",
    "room": "rooms",
    "claim": "work",
    "lock": "work",
    "task": "work",
    "delivery": "deliveries",
    "key": "keys",
    "reply_claim": "waiting",  # an agent took a reply: the question may leave "waiting on you"
}


@require_GET
async def live(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    user = await request.auser()
    if not (user.is_authenticated and user.is_staff):
        return HttpResponse(status=204)
    who = await sync_to_async(identity)(request)
    room = request.GET.get("room") or None
    thread_id = request.GET.get("thread") or None
    since = _since(request)
    if since is None:  # no page position: from now on
        since = await sync_to_async(selectors.message_newest_id)()
    flt = FeedFilter(channel=room, thread_id=thread_id, broadcast_only=room is not None, rooms=who.rooms)
    feed = MessageFeed(flt, cursor=since, limit=200, event_types=frozenset(REGION_OF_EVENT))
    csrf_token = get_token(request)  # the rows carry forms (reply, claim the reply)
    back = request.GET.get("back") or ""  # the page the rows' forms return to
    if not back.startswith("/") or back.startswith("//"):
        back = reverse("dashboard:overview")
    session_key, user_pk = request.session.session_key, user.pk

    async def out() -> AsyncIterator[bytes]:
        async with feed:
            yield b": connected\n\n"
            rows = await feed.backlog()  # what was posted between the page's render and now
            last_sent = last_check = time.monotonic()
            while True:
                while len(rows) >= feed.limit and (more := await feed.backlog()):
                    rows += more  # a long backlog, in pages
                chunks = [_message_event(m, csrf_token, back) for m in rows if who.may_read(m)]
                if rows:
                    chunks += _region_events(rows, [])
                if chunks:
                    yield "".join(chunks).encode()
                    last_sent = time.monotonic()
                if time.monotonic() - last_check >= RECHECK_SEC:
                    if not await sync_to_async(_still_signed_in)(session_key, user_pk):
                        return  # signed out, or no longer staff: the page's next reconnect gets 204
                    last_check = time.monotonic()
                wait = min(KEEPALIVE_SEC - (time.monotonic() - last_sent), RECHECK_SEC)
                rows, others = await feed.next(max(0.0, wait))
                if feed.draining:
                    return  # the hub process is stopping: the page reconnects (EventSource does)
                if others:
                    yield "".join(_region_events([], others)).encode()
                    last_sent = time.monotonic()
                elif not rows and time.monotonic() - last_sent >= KEEPALIVE_SEC:
                    yield b": keep-alive\n\n"
                    last_sent = time.monotonic()

    response = StreamingHttpResponse(out(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _still_signed_in(session_key: str | None, user_pk: Any) -> bool:
    """Is the stream's session still open, and its user still an active staff user?"""
    from django.contrib.auth import get_user_model

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    if session_key is None or not store.exists(session_key):
        return False
    return get_user_model().objects.filter(pk=user_pk, is_active=True, is_staff=True).exists()


def _since(request: HttpRequest) -> int | None:
    """Where the browser's reconnect says it is, or where the page's render left off (``since``)."""
    for raw in (request.headers.get("Last-Event-ID"), request.GET.get("since")):
        if raw and (position := as_id(raw)) is not None:
            return position
    return None


def _message_event(message: dict[str, Any], csrf_token: str, back: str) -> str:
    html = render_to_string("dashboard/room.html#message", {"m": message, "csrf_token": csrf_token, "back": back})
    # SSE ends a line at CR, LF or CRLF only: every such line of the row gets its own "data:",
    # so no text an agent wrote can end the event or start another one.
    data = "".join(f"data: {line}\n" for line in _SSE_LINES.split(html.strip()))
    return f"id: {message['id']}\nevent: message\n{data}\n"


def _region_events(messages: list[dict[str, Any]], others: list[dict[str, Any]]) -> list[str]:
    """One empty event per region that changed (a burst of changes refreshes a region once)."""
    regions = {REGION_OF_EVENT[str(e.get("event"))] for e in others if e.get("event") in REGION_OF_EVENT}
    if any(m.get("expects_reply", "none") != "none" or m.get("reply_to") is not None for m in messages):
        regions.add("waiting")
    if messages:
        regions.add("activity")  # the charts, the map and agents' pages count messages
    if any(m.get("kind") in ("task_request", "task_result") for m in messages):
        regions.add("work")  # (a task's own event may have come before this stream did: its message says it too)
    return [f"event: {region}\ndata: \n\n" for region in sorted(regions)]
