"""A2A push notifications: a task's changes POSTed to the webhooks its A2A client set (docs/a2a.md).

Off unless ``ARC_A2A_PUSH`` is on. One process delivers them at a time (``manage.py up`` holds the duty
``a2a-push``). Woken by task events and by the messages in reply to a watched task (an assignee's
question: input-required), and every few seconds regardless, it compares each open webhook's last told
state with its task's A2A state, and tells each change, as the spec's ``StreamResponse`` (the task as
``GetTask`` would show it to that client), with:

- ``X-A2A-Notification-Token``: the config's token (the client's, or one the hub made and returned);
- ``Authorization``: the config's ``authentication`` (scheme and credentials), when it gave one;
- ``X-Arc-Timestamp`` and ``X-Arc-Signature: sha256=<hex>``, the HMAC-SHA256 of ``<timestamp>.<body>``
  keyed by the token, so the receiver can check the request came from the hub and was not replayed.

Every URL passes the outbound guard (``outbound.target_check``) when it is set and again before each
delivery. A delivery that fails on the network, a timeout, a 429 or a 5xx is tried again (1, 2, 4 … s),
``ARC_A2A_PUSH_ATTEMPTS`` times in all; then, or at once on any other answer, that state is given up on
(``last_error``) and the next change is tried afresh. After a restart each webhook is told its task's
state if it changed meanwhile: at least once per state, never a state twice in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings

from coordination.core import events, operations, selectors, services
from coordination.core.access import Identity
from coordination.core.errors import NotFound
from coordination.core.models import PushConfig
from gateway import outbound
from gateway.tasks import a2a_task

log = logging.getLogger(__name__)

IDLE_SEC = 5.0
TIMEOUT_SEC = 10.0
FIRST_RETRY_SEC = 1.0
RETRY = frozenset({429, 500, 502, 503, 504})


def signature(token: str, timestamp: str, body: bytes) -> str:
    """What ``X-Arc-Signature`` carries: ``sha256=`` and the HMAC-SHA256 of ``<timestamp>.<body>`` keyed by the token."""
    digest = hmac.new(token.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def owner_of(config: PushConfig) -> Identity:
    """Who the webhook is told as: the client that set it (its key's agent and rooms; unbound without a key)."""
    return Identity(
        agent_id=config.owner if config.key_id else None, key_id=config.key_id, rooms=frozenset(config.rooms)
    )


def seen_by(config: PushConfig) -> tuple[Any, str, bool] | None:
    """The task as its webhook's client may see it, the mark of its state (a new question is a new mark) and
    whether it is final; ``None`` when the task is gone."""
    from a2a.types import TaskState

    try:
        exchange = operations.task_exchange(owner_of(config), config.task_id)
    except NotFound:
        return None
    task = a2a_task(exchange, context_id=exchange.task.thread_id or f"task-{config.task_id}")
    state = task.status.state
    mark = TaskState.Name(state)
    if state == TaskState.TASK_STATE_INPUT_REQUIRED:
        mark += ":" + task.status.message.message_id
    final = state in (TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_CANCELED)
    return task, mark, final


def due() -> tuple[list[tuple[PushConfig, Any, str, bool]], set[int]]:
    """The open webhooks whose task changed since they were last told (each with what to tell), and the tasks
    that have an open webhook."""
    configs = selectors.pushes_open()
    usable = selectors.keys_usable({c.key_id for c in configs if c.key_id})
    out = []
    for config in configs:
        if config.key_id and config.key_id not in usable:
            services.push_forget(pk=config.pk, why="its client's key was revoked or expired")
            continue
        seen = seen_by(config)
        if seen is None:
            services.push_forget(pk=config.pk, why="its task is gone")
            continue
        task, mark, final = seen
        if mark != config.sent_state:
            out.append((config, task, mark, final))
    return out, {c.task_id for c in configs}


class Pusher:
    """``run()`` until ``stop()`` (a ``coordination.process.server.Background``)."""

    def __init__(self) -> None:
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._watched: set[int] = set()  # tasks with an open webhook
        self._telling: dict[int, asyncio.Task[None]] = {}  # webhook (its pk) → its delivery under way

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        await events.dispatcher.add(self._heard, events.Route(kinds=frozenset({"task"}), every_message=True))
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_SEC, follow_redirects=False) as http:
                while not self._stop.is_set():
                    self._wake.clear()
                    try:
                        work, self._watched = await sync_to_async(due)()
                        for item in work:
                            if item[0].pk not in self._telling:  # (one delivery per webhook at a time, in order)
                                self._start(http, *item)
                    except Exception:
                        log.exception("the A2A pusher could not look at its work; trying again")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), IDLE_SEC)
        finally:
            events.dispatcher.remove(self._heard)
            for telling in self._telling.values():
                telling.cancel()  # (told again after the restart: its state was not recorded as told)
            await asyncio.gather(*self._telling.values(), return_exceptions=True)

    def _start(self, http: httpx.AsyncClient, config: PushConfig, task: Any, mark: str, final: bool) -> None:
        telling = asyncio.ensure_future(self._tell(http, config, task, mark, final))
        self._telling[config.pk] = telling

        def finished(done: asyncio.Task[None]) -> None:
            self._telling.pop(config.pk, None)
            if done.cancelled():
                return
            if done.exception() is not None:
                log.error("the A2A pusher failed on task %s", config.task_id, exc_info=done.exception())
                return  # (tried again at its next look, not at once)
            self._wake.set()  # its task may have changed again meanwhile

        telling.add_done_callback(finished)

    def _heard(self, event: dict[str, Any]) -> None:
        if event.get("event") == "task":
            task = event.get("task")
            if isinstance(task, dict) and task.get("task_id") in self._watched:
                self._wake.set()
        elif event.get("event") == "message" and event.get("reply_to") in self._watched:
            self._wake.set()

    async def _tell(self, http: httpx.AsyncClient, config: PushConfig, task: Any, mark: str, final: bool) -> None:
        from a2a.types import StreamResponse
        from google.protobuf.json_format import MessageToDict

        event = StreamResponse()
        event.task.CopyFrom(task)
        body = json.dumps(MessageToDict(event), separators=(",", ":")).encode()
        attempts, pause, error = 0, FIRST_RETRY_SEC, ""
        while attempts < _attempts():
            attempts += 1
            try:
                await asyncio.to_thread(outbound.target_check, config.url)
                stamp = str(int(time.time()))
                headers = {
                    "Content-Type": "application/json",
                    "X-A2A-Notification-Token": config.token,
                    "X-Arc-Timestamp": stamp,
                    "X-Arc-Signature": signature(config.token, stamp, body),
                }
                if config.auth_scheme and config.auth_credentials:
                    headers["Authorization"] = f"{config.auth_scheme} {config.auth_credentials}"
                response = await http.post(config.url, content=body, headers=headers)
                if response.status_code < 300:
                    error = ""
                    break
                error = f"the webhook answered HTTP {response.status_code}"
                if response.status_code not in RETRY:
                    break
            except outbound.Refused as exc:
                error = str(exc)
                break
            except (outbound.Unreachable, httpx.HTTPError, OSError) as exc:
                error = f"the webhook could not be reached: {type(exc).__name__}: {exc}"
            if attempts < _attempts():
                await asyncio.sleep(pause)
                pause *= 2
        if error:
            log.info(
                "push for task %s to %s given up after %d attempt(s): %s", config.task_id, config.url, attempts, error
            )
        await sync_to_async(services.push_sent)(pk=config.pk, state=mark, final=final, attempts=attempts, error=error)


def _attempts() -> int:
    return int(settings.ARC_A2A_PUSH_ATTEMPTS)
