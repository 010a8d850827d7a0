"""A2A agents elsewhere, kept as agents of the hub (docs/a2a.md, outbound).

An admin registers one by its Agent Card (``remote_register``): it gets a session under its
name, its card's skills as capabilities, so a ``task_request`` reaches it by name or by
capability like any other. The gateway's bridge (``gateway.bridge``) keeps that session live
while the card answers, takes the tasks given to it (``remote_call_begin``: open →
in_progress once, recorded as a ``RemoteCall``), sends them with the A2A SDK, and answers
them with a ``task_result`` as the agent (``tasks.task_result``), as a local worker would.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from coordination.core.errors import Conflict, NotFound
from coordination.core.models import RemoteAgent, RemoteCall, Session, Task
from coordination.core.parsing import agent_name
from coordination.core.services import deliveries, sessions, tasks

MAX_CAPABILITIES = 64
KIND = "a2a"  # the session metadata key that says an agent is an A2A agent elsewhere (and where its card is)


def remote_register(
    *, agent_id: str, card_url: str, credential: str | None, card: dict[str, Any], capabilities: list[str], by: str
) -> RemoteAgent:
    """Register (or update) the A2A agent whose card is at ``card_url`` as ``agent_id``, and make it live.

    ``credential`` ``None`` keeps the one stored. A live local agent of that name is a ``Conflict``.
    """
    agent_id = agent_name(agent_id, "agent_id")
    with transaction.atomic():
        remote = RemoteAgent.objects.select_for_update().filter(agent_id=agent_id).first()
        live = Session.objects.live(settings.ARC_PRESENCE_TTL_SEC).filter(agent_id=agent_id).first()
        if remote is None and live is not None:
            raise Conflict(f"{agent_id} is a live agent of this hub: pick another name for the A2A agent")
        remote = remote or RemoteAgent(agent_id=agent_id, registered_by=by)
        remote.card_url = card_url
        if credential is not None:
            remote.credential = credential
        remote.card, remote.capabilities = card, capabilities[:MAX_CAPABILITIES]
        remote.checked_at, remote.problem = timezone.now(), ""
        remote.save()
        _session_open(remote)
    return remote


def remote_remove(*, agent_id: str) -> RemoteAgent:
    """Forget the A2A agent ``agent_id``: its session closes; its unfinished tasks fail, their requesters told."""
    with transaction.atomic():
        remote = RemoteAgent.objects.filter(agent_id=agent_id).first()
        if remote is None:
            raise NotFound(f"no A2A agent {agent_id} is registered")
        remote.delete()
        for session in Session.objects.filter(agent_id=agent_id, active=True):
            sessions.session_close(session_id=session.session_id)
        for task in Task.objects.filter(assignee=agent_id, status__in=Task.UNFINISHED):
            remote_answer(
                task_id=task.task_id, agent_id=agent_id, ok=False, body="the A2A agent was removed from the hub"
            )
    return remote


def remote_checked(*, agent_id: str, card: dict[str, Any] | None, capabilities: list[str], problem: str) -> None:
    """The outcome of fetching a remote agent's card again: a card (its skills may have changed) or a problem.

    While its card answers it is live (its session refreshed); while it does not, it is not (a task by
    capability goes elsewhere; one by name waits, and fails when its deadline passes)."""
    with transaction.atomic():
        remote = RemoteAgent.objects.select_for_update().filter(agent_id=agent_id).first()
        if remote is None:
            return
        remote.checked_at, remote.problem = timezone.now(), problem[:2000]
        if card is not None:
            remote.card, remote.capabilities = card, capabilities[:MAX_CAPABILITIES]
        remote.save(update_fields=["checked_at", "problem", "card", "capabilities"])
        live = Session.objects.filter(agent_id=agent_id, active=True).first()
        if problem and live is not None:
            sessions.session_close(session_id=live.session_id)
        elif not problem and (live is None or live.capabilities != remote.capabilities):
            _session_open(remote)


def remotes_keep_live() -> list[RemoteAgent]:
    """Refresh the sessions of the remote agents whose cards answered (reopening one the sweeper closed)."""
    remotes = list(RemoteAgent.objects.filter(problem=""))
    now = timezone.now()
    names = [r.agent_id for r in remotes]
    active = set(Session.objects.filter(agent_id__in=names, active=True).values_list("agent_id", flat=True))
    Session.objects.filter(agent_id__in=active, active=True).update(last_seen=now)
    for remote in remotes:
        if remote.agent_id not in active:
            _session_open(remote)
    return remotes


def _session_open(remote: RemoteAgent) -> Session:
    card = remote.card if isinstance(remote.card, dict) else {}
    metadata = {
        KIND: {"card_url": remote.card_url},
        "description": str(card.get("description") or "")[:2000] or f"an A2A agent at {remote.card_url}",
    }
    return sessions.session_create(
        agent_id=remote.agent_id,
        display_name=str(card.get("name") or remote.agent_id)[:200],
        capabilities=remote.capabilities,
        metadata=metadata,
        replace=True,
    )


def remote_call_begin(*, task_id: int, agent_id: str) -> RemoteCall | None:
    """Take an open task given to the remote agent (open → in_progress, once) and record the call; ``None`` when it
    was not open (another bridge took it, or it was canceled). The request counts as delivered."""
    with transaction.atomic():
        if not tasks.task_begin(task_id, agent_id):
            return None
        call, _ = RemoteCall.objects.get_or_create(task_id=task_id, defaults={"agent_id": agent_id})
    deliveries.deliveries_mark_delivered(agent_id=agent_id, message_ids=[task_id])
    return call


def remote_call_sent(*, task_id: int, remote_task_id: str, attempts: int) -> None:
    RemoteCall.objects.filter(pk=task_id).update(remote_task_id=remote_task_id[:200], attempts=attempts)


def remote_answer(*, task_id: int, agent_id: str, ok: bool, body: str) -> bool:
    """Answer the task as the remote agent (a ``task_result``: done, or failed with ``body`` as the reason);
    ``False`` when it was already finished (canceled meanwhile, or timed out)."""
    task = Task.objects.filter(pk=task_id).first()
    RemoteCall.objects.filter(pk=task_id).delete()
    if task is None or task.status not in Task.UNFINISHED:
        return False
    try:
        tasks.task_result(from_agent=agent_id, task_id=task_id, success=ok, body=body, any_agent=True)
    except Conflict:
        return False  # finished between the look and the answer
    return True
