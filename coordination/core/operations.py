"""What a client may ask of the hub, checked for who asks: the one path every door takes.

Each operation is what a door does between reading a request and writing its answer:
parse the input with its shape (``coordination.core.inputs``), bind the acting fields
to the identity (``Identity.bind``), apply the identity's rules (room scope, visibility,
task holders, admin, the rate limit: ``coordination.core.access``), call one service or
selector, and return an ``Answer`` in the wire shape. REST views, WebSocket frames, MCP
tools (both backends), the dashboard's forms and, through REST, the relay call these, so
the same request gets the same outcome through each (docs/architecture.md); the parity
tests hold them to it.

Operations are synchronous (they touch the database); async doors run them with
``sync_to_async``. Domain errors propagate as ``coordination.core.errors`` exceptions,
which each door maps once to its own error form.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from coordination.core import hub, idempotency, search, selectors, services, turns
from coordination.core import inputs as shapes
from coordination.core.access import Identity
from coordination.core.errors import Conflict, Forbidden, Invalid
from coordination.core.models import Message, Task
from coordination.core.parsing import require_id


@dataclass(frozen=True)
class Answer:
    """An operation's outcome: the wire ``result``, its HTTP-style ``status`` and the envelope's other keys."""

    result: Any
    status: int = 200
    extra: dict[str, Any] = field(default_factory=dict)


Operation = TypeVar("Operation", bound=Callable[..., Answer])


def keyable(operation: Operation) -> Operation:
    """A state-changing operation a retry may repeat: ``op(who, ..., key=K)`` runs at most once per key.

    The first answer is kept (``coordination.core.idempotency``); a repeat by the same agent gets it
    again with ``replayed: true``. The key belongs to the agent acting: the identity's, or the one
    the request names when the client may act as any agent.
    """

    @functools.wraps(operation)
    def run(who: Identity, *args: Any, key: str | None = None, **kwargs: Any) -> Answer:
        if key is None:
            return operation(who, *args, **kwargs)
        return idempotency.once(
            agent=who.agent_id or _named_agent(args),
            key=key,
            operation=operation.__name__,
            args=[args, kwargs],
            run=lambda: operation(who, *args, **kwargs),
            dump=lambda answer: {"result": answer.result, "status": answer.status, "extra": answer.extra},
            load=lambda kept: Answer(kept["result"], kept["status"], {**kept["extra"], "replayed": True}),
        )

    KEYABLE.add(run)
    return cast(Operation, run)


KEYABLE: set[Callable[..., Answer]] = set()  # the operations ``keyable`` marks, for doors that pass keys by field


def _named_agent(args: tuple[Any, ...]) -> str:
    for arg in args:
        if isinstance(arg, dict):
            for name in ("from_agent", "owner_agent_id", "agent_id"):
                if arg.get(name):
                    return str(arg[name]).strip()
    return ""


def _acting(who: Identity) -> str:
    """Who an admin action is recorded as: the human who acted (a staff sign-in), else the key's agent."""
    return who.actor


# ── Sessions ──────────────────────────────────────────────────────────────


