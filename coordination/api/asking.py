"""Ask many, gather replies (docs/protocol.md): ``POST /v1/ask`` and ``GET /v1/messages/{id}/replies``.

Both wait the way long-polls do (``coordination.core.feeds.gather``): the answer is
read from the database once, then again each time a message replying to one of the
questions is announced, never on a timer.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse

from coordination.api import envelope
from coordination.api.params import query_int, query_timeout
from coordination.api.streams import endpoint
from coordination.core import access, feeds, selectors
from coordination.core import operations as ops
from coordination.core.parsing import json_object, require_id
from coordination.core.services.asking import MAX_ASK_REPLIES


@endpoint("POST")
async def ask(request: HttpRequest) -> HttpResponse:
    """Post a question to a room or a capability and return the replies gathered within ``timeout``."""
    who = access.of(request)
    questions, max_replies, timeout = await sync_to_async(ops.ask_post)(who, json_object(request.body))
    ids = [q.id for q in questions]
    room = None if questions[0].to_agent else questions[0].channel
    replies, complete, closed = await feeds.gather(who, ids, max_replies=max_replies, timeout=timeout, room=room)
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
    max_replies = min(query_int(request.GET, "max", 5, minimum=1), MAX_ASK_REPLIES)
    timeout = query_timeout(request.GET)
    question = (await sync_to_async(selectors.message_get)(require_id(message_id, "message_id"))).as_wire()
    who.require_party(question)
    room = None if question["to_agent"] else question["channel"]
    found, complete, closed = await feeds.gather(who, [message_id], max_replies=max_replies, timeout=timeout, room=room)
    extra = {"room_closed": True} if closed else {}
    return envelope.ok({"question": question, "replies": found, "complete": complete}, **extra)
