"""The hub's tasks as A2A tasks, and A2A messages as the hub's delegations (docs/a2a.md).

An A2A ``SendMessage`` to an agent (the request's ``tenant``) is a ``task_request`` for it,
through the one delegation operation every door uses (``operations.task_delegate``: keys,
scopes, rate limits, delivery records; the message's ``messageId`` is its idempotency key);
the hub's task is the A2A task, under its id. Its state:

| hub | A2A |
|---|---|
| open | submitted |
| in_progress | working |
| done | completed (the ``task_result``'s body is the artifact) |
| failed, timeout | failed (the reason is the status message) |
| failed by a cancellation (``services.task_cancel``) | canceled |
| unfinished, the assignee's newest message in reply expects a reply | input-required |

The answer's text parts are the artifact's; the request and the messages in reply to it are the task's history.
"""

from __future__ import annotations

from a2a.types import Artifact, Message, Part, Role, Task, TaskState, TaskStatus

from coordination.core.models import Message as HubMessage
from coordination.core.models import Task as HubTask
from coordination.core.selectors import TaskExchange
from coordination.core.services import CANCELED

STATES = {
    HubTask.Status.OPEN: TaskState.TASK_STATE_SUBMITTED,
    HubTask.Status.IN_PROGRESS: TaskState.TASK_STATE_WORKING,
    HubTask.Status.DONE: TaskState.TASK_STATE_COMPLETED,
    HubTask.Status.FAILED: TaskState.TASK_STATE_FAILED,
    HubTask.Status.TIMEOUT: TaskState.TASK_STATE_FAILED,
}
FINAL = frozenset({HubTask.Status.DONE, HubTask.Status.FAILED, HubTask.Status.TIMEOUT})


def text_of(message: Message) -> str:
    """The text an A2A message carries: its text parts, one after another (other parts are refused)."""
    texts = []
    for part in message.parts:
        kind = part.WhichOneof("content")
        if kind != "text":
            raise ValueError(f"only text parts are taken here, not a {kind or 'empty'} part")
        texts.append(part.text)
    return "\n".join(texts)


def asks_input(exchange: TaskExchange) -> HubMessage | None:
    """The assignee's question the task waits on: the newest message of its conversation, when the assignee
    sent it expecting a reply and the task is unfinished (A2A: input-required)."""
    task = exchange.task
    if task.status not in HubTask.UNFINISHED or not exchange.talk:
        return None
    last = exchange.talk[-1]
    return last if last.from_agent == task.assignee and last.expects_reply != "none" else None


def a2a_task(exchange: TaskExchange, *, context_id: str) -> Task:
    """The hub's task as A2A shows it: its state, the request and conversation as history, the answer as an artifact."""
    task, answer = exchange.task, exchange.answer
    state = STATES[HubTask.Status(task.status)]
    if task.status == HubTask.Status.FAILED and (task.failure_reason or "").startswith(CANCELED):
        state = TaskState.TASK_STATE_CANCELED
    question = asks_input(exchange)
    if question is not None:
        state = TaskState.TASK_STATE_INPUT_REQUIRED
    status = TaskStatus(state=state)
    stamp = question.ts if question is not None else task.completed_at or task.started_at or task.created_at
    if stamp is not None:
        status.timestamp.FromDatetime(stamp)
    if question is not None:
        status.message.CopyFrom(_message(question, task, context_id))
    if task.status in (HubTask.Status.FAILED, HubTask.Status.TIMEOUT):
        reason = task.failure_reason or ("timed out" if task.status == HubTask.Status.TIMEOUT else "failed")
        status.message.CopyFrom(_agent_message(reason, task, context_id))
    out = Task(id=str(task.task_id), context_id=context_id, status=status)
    for message in [exchange.request, *exchange.talk]:
        if message is not None:
            out.history.append(_message(message, task, context_id))
    if answer is not None and task.status == HubTask.Status.DONE:
        out.artifacts.append(Artifact(artifact_id=f"result-{answer.id}", name="result", parts=[Part(text=answer.body)]))
    return out


def _message(message: HubMessage, task: HubTask, context_id: str) -> Message:
    """One of the task's messages: the requester's are the user's, the others the agent's."""
    return Message(
        message_id=f"hub-{message.id}",
        context_id=context_id,
        task_id=str(task.task_id),
        role=Role.ROLE_USER if message.from_agent == task.requester else Role.ROLE_AGENT,
        parts=[Part(text=message.body)],
    )


def _agent_message(text: str, task: HubTask, context_id: str) -> Message:
    return Message(
        message_id=f"status-{task.task_id}",
        context_id=context_id,
        task_id=str(task.task_id),
        role=Role.ROLE_AGENT,
        parts=[Part(text=text)],
    )
