"""Tasks: their lifecycle (start, complete, fail, time out, roll up), who may act on one, and delegation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from coordination.core import events
from coordination.core.errors import Conflict, Forbidden, Invalid, NotFound
from coordination.core.models import Claim, Message, Session, Task
from coordination.core.services import messages


def task_finished_by(
    kind: str, reply_to: int | None, metadata: dict[str, Any], *, actor: str | None, admin: bool = False
) -> tuple[Task, bool] | None:
    """The unfinished task a ``task_result`` finishes, and whether it succeeded.

    Answering a task is finishing it, so the rule of ``task_complete`` holds: only its
    requester, assignee or claimant (``task_actor_check``) may, else ``Forbidden``, and
    nothing is stored. A result for a task that is already finished changes nothing.
    """
    if kind != Message.Kind.TASK_RESULT or reply_to is None:
        return None
    task = Task.objects.filter(pk=reply_to, status__in=Task.UNFINISHED).first()
    if task is None or not Message.objects.filter(pk=reply_to, kind=Message.Kind.TASK_REQUEST).exists():
        return None
    task_actor_check(task, actor, "answer", admin=admin)
    return task, metadata.get("success") is not False


def task_complete(*, task_id: int, actor: str | None = None, admin: bool = False) -> tuple[Task, bool]:
    """Mark a task done and roll completion up its parents.

    Returns ``(task, parent_completed)``. Completing a done task is a no-op (Arc);
    a failed or timed-out task cannot be completed (``Conflict``). When the last
    unfinished sibling completes, the parent completes too and a ``notice`` says so
    in the parent's room and thread; that may in turn complete the grandparent.
    An ``actor`` (a key's agent) must be the task's requester, assignee or claimant.
    """
    with transaction.atomic():
        task = Task.objects.filter(pk=task_id).first()
        if task is None:
            raise NotFound("task not found")
        task_actor_check(task, actor, "complete", admin=admin)
        if task.status == Task.Status.DONE:
            return task, False
        if task.status not in Task.UNFINISHED:
            raise Conflict(f"task {task_id} is {task.status}; only open or in_progress tasks can be completed")
        now = timezone.now()
        Task.objects.filter(pk=task_id, status__in=Task.UNFINISHED).update(status=Task.Status.DONE, completed_at=now)
        task.refresh_from_db()
        events.publish("task", {"action": "done", "task": task.as_wire()})
        parent_completed = _task_rollup(task)
        return task, parent_completed


def _task_rollup(task: Task) -> bool:
    if task.parent_id is None:
        return False
    # Lock the parent so two siblings finishing at once cannot both see the other
    # still open (PostgreSQL); SQLite's single writer serialises them already.
    parent = Task.objects.select_for_update().filter(pk=task.parent_id).first()
    if parent is None or parent.status not in Task.UNFINISHED:
        return False
    siblings = Task.objects.filter(parent_id=parent.task_id)
    if siblings.exclude(status=Task.Status.DONE).exists():
        return False
    Task.objects.filter(pk=parent.task_id).update(status=Task.Status.DONE, completed_at=timezone.now())
    parent.refresh_from_db()
    events.publish("task", {"action": "done", "task": parent.as_wire(), "rollup": True})
    messages.message_post(
        from_agent=messages.SYSTEM_AGENT,
        channel=parent.channel,
        kind="notice",
        body=f"All {siblings.count()} subtasks of task {parent.task_id} are complete.",
        reply_to=parent.task_id,
        thread_id=parent.thread_id,
        metadata={"auto_rollup": True, "parent_task_id": parent.task_id},
        touch=False,
    )
    _task_rollup(parent)
    return True


def task_actor_check(task: Task, actor: str | None, verb: str, *, admin: bool = False) -> None:
    """Only the task's requester, assignee or claimant may ``verb`` it (an admin may act on any task)."""
    if admin or actor is None or actor in (task.requester, task.assignee):
        return
    claimed = (
        Claim.objects.active()
        .filter(owner_agent_id=actor)
        .filter(Q(task_message_id=task.task_id) | Q(claim_key=f"task-{task.task_id}"))
    )
    if not claimed.exists():
        raise Forbidden(f"only the task's requester, assignee or claimant may {verb} task {task.task_id}")


def task_start(*, task_id: int, actor: str | None = None, admin: bool = False) -> Task:
    """Move an open task to ``in_progress`` (its assignee becomes ``actor`` if it had none).

    Starting a task already in progress by the same agent is a no-op; any other start
    of a task that is not open is a ``Conflict`` (409).
    """
    with transaction.atomic():
        task = Task.objects.filter(pk=task_id).first()
        if task is None:
            raise NotFound("task not found")
        if task.assignee is not None:  # an unassigned task is anyone's to start
            task_actor_check(task, actor, "start", admin=admin)
        if task.status == Task.Status.IN_PROGRESS and (actor is None or task.assignee in (None, actor)):
            return task
        if not task_begin(task_id, actor):
            task.refresh_from_db()
            raise Conflict(f"task {task_id} is {task.status}; only an open task can be started")
        task.refresh_from_db()
        return task


def task_begin(task_id: int, agent_id: str | None) -> bool:
    """open → in_progress, once (a conditional update); the agent becomes the assignee if there was none."""
    now = timezone.now()
    rows = Task.objects.filter(pk=task_id, status=Task.Status.OPEN)
    started = rows.filter(assignee__isnull=True).update(
        status=Task.Status.IN_PROGRESS, started_at=now, assignee=agent_id
    )
    started = started or rows.update(status=Task.Status.IN_PROGRESS, started_at=now)
    if started:
        task = Task.objects.get(pk=task_id)
        events.publish("task", {"action": "started", "task": task.as_wire()})
    return bool(started)


def tasks_time_out() -> list[Task]:
    """Tasks past their deadline and still unfinished become ``timeout``; each requester is told.

    Run by the hub's sweeper. A conditional update per task, so two sweeping workers
    never time out (or announce) the same task twice.
    """
    now = timezone.now()
    timed_out: list[Task] = []
    for task in Task.objects.filter(status__in=Task.UNFINISHED, deadline__lt=now):
        with transaction.atomic():
            if not Task.objects.filter(pk=task.pk, status__in=Task.UNFINISHED).update(
                status=Task.Status.TIMEOUT, completed_at=now
            ):
                continue
            task.refresh_from_db()
            events.publish("task", {"action": "timeout", "task": task.as_wire()})
            if task.requester and task.requester != messages.SYSTEM_AGENT:
                messages.message_post(
                    from_agent=messages.SYSTEM_AGENT,
                    to_agent=task.requester,
                    kind="notice",
                    body=f"Task {task.task_id} timed out before it finished"
                    + (f" (assigned to {task.assignee})." if task.assignee else "."),
                    reply_to=task.task_id,
                    thread_id=task.thread_id,
                    metadata={"task_timeout": task.task_id, "assignee": task.assignee},
                    touch=False,
                )
            timed_out.append(task)
    return timed_out


def task_fail(*, task_id: int, reason: str, actor: str | None = None, admin: bool = False) -> Task:
    """Mark an unfinished task failed with ``reason`` (``Conflict`` if already finished)."""
    task = Task.objects.filter(pk=task_id).first()
    if task is not None:
        task_actor_check(task, actor, "fail", admin=admin)
    with transaction.atomic():
        updated = Task.objects.filter(pk=task_id, status__in=Task.UNFINISHED).update(
            status=Task.Status.FAILED, completed_at=timezone.now(), failure_reason=reason
        )
        task = Task.objects.filter(pk=task_id).first()
        if task is None:
            raise NotFound("task not found")
        if not updated:
            raise Conflict(f"task {task_id} is {task.status}; only open or in_progress tasks can fail")
        events.publish("task", {"action": "failed", "task": task.as_wire()})
        return task


CANCELED = "canceled: "  # how a cancellation's reason begins (A2A shows such a failure as canceled)


def task_cancel(*, task_id: int, reason: str, actor: str | None = None, admin: bool = False) -> Task:
    """Cancel an unfinished task: it fails with ``canceled: <reason>``, and its assignee hears it
    at once in a direct ``notice`` (the task's own event reaches only streams that follow tasks)."""
    with transaction.atomic():
        task = task_fail(task_id=task_id, reason=CANCELED + (reason or "no reason given"), actor=actor, admin=admin)
        if task.assignee and task.assignee != actor:
            messages.message_post(
                from_agent=messages.SYSTEM_AGENT,
                to_agent=task.assignee,
                kind=Message.Kind.NOTICE,
                body=f"Task {task_id} was canceled by {actor or 'its requester'}: {reason or 'no reason given'}."
                " Stop working on it.",
                thread_id=task.thread_id,
                reply_to=task_id,
                metadata={"task_canceled": task_id},
                touch=False,
            )
    return task


def task_delegate(
    *,
    from_agent: str,
    body: str,
    to_agent: str | None = None,
    to_capability: str | None = None,
    payload: Any = None,
    metadata: dict[str, Any] | None = None,
    **fields: Any,
) -> Message:
    """Hand a task to an agent, named or picked by capability; returns the ``task_request`` message.

    The one way every door delegates (a ``delegate`` frame, ``arc_delegate``, ``arc_rpc_call``,
    and ``POST /v1/messages`` with ``kind: task_request`` naming an agent or a capability).
    By capability the hub picks a live agent that declared it (never the requester):
    fewest unfinished assigned tasks first, then the one assigned least recently
    (``assignee_pick``); ``Conflict`` when none is live. The request is a direct message
    to the assignee; its task records requester, assignee and deadline. ``payload`` goes
    to ``metadata.payload``; ``fields`` are any other fields of a post.
    """
    if (to_agent is None) == (to_capability is None):
        raise Invalid("give exactly one of to_agent or to_capability")
    meta = dict(metadata or {})
    if payload is not None:
        meta["payload"] = payload
    return messages.message_post(
        from_agent=from_agent,
        to_agent=to_agent,
        to_capability=to_capability,
        kind=Message.Kind.TASK_REQUEST,
        body=body,
        metadata=meta,
        **fields,
    )


def agents_with_capability(capability: str, *, exclude: str) -> list[str]:
    """Live agents (other than ``exclude``) that declared ``capability``; ``Conflict`` if none."""
    live = sorted(
        {
            s.agent_id
            for s in Session.objects.live(settings.ARC_PRESENCE_TTL_SEC).exclude(agent_id=exclude)
            if capability in (s.capabilities or [])
        }
    )
    if not live:
        raise Conflict(f"no live agent has the capability {capability!r}")
    return live


def assignee_pick(capability: str, *, exclude: str) -> str:
    live = agents_with_capability(capability, exclude=exclude)
    load = {
        row["assignee"]: (row["open"], row["last"])
        for row in Task.objects.filter(assignee__in=live)
        .values("assignee")
        .annotate(open=Count("task_id", filter=Q(status__in=Task.UNFINISHED)), last=Max("created_at"))
    }
    never = timezone.now() - timedelta(days=36500)
    return min(live, key=lambda agent: (load.get(agent, (0, never))[0], load.get(agent, (0, never))[1] or never))


def task_result(
    *,
    from_agent: str,
    task_id: int,
    success: bool = True,
    body: str = "",
    payload: Any = None,
    any_agent: bool = False,
    admin: bool = False,
) -> Message:
    """Answer a task: a ``task_result`` to its requester (a direct message) that finishes the task.

    Only whoever may finish the task may answer it (``task_finished_by``); ``any_agent`` and
    ``admin`` as in ``messages.check_message_post``.
    """
    task = Task.objects.filter(pk=task_id).first()
    if task is None:
        raise NotFound("task not found")
    metadata: dict[str, Any] = {"success": bool(success)}
    if payload is not None:
        metadata["payload"] = payload
    return messages.message_post(
        from_agent=from_agent,
        to_agent=task.requester,
        channel=task.channel if task.requester is None else None,
        kind=Message.Kind.TASK_RESULT,
        body=body or ("done" if success else "failed"),
        reply_to=task.task_id,
        thread_id=task.thread_id,
        metadata=metadata,
        any_agent=any_agent,
        admin=admin,
    )
