"""Ask many, gather replies: the posting half of ``POST /v1/ask`` (the waiting half is in the feeds)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from coordination.core.errors import Invalid
from coordination.core.models import Message, iso
from coordination.core.parsing import required_text
from coordination.core.services import messages, tasks

MAX_ASK_REPLIES = 100
MAX_ASK_TIMEOUT_SEC = 300.0  # the longest any request may wait on the hub


def ask_post(
    *,
    from_agent: str,
    body: str,
    channel: str | None = None,
    to_capability: str | None = None,
    max_replies: int = 5,
    timeout_sec: float = 30.0,
    thread_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    expects_reply: str = "none",
) -> list[Message]:
    """Post a question for ``POST /v1/ask``; returns the question messages whose replies to gather.

    To a room (``channel``, default ``general``): one message there. To a capability: a
    direct message to each live agent that declared it (never the asker), ``Conflict``
    when there is none. Each carries ``metadata.ask`` (how many replies are wanted and
    until when), so answering agents know a reply is expected.
    """
    if channel is not None and to_capability is not None:
        raise Invalid("give channel or to_capability, not both")
    deadline = timezone.now() + timedelta(seconds=timeout_sec)
    meta = {**(metadata or {}), "ask": {"max_replies": max_replies, "until": iso(deadline)}}
    common: dict[str, Any] = {"from_agent": from_agent, "body": body, "thread_id": thread_id, "metadata": meta}
    with transaction.atomic():
        if to_capability is None:
            return [messages.message_post(channel=channel or "general", expects_reply=expects_reply, **common)]
        to_capability = required_text(to_capability, "to_capability")
        askees = tasks.agents_with_capability(to_capability, exclude=from_agent)
        meta["to_capability"] = to_capability
        return [messages.message_post(to_agent=agent, expects_reply=agent, **common) for agent in askees]