@keyable
def session_open(who: Identity, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    data = shapes.SessionCreate.parse(who.bind(raw, "agent_id"))
    session = services.session_create(
        agent_id=data["agent_id"],
        display_name=data.get("display_name"),
        capabilities=data.get("capabilities", []),
        metadata=data.get("metadata"),
        replace=data.get("replace", False),
    )
    return Answer(session.as_wire(), 201)


def session_close(who: Identity, session_id: str) -> Answer:
    services.session_close(session_id=session_id, actor=who.agent_id)
    return Answer({"session_id": session_id, "deleted": True})


# ── Rooms ─────────────────────────────────────────────────────────────────


def rooms_list(who: Identity) -> Answer:
    return Answer([room.as_wire() for room in selectors.rooms_list() if who.can_see_room(room.name)])


def room_create(who: Identity, raw: dict[str, Any]) -> Answer:
    data = shapes.ChannelCreate.parse(who.bind(raw, "created_by"))
    room, created = services.room_create(
        name=data["name"], created_by=data.get("created_by"), metadata=data.get("metadata")
    )
    return Answer(room.as_wire(), 201 if created else 200)


def room_close(who: Identity, name: str) -> Answer:
    who.require_admin("closing a room")
    room, changed = services.room_close(name=name, actor=_acting(who))
    return Answer(room.as_wire(), extra={"changed": changed})


def room_reopen(who: Identity, name: str) -> Answer:
    who.require_admin("reopening a room")
    room, changed = services.room_reopen(name=name, actor=_acting(who))
    return Answer(room.as_wire(), extra={"changed": changed})


# ── Messages ──────────────────────────────────────────────────────────────


def _posted(message: Message, **extra: Any) -> Answer:
    return Answer(message.as_wire(), 201, {**selectors.post_receipt(message), **extra})


@keyable
def message_post(who: Identity, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    """Post a message (``POST /v1/messages``, a ``post`` or ``broadcast`` frame, ``arc_post_message``, ...).

    A ``task_request`` naming a capability goes to the agent the hub picks, as every
    delegation does (``services.do_message_post``).
    """
    data = shapes.MessagePost.parse(who.bind(raw, "from_agent"))
    draft = services.check_message_post(**data, any_agent=not who.bound, admin=who.admin)
    who.check_post(draft)
    return _posted(services.do_message_post(draft))


@keyable
def reply_claim(who: Identity, message_id: int, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    message_id = require_id(message_id, "message_id")
    data = shapes.ReplyClaim.parse(who.bind(raw, "agent_id"))
    who.require_party(selectors.message_get(message_id).as_wire())
    message, acquired = services.reply_claim(message_id=message_id, agent_id=data["agent_id"])
    return Answer(message.as_wire(), 201 if acquired else 200, {"acquired": acquired})


def message_status(who: Identity, message_id: int) -> Answer:
    message_id = require_id(message_id, "message_id")
    message = selectors.message_get(message_id)
    who.require_party(message.as_wire())
    return Answer(selectors.message_status(message))


def ask_post(who: Identity, raw: dict[str, Any]) -> tuple[list[Message], int, float]:
    """Post the question(s) of ``POST /v1/ask``; returns them, how many replies to gather and for how long."""
    data = shapes.Ask.parse(who.bind(raw, "from_agent"))
    who.may_post(direct=data.get("to_capability") is not None, channel=data.get("channel"))
    max_replies, timeout = data.get("max_replies", 5), data.get("timeout", 30.0)
    questions = services.ask_post(
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
    return questions, max_replies, timeout


def search_messages(who: Identity, *, q: str, channel: str | None, from_agent: str | None, limit: int) -> Answer:
    """Full-text search; ``from_agent`` filters by author (it is not an acting field)."""
    return Answer(search.messages_search(q=q, reader=who, channel=channel, from_agent=from_agent, limit=limit))


# ── Agents, threads, inboxes ──────────────────────────────────────────────


def bootstrap(who: Identity, agent_id: str | None) -> Answer:
    agent_id = who.act_as(agent_id, "agent_id")
    if not agent_id:
        raise Invalid("agent_id query parameter is required")
    services.sessions_prune_expired()
    return Answer(selectors.bootstrap(agent_id=agent_id))


def threads_list(who: Identity) -> Answer:
    return Answer([t for t in selectors.threads_list() if t["channel"] is None or who.can_see_room(t["channel"])])


def thread_get(who: Identity, thread_id: str) -> Answer:
    return Answer(who.visible_thread(selectors.thread_detail(thread_id=thread_id)))


def inbox(who: Identity, agent_id: str, *, since_id: int, limit: int) -> Answer:
    agent_id = who.act_as(agent_id, "agent_id")
    return Answer([m.as_wire() for m in selectors.inbox(agent_id=agent_id, since_id=since_id, limit=limit)])


# ── Deliveries ────────────────────────────────────────────────────────────


@keyable
def inbox_lease(who: Identity, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    """Lease the next direct messages as work; ``raw`` names the ``agent_id`` (the path's, or the socket's)."""
    agent_id = who.act_as(raw.get("agent_id"), "agent_id")
    data = shapes.InboxLease.parse({k: v for k, v in raw.items() if k != "agent_id"})
    leased = services.inbox_lease(
        agent_id=agent_id, max_messages=data.get("max", 10), lease_sec=data.get("lease_sec", 60)
    )
    return Answer([selectors.leased_wire(d) for d in leased])


def deliveries_list(who: Identity, *, agent_id: str | None, state: str | None, limit: int) -> Answer:
    """An agent's delivery records; an admin may list everyone's."""
    if not who.admin:
        agent_id = who.act_as(agent_id, "agent_id")
    rows = selectors.deliveries_list(agent_id=agent_id, state=state, limit=limit)
    return Answer([selectors.delivery_wire(d) for d in rows])


@keyable
def delivery_ack(who: Identity, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    data = shapes.DeliveryAck.parse(who.bind(raw, "agent_id"))
    ids = sorted(set(data["message_ids"]))
    acked = services.delivery_ack(agent_id=data["agent_id"], message_ids=ids)
    return Answer({"agent_id": data["agent_id"], "acked": acked, "message_ids": ids})


@keyable
def delivery_nack(who: Identity, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    data = shapes.DeliveryNack.parse(who.bind(raw, "agent_id"))
    delivery = services.delivery_nack(
        agent_id=data["agent_id"],
        message_id=data["message_id"],
        reason=data.get("reason", ""),
        delay_sec=data.get("delay_sec", 0),
    )
    return Answer(delivery.as_wire())


def deliveries_retry(who: Identity, raw: dict[str, Any]) -> Answer:
    who.require_admin("retrying dead letters")
    data = shapes.DeliveryRetry.parse(raw)
    retried = services.deliveries_retry(message_ids=data["message_ids"], agent_id=data.get("agent_id"))
    return Answer({"retried": retried})


# ── Claims and locks ──────────────────────────────────────────────────────


@keyable
def claim_acquire(who: Identity, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    """Claim work; claiming a task (``task_message_id``) needs the task visible, as acting on it does."""
    data = shapes.ClaimAcquire.parse(who.bind(raw, "owner_agent_id"))
    if data.get("task_message_id") is not None and who.rooms:
        task = selectors.task_find(data["task_message_id"])
        if task is not None:
            who.require_task(task.as_wire())
    claim, acquired = services.claim_acquire(**data)
    return Answer(claim.as_wire(), 201 if acquired else 200, {"acquired": acquired})


@keyable
def claim_refresh(who: Identity, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    data = shapes.ClaimRefresh.parse(who.bind(raw, "owner_agent_id"))
    return Answer(services.claim_refresh(**data).as_wire(), extra={"acquired": True})


@keyable
def claim_release(who: Identity, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    data = shapes.ClaimRelease.parse(who.bind(raw, "agent_id"))
    return Answer(services.claim_release(**data).as_wire())


def claim_force_release(who: Identity, claim_key: str) -> Answer:
    who.require_admin("force-releasing a claim")
    return Answer(services.claim_force_release(claim_key=claim_key, actor=_acting(who)).as_wire())


@keyable
def lock_acquire(who: Identity, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    data = shapes.LockAcquire.parse(who.bind(raw, "agent_id"))
    lock, acquired = services.lock_acquire(**data)
    return Answer(lock.as_wire(), 201 if acquired else 200, {"acquired": acquired})


@keyable
def lock_refresh(who: Identity, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    data = shapes.LockRefresh.parse(who.bind(raw, "agent_id"))
    return Answer(services.lock_refresh(**data).as_wire(), extra={"acquired": True})


@keyable
def lock_release(who: Identity, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    data = shapes.LockRelease.parse(who.bind(raw, "agent_id"))
    return Answer(services.lock_release(**data).as_wire())


def lock_force_release(who: Identity, file_path: str) -> Answer:
    who.require_admin("force-releasing a lock")
    return Answer(services.lock_force_release(file_path=file_path, actor=_acting(who)).as_wire())


# ── Tasks ─────────────────────────────────────────────────────────────────


def tasks_list(who: Identity, **filters: Any) -> Answer:
    """Tasks (``status``, ``assignee``, ``parent_id``, ``channel``, ``thread_id``) this identity may see."""
    tasks = selectors.tasks_list(**filters)
    return Answer([wire for wire in (t.as_wire() for t in tasks) if who.may_see_task(wire)])


def task_get(who: Identity, task_id: int) -> Answer:
    task_id = require_id(task_id, "task_id")
    task = selectors.task_get(task_id).as_wire()
    who.require_task(task)
    return Answer(task)


def task_exchange(who: Identity, task_id: int) -> selectors.TaskExchange:
    """A task with its request, its conversation and its answer (``selectors.task_exchange``), if ``who`` may
    see it; of its messages only those ``who`` may read (the request and answer ``None`` otherwise)."""
    seen = selectors.task_exchange(require_id(task_id, "task_id"))
    who.require_task(seen.task.as_wire())

    # The task's state is the task's; its messages are messages, each read by the message rule
    # (a direct message only by its parties), as REST reads them.
    def readable(m: Any) -> bool:
        return m is not None and who.may_read(m.as_wire())

    return selectors.TaskExchange(
        seen.task,
        seen.request if readable(seen.request) else None,
        [m for m in seen.talk if readable(m)],
        seen.answer if readable(seen.answer) else None,
    )


@keyable
def task_continue(who: Identity, task_id: int, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    """The requester's further message on its unfinished task (A2A: a message naming the task, after the
    assignee asked): a direct message to the assignee in reply to the task's request, in its thread."""
    task = _requesters_task(who, task_id, raw.get("from_agent"), "continue it")
    data = who.bind(dict(raw), "from_agent")
    if task.status not in Task.UNFINISHED:
        raise Conflict(f"task {task_id} is {task.status}: a finished task takes no further message")
    if not task.assignee:
        raise Conflict(f"task {task_id} has no assignee to tell")
    post = {**data, "to_agent": task.assignee, "reply_to": task.task_id, "thread_id": task.thread_id}
    return message_post(who, {k: v for k, v in post.items() if v is not None})  # (this operation keeps the key)


def _requesters_task(who: Identity, task_id: int, claimed: Any, verb: str) -> Task:
    """The task, when ``who`` may see it and the agent acting (``claimed``, bound to ``who``) asked for it, or
    ``who`` is an admin: what only a task's requester may do (continue it, set or read its webhooks)."""
    task = selectors.task_get(require_id(task_id, "task_id"))
    who.require_task(task.as_wire())
    if not who.admin and who.act_as(claimed, "from_agent") != task.requester:
        raise Forbidden(f"only task {task_id}'s requester ({task.requester}) may {verb}")
    return task


def _push_owner(who: Identity, task_id: int, requester: str) -> Task:
    return _requesters_task(who, task_id, requester, "set or read its push configs")


def push_config_set(who: Identity, task_id: int, raw: dict[str, Any]) -> Any:
    """Set a webhook for a task (A2A ``CreateTaskPushNotificationConfig``); its URL already passed the guard."""
    data = shapes.PushConfigSet.parse(raw)
    task = _push_owner(who, task_id, data["from_agent"])
    return services.push_config_set(
        task_id=task.task_id,
        config_id=data.get("config_id") or "",
        owner=data["from_agent"],
        key_id=who.key_id,
        rooms=sorted(who.rooms),
        url=data["url"],
        token=data.get("token") or "",
        auth_scheme=data.get("auth_scheme") or "",
        auth_credentials=data.get("auth_credentials") or "",
    )


def push_configs(who: Identity, task_id: int, requester: str) -> list[Any]:
    """The webhooks ``requester`` set for a task (A2A ``List``/``GetTaskPushNotificationConfig``)."""
    task = _push_owner(who, task_id, requester)
    return selectors.push_configs(task_id=task.task_id, owner=who.act_as(requester, "from_agent"))


def push_config_delete(who: Identity, task_id: int, config_id: str, requester: str) -> None:
    task = _push_owner(who, task_id, requester)
    services.push_config_delete(task_id=task.task_id, config_id=config_id, owner=who.act_as(requester, "from_agent"))


def tasks_given(who: Identity, *, assignee: str, limit: int) -> list[Any]:
    """The newest tasks given to ``assignee`` that ``who`` asked for (an unbound caller: all of them), visible to it."""
    rows = selectors.tasks_of(requester=who.agent_id, assignee=assignee, limit=limit)
    return [t for t in rows if who.may_see_task(t.as_wire())]


def _task_visible(who: Identity, task_id: int) -> None:
    require_id(task_id, "task_id")
    task = selectors.task_find(task_id)
    if task is not None:  # an unknown task is the service's 404
        who.require_task(task.as_wire())


@keyable
def task_start(who: Identity, task_id: int, *, key: str | None = None) -> Answer:
    _task_visible(who, task_id)
    return Answer(services.task_start(task_id=task_id, actor=who.agent_id, admin=who.admin).as_wire())


@keyable
def task_complete(who: Identity, task_id: int, *, key: str | None = None) -> Answer:
    _task_visible(who, task_id)
    task, parent_completed = services.task_complete(task_id=task_id, actor=who.agent_id, admin=who.admin)
    return Answer(task.as_wire(), extra={"parent_completed": True} if parent_completed else {})


@keyable
def task_fail(who: Identity, task_id: int, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    data = shapes.TaskFail.parse(raw)
    _task_visible(who, task_id)
    task = services.task_fail(
        task_id=task_id, reason=data.get("reason") or "failed", actor=who.agent_id, admin=who.admin
    )
    return Answer(task.as_wire())


@keyable
def task_cancel(who: Identity, task_id: int, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    """Cancel a task (A2A's ``CancelTask``): it fails as canceled, and its assignee is told."""
    data = shapes.TaskFail.parse(raw)
    _task_visible(who, task_id)
    task = services.task_cancel(task_id=task_id, reason=data.get("reason") or "", actor=who.agent_id, admin=who.admin)
    return Answer(task.as_wire())


@keyable
def task_delegate(who: Identity, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    """Hand a task to an agent or a capability (a ``delegate`` frame, ``arc_delegate``, ``arc_rpc_call``).

    The result is the ``task_request`` message; ``extra`` carries its receipt and the ``task``.
    """
    data = shapes.Delegate.parse(who.bind(raw, "from_agent"))
    who.may_post(direct=True, channel=data.get("channel"))
    message = services.task_delegate(**data, any_agent=not who.bound, admin=who.admin)
    return _posted(message, task=selectors.task_get(message.id).as_wire())


@keyable
def task_result(who: Identity, raw: dict[str, Any], *, key: str | None = None) -> Answer:
    """Answer a task (a ``result`` frame, ``arc_complete_task`` with a body): a ``task_result`` that finishes it."""
    data = shapes.Result.parse(who.bind(raw, "from_agent"))
    task = selectors.task_get(data["task_id"])
    who.may_post(direct=task.requester is not None, channel=task.channel, answers_task=task.task_id)
    message = services.task_result(
        from_agent=data["from_agent"],
        task_id=data["task_id"],
        success=data.get("success", True),
        body=data.get("body", ""),
        payload=data.get("payload"),
        any_agent=not who.bound,
        admin=who.admin,
    )
    return _posted(message, task=selectors.task_get(data["task_id"]).as_wire())


# ── Keys, network, shutdown (admin) ───────────────────────────────────────


def key_mint(who: Identity, *, agent_id: str, rooms: list[str], expires: str, admin: bool, label: str, by: str) -> Any:
    """Mint a key; ``(key, plaintext)``: the secret exists only in this answer."""
    who.require_admin("minting keys")
    return services.key_mint(agent_id=agent_id, rooms=rooms, expires=expires, admin=admin, label=label, created_by=by)


def key_revoke(who: Identity, key_id: str) -> Answer:
    who.require_admin("revoking keys")
    return Answer(services.key_revoke(key_id=key_id).as_wire())


def network_set(who: Identity, raw: dict[str, Any]) -> Answer:
    who.require_admin("the network toggle")
    data = shapes.NetworkToggle.parse(raw)
    if "allow_remote" in data:
        services.network_set(allow_remote=data["allow_remote"])
    return Answer({"allow_remote": services.remote_allowed()})


def shutdown_start(who: Identity, raw: dict[str, Any]) -> Answer:
    who.require_admin("shutting the hub down")
    data = shapes.ShutdownStart.parse(raw)
    status = hub.shutdown.start(data.get("delay_sec", 60))
    return Answer({"status": "shutdown_initiated", **(status or {})})


def shutdown_cancel(who: Identity) -> Answer:
    who.require_admin("cancelling a shutdown")
    hub.shutdown.cancel()
    return Answer({"status": "shutdown_cancelled"})


# ── Turn boundaries (hooks of coding agents' clients) ─────────────────────


def hook_answer(who: Identity, agent_id: str | None, raw: dict[str, Any], *, client: str, strict: bool) -> Answer:
    """A client's hook (``POST /v1/hooks/<client>``, ``manage.py hook``): the hook output to hand back.

    ``result`` is the client's own output JSON, not an Arc envelope (``coordination.core.turns``).
    """
    return Answer(turns.answer(who, agent_id, raw, client=client, strict=strict))
