"""Waking an idle Claude Code session: the MCP channel notification (docs/agents.md, "Waking an idle session").

Claude Code listens for ``notifications/claude/channel`` from an MCP server that declares the
``claude/channel`` experimental capability (a research preview: the client must be started with
``--channels`` or ``--dangerously-load-development-channels server:arc``), and puts the
notification's ``content`` before the model, which starts a turn. The stdio server
(``manage.py mcp``, HTTP mode) declares it, and when the client declares support too (in its
capabilities' ``experimental`` or ``extensions``, as the SDK's client extensions do) or
``--channel on`` says so, it watches the agent's feed without taking anything from it
(``peek``) and sends one wake when something addressed to the agent arrives: a direct message,
a task for it, a message whose ``expects_reply`` names it.

This is the handshake era's mechanism (``initialize``, then notifications on the connection),
which is what Claude Code speaks; a client of the 2026 protocol era (``server/discover``, the SDK
client's default) never sends ``initialize`` and gets no wakes.

At most one wake is pending per agent: after a wake, the next waits until the agent has been
handed the message that caused it (by a poll, a stream or a hook: its delivery state), so a
session that does not react is not flooded. The wake names who wrote and the message's id, not
its body: the model reads it through ``arc_poll_messages``, fenced, and that read is what counts
as delivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from mcp.server.context import CallNext, ServerRequestContext
from mcp.server.session import ServerSession
from pydantic import BaseModel

from coordination.core.fencing import plain
from coordination.core.turns import asks_reply_of
from mcpserver.remote import ClientBackend

log = logging.getLogger("arc.mcp.channel")

CAPABILITY = "claude/channel"
METHOD = "notifications/claude/channel"
WATCH_SEC = 30.0
RETRY_SEC = 5.0  # after the hub could not be reached

Notify = Callable[[str, dict[str, Any]], Awaitable[None]]


def client_supports(capabilities: Any) -> bool:
    """Did the client declare the channel capability (``experimental`` or ``extensions``)?"""
    if not isinstance(capabilities, dict):
        return False
    return any(
        isinstance(capabilities.get(key), dict) and CAPABILITY in capabilities[key]
        for key in ("experimental", "extensions")
    )


def wake_of(agent: str, message: dict[str, Any]) -> dict[str, Any]:
    sender = plain(message.get("from_agent"))  # names other agents chose: one line, capped
    if message.get("to_agent") == agent:
        what = "a task for you" if message.get("kind") == "task_request" else "a direct message"
    else:
        what = f"a message in #{plain(message.get('channel'))} that waits for your reply"
    return {
        "content": f"Arc hub: {what} from {sender} (#{message['id']}) for {agent}. "
        "Read it with arc_poll_messages, then answer it.",
        "meta": {"source": "arc", "agent": agent, "from": sender, "message_id": str(message["id"])},
    }


class Waker:
    """One agent's wakes: watch its feed, send a wake, wait until it was handed that message."""

    def __init__(self, backend: ClientBackend) -> None:
        self.backend = backend
        self.pending: int | None = None  # the message the last wake was about, until it is handed out
        self.sent = 0

    async def run(self, notify: Notify) -> None:
        while True:
            try:
                await self.step(notify)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (the hub down or restarting: try again, never end the session)
                log.warning("channel wake: %s; retrying in %ss", exc, RETRY_SEC)
                await asyncio.sleep(RETRY_SEC)

    async def step(self, notify: Notify) -> None:
        rows = await self.backend.watch(timeout=WATCH_SEC)
        if self.pending is not None and await self.backend.delivered(self.pending):
            self.pending = None
        wanted = [m for m in rows if asks_reply_of(self.backend.agent_id, m)]  # the hooks' Stop rule
        if not wanted or self.pending is not None:
            return
        latest = wanted[-1]
        if await self.backend.delivered(int(latest["id"])):
            return  # read meanwhile (a poll, a hook): nothing to wake for
        await notify(METHOD, wake_of(self.backend.agent_id, latest))
        self.pending = int(latest["id"])
        self.sent += 1


class ChannelMiddleware:
    """The server's side of the handshake: declare the capability, and start waking once initialized.

    ``mode``: ``auto`` wakes when the client declared support, ``on`` always, ``off`` never (and the
    capability is not declared).
    """

    def __init__(self, backend: ClientBackend, mode: str) -> None:
        self.backend, self.mode = backend, mode
        self.wanted = mode == "on"
        self.task: asyncio.Task[None] | None = None

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> Any:
        result = await call_next(ctx)
        if self.mode == "off":
            return result
        if ctx.method == "initialize" and isinstance(result, dict):
            params = ctx.params if isinstance(ctx.params, dict) else {}
            self.wanted = self.wanted or client_supports(params.get("capabilities"))
            capabilities = dict(result.get("capabilities") or {})
            capabilities["experimental"] = {**(capabilities.get("experimental") or {}), CAPABILITY: {}}
            result = {**result, "capabilities": capabilities}
        elif ctx.method == "notifications/initialized" and self.wanted and self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._wake(ctx.session))
        return result

    async def _wake(self, session: ServerSession) -> None:
        async def notify(method: str, params: dict[str, Any]) -> None:
            # Not one of the spec's notifications, so not one of the SDK's types: sent on the
            # connection's own channel (no request id), as the SDK sends any notification.
            await session.send_notification(cast(Any, _Notification(method=method, params=params)))

        await Waker(self.backend).run(notify)


class _Notification(BaseModel):
    method: str
    params: dict[str, Any]
