"""The A2A SDK's request handler, answered by the hub's operations (docs/a2a.md).

Every method takes the caller's ``Identity`` from the call context (resolved at the edge, as
``/v1`` resolves it) and calls the same operations the other doors call; domain errors become
the A2A errors the SDK renders (``ArcError`` → ``InvalidParams``/``TaskNotFound``/...).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.request_handler import RequestHandler
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import (
    A2AError,
    InvalidParamsError,
    InvalidRequestError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from asgiref.sync import sync_to_async
from django.conf import settings

from coordination.core import operations as ops
from coordination.core.access import Identity
from coordination.core.errors import ArcError, Conflict, NotFound
from coordination.core.feeds import FeedFilter, MessageFeed
from gateway import outbound
from gateway.tasks import a2a_task, text_of

IDENTITY = "arc.identity"  # where the edge leaves the caller's identity in the call context's state
PATH_TENANT = "arc.tenant"  # the agent a per-agent endpoint's path names (``/a2a/agents/<name>``; 0.3 has no tenant)
ANONYMOUS_REQUESTER = "a2a-client"  # who asks, for a loopback client without a key (it names no agent)
MAX_BLOCKING_SEC = 300.0  # the hub's longest wait (as /v1/ask and arc_delegate)
LIST_LIMIT = 100
SAFETY_SEC = 60.0  # a stream reads its task at least this often, should an event be lost
FINAL_STATES = frozenset({TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_CANCELED})
SETTLED = FINAL_STATES | {TaskState.TASK_STATE_INPUT_REQUIRED}  # where a blocking send answers


class HubRequestHandler(RequestHandler):
    """A2A over the hub: ``tenant`` names the agent a request is for."""

    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task | Message:
        who, task_id = await _delegate(params, context)
        if not params.configuration.return_immediately:
            await _settled(who, task_id, MAX_BLOCKING_SEC)
        return await _task(who, task_id)

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        return await _task(_caller(context), _task_id(params.id))

    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        who, agent = _caller(context), _tenant(params.tenant or _tenant_of(context))
        size = min(max(params.page_size, 1) if params.page_size else LIST_LIMIT, LIST_LIMIT)
        rows = await _db(ops.tasks_given, who, assignee=agent, limit=size)
        tasks = [await _task(who, t.task_id) for t in rows]
        if params.context_id:
            tasks = [t for t in tasks if t.context_id == params.context_id]
        return ListTasksResponse(tasks=tasks, page_size=size, total_size=len(tasks))

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        who, task_id = _caller(context), _task_id(params.id)
        metadata = params.metadata  # a protobuf Struct: ``in`` and ``[]``, no ``get``
        reason = str(metadata["reason"] if "reason" in metadata else "canceled by its A2A client")[:2000]  # noqa: SIM401
        await _db(ops.task_cancel, who, task_id, {"reason": reason}, finished=TaskNotCancelableError)
        return await _task(who, task_id)

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Any]:
        who, task_id = await _delegate(params, context)
        async for event in _follow(who, task_id):
            yield event

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Any]:
        who, task_id = _caller(context), _task_id(params.id)
        async for event in _follow(who, task_id):
            yield event

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        who = _caller(context)
        _push_on()
        await _push_url_check(params.url)
        config = await _push_set(who, _task_id(params.task_id), params)
        return _push_wire(config, params.tenant)

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        _push_on()
        who, task_id = _caller(context), _task_id(params.task_id)
        configs = await _db(ops.push_configs, who, task_id, who.agent_id or ANONYMOUS_REQUESTER)
        config = next((c for c in configs if c.config_id == params.id), None)
        if config is None:
            raise TaskNotFoundError(message=f"task {task_id} has no push config {params.id[:60]} of yours")
        return _push_wire(config, params.tenant)

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        _push_on()
        who, task_id = _caller(context), _task_id(params.task_id)
        configs = await _db(ops.push_configs, who, task_id, who.agent_id or ANONYMOUS_REQUESTER)
        return ListTaskPushNotificationConfigsResponse(configs=[_push_wire(c, params.tenant) for c in configs])

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        _push_on()
        who, task_id = _caller(context), _task_id(params.task_id)
        await _db(ops.push_config_delete, who, task_id, params.id, who.agent_id or ANONYMOUS_REQUESTER)

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        raise UnsupportedOperationError(message="there is no extended agent card")


def _push_on() -> None:
    from a2a.utils.errors import PushNotificationNotSupportedError

    if not settings.ARC_A2A_PUSH:
        raise PushNotificationNotSupportedError(message="push notifications are not switched on for this hub")


async def _push_url_check(url: str) -> None:
    """The outbound guard (``outbound.target_check``) on a webhook's URL, before anything is kept."""
    try:
        await asyncio.to_thread(outbound.target_check, url)
    except (outbound.Refused, outbound.Unreachable) as exc:
        raise InvalidParamsError(message=f"the push notification URL is refused: {exc}") from None


async def _push_set(who: Identity, task_id: int, params: TaskPushNotificationConfig) -> Any:
    raw = {
        "from_agent": who.agent_id or ANONYMOUS_REQUESTER,
        "config_id": params.id,
        "url": params.url,
        "token": params.token,
        "auth_scheme": params.authentication.scheme,
        "auth_credentials": params.authentication.credentials,
    }
    return await _db(ops.push_config_set, who, task_id, {k: v for k, v in raw.items() if v})


