"""Ask many, gather replies (SPEC section 2): ``POST /v1/ask`` and ``GET /v1/messages/{id}/replies``.

Both wait the way long-polls do: the answer is read from the database once, then
again each time a message replying to one of the questions is announced (the
dispatcher's ``reply_to`` routing field), never on a timer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse

from coordination import access, events, selectors, services
from coordination.api import envelope
from coordination.api import serializers as s
from coordination.api.params import json_object, query_int, query_timeout
from coordination.api.streams import endpoint
from coordination.feeds import closes_room

MAX_REPLIES = 100


async def gather(
    who: access.Identity, question_ids: list[int], *, max_replies: int, timeout: float, room: str | None = None
) -> tuple[list[dict[str, Any]], bool, bool]:
    """Up to ``max_replies`` replies to ``question_ids`` the reader may see, waiting up to
    ``timeout`` seconds for them (less if ``room``, where the question was asked, closes).
    Returns ``(replies, complete, room_closed)``."""
    wanted = set(question_ids)
    woken = asyncio.Event()
    closed = False

    def on_event(event: dict[str, Any]) -> None:
        nonlocal closed
        if event.get("event") == "message" and event.get("reply_to") in wanted:
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
            if closed:
                break  # nobody can reply in a closed room
    finally:
        events.dispatcher.remove(on_event)
    return replies, len(replies) >= max_replies, closed


@endpoint("POST")
async def ask(request: HttpRequest) -> HttpResponse:
    """Post a question to a room or a capability and return the replies gathered within ``timeout``."""
    who = access.of(request)
    data = s.Ask.parse(who.bind(json_object(request.body), "from_agent"))
    who.check_post(to_agent=data.get("to_capability"), channel=data.get("channel"))
    max_replies = data.get("max_replies", 5)
    timeout = data.get("timeout", 30.0)
    questions = await sync_to_async(services.ask_post)(
        from_agent=data["from_agent"],
        body=data["body"],
        channel=data.get("channel"),
        to_capability=data.get("to_capability"),
        max_replies=max_replies,
        timeout_sec=timeout,
        thread_id=data.get("thread_id"),
        metadata=data.get("metadata"),
        expects_reply=data.get("expects_reply", "none"),
    )
    ids = [q.id for q in questions]
    room = None if questions[0].to_agent else questions[0].channel
    replies, complete, closed = await gather(who, ids, max_replies=max_replies, timeout=timeout, room=room)
    return envelope.ok(
        {
            "question": questions[0].as_wire(),
            "question_ids": ids,
            "asked": sorted({q.to_agent or q.channel for q in questions}),
            "replies": replies,
            "complete": complete,
        },
        201,
        **({"room_closed": True} if closed else {}),
    )


@endpoint("GET")
async def replies(request: HttpRequest, message_id: int) -> HttpResponse:
    """Replies to one message; ``timeout=S`` waits until ``max`` (default 5) have arrived."""
    who = access.of(request)
    max_replies = min(query_int(request.GET, "max", 5, minimum=1), MAX_REPLIES)
    timeout = query_timeout(request.GET)
    question = (await sync_to_async(selectors.message_get)(message_id)).as_wire()
    who.require_party(question)
    room = None if question["to_agent"] else question["channel"]
    found, complete, closed = await gather(who, [message_id], max_replies=max_replies, timeout=timeout, room=room)
    extra = {"room_closed": True} if closed else {}
    return envelope.ok({"question": question, "replies": found, "complete": complete}, **extra)