def _push_wire(config: Any, tenant: str) -> TaskPushNotificationConfig:
    """A webhook as A2A shows it to its client: everything but the credentials it gave (never shown again)."""
    out = TaskPushNotificationConfig(
        tenant=tenant, id=config.config_id, task_id=str(config.task_id), url=config.url, token=config.token
    )
    if config.auth_scheme:
        out.authentication.scheme = config.auth_scheme
    return out


def _caller(context: ServerCallContext) -> Identity:
    who = context.state.get(IDENTITY)
    if not isinstance(who, Identity):  # the edge always sets it; without it nothing is allowed
        raise InvalidRequestError(message="no caller identity")
    return who


def _tenant_of(context: ServerCallContext) -> str:
    return context.tenant or str(context.state.get(PATH_TENANT) or "")


def _tenant(tenant: str) -> str:
    agent = (tenant or "").strip()
    if not agent:
        raise InvalidParamsError(message="name the agent: the request's tenant is the agent it is for")
    return agent


def _task_id(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise TaskNotFoundError(message=f"no task {value[:60]}") from None


async def _db(call: Any, *args: Any, finished: type[A2AError] = InvalidParamsError, **kwargs: Any) -> Any:
    """``call`` on the synchronous thread, the hub's errors as A2A's (``finished``: for a 409)."""
    try:
        return await sync_to_async(call)(*args, **kwargs)
    except NotFound as exc:
        raise TaskNotFoundError(message=exc.message) from None
    except Conflict as exc:
        raise finished(message=f"{exc.message} (HTTP {exc.status})") from None
    except ArcError as exc:
        raise InvalidParamsError(message=f"{exc.message} (HTTP {exc.status})") from None


async def _op(call: Any, who: Identity, raw: dict[str, Any], *, key: str | None) -> Any:
    return await _db(call, who, raw, key=key or None)


async def _delegate(params: SendMessageRequest, context: ServerCallContext) -> tuple[Identity, int]:
    """The message as a ``task_request`` for the tenant agent (``operations.task_delegate``), or, naming a task,
    as the requester's further message on it (``operations.task_continue``); the task's id."""
    who, message = _caller(context), params.message
    try:
        body = text_of(message)
    except ValueError as exc:
        raise InvalidParamsError(message=str(exc)) from None
    requester = who.agent_id or ANONYMOUS_REQUESTER
    push = (
        params.configuration.task_push_notification_config
        if params.configuration.HasField("task_push_notification_config")
        else None
    )
    if push is not None:  # (checked before the task is made: a refused webhook makes no task)
        _push_on()
        await _push_url_check(push.url)
    if message.task_id:
        task_id = _task_id(message.task_id)
        await _db(
            ops.task_continue, who, task_id, {"from_agent": requester, "body": body}, key=message.message_id or None
        )
        if push is not None:
            await _push_set(who, task_id, push)
        return who, task_id
    agent = _tenant(params.tenant or _tenant_of(context))
    raw: dict[str, Any] = {
        "from_agent": requester,
        "to_agent": agent,
        "body": body,
        "thread_id": message.context_id or None,
    }
    answer = await _op(ops.task_delegate, who, {k: v for k, v in raw.items() if v is not None}, key=message.message_id)
    task_id = int(answer.result["id"])
    if push is not None:
        await _push_set(who, task_id, push)
    return who, task_id


async def _follow(who: Identity, task_id: int) -> AsyncGenerator[Any]:
    """The task as it is, then each change of its state (its artifact first when it is done), woken by its
    events; the stream ends when the task is finished or asks for input (or the hub drains: the client subscribes
    again)."""
    async with MessageFeed(_requester_feed(who), cursor=task_id, limit=100, event_types=frozenset({"task"})) as feed:
        task = await _task(who, task_id)
        yield task
        state = task.status.state
        while state not in SETTLED and not feed.draining:
            await feed.next(SAFETY_SEC)  # woken by a task event; once a minute it reads the task anyway
            task = await _task(who, task_id)
            if task.status.state == state:
                continue
            state = task.status.state
            for artifact in task.artifacts:
                yield TaskArtifactUpdateEvent(
                    task_id=task.id, context_id=task.context_id, artifact=artifact, last_chunk=True
                )
            yield TaskStatusUpdateEvent(task_id=task.id, context_id=task.context_id, status=task.status)


def _requester_feed(who: Identity) -> FeedFilter:
    return FeedFilter(agent_id=who.agent_id or ANONYMOUS_REQUESTER, rooms=who.visible_rooms())


async def _task(who: Identity, task_id: int) -> Task:
    seen = await _db(ops.task_exchange, who, task_id)
    return a2a_task(seen, context_id=seen.task.thread_id or f"task-{task_id}")


async def _settled(who: Identity, task_id: int, timeout: float) -> None:
    """Wait until the task is finished or asks for input (or ``timeout`` passes), woken by its events and the
    requester's messages, never polling."""
    deadline = time.monotonic() + timeout
    async with MessageFeed(_requester_feed(who), cursor=task_id, limit=100, event_types=frozenset({"task"})) as feed:
        while True:
            if (await _task(who, task_id)).status.state in SETTLED:
                return
            left = deadline - time.monotonic()
            if left <= 0 or feed.draining:
                return
            await feed.next(left)  # a task event, a message to the requester (or the time running out): look again
