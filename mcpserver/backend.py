"""What the MCP tools need from the hub, as one small async interface with two implementations.

The tools (``mcpserver.tools``) are written once against ``Backend``:

- ``mcpserver.remote.ClientBackend``: the hub over HTTP through ``coordination.client.ArcClient``
  (``manage.py mcp`` by default);
- ``mcpserver.local.LocalBackend``: the hub's own services in this process, behind the same
  access checks as the REST views (``/mcp`` inside the hub, and ``manage.py mcp --local``).

Every method acts as the backend's one agent. Results are the hub's wire dicts (as REST
answers them). Failures are raised as ``ToolError`` carrying the hub's message, so a
model reads exactly what a REST client would.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Protocol

from mcp.server.mcpserver.exceptions import ToolError

# Waits a tool may ask for, in seconds: a poll as long as the hub's long-poll (60 s), an RPC or
# a delegation as long as the hub's longest wait (ask, 300 s).
MAX_POLL_SEC = 60.0
MAX_WAIT_SEC = 300.0
POLL_LIMIT = 50

# The idempotency key a tool call carries (``idempotency_key``), for the state change it makes: the
# in-process backend passes it to the operation, the HTTP backend sends it as ``Idempotency-Key``.
retry_key: ContextVar[str | None] = ContextVar("retry_key", default=None)


def hub_error(message: str, status: int) -> ToolError:
    """A tool error with the hub's message and the HTTP status REST would have answered."""
    return ToolError(f"{message} (HTTP {status})")


def clamp(seconds: float, upper: float) -> float:
    if seconds != seconds:  # NaN
        raise ToolError("a wait must be a number of seconds")
    return max(0.0, min(float(seconds), upper))


class Backend(Protocol):
    agent_id: str

    async def whoami(self) -> dict[str, Any]: ...

    async def post(
        self,
        *,
        channel: str | None,
        body: str,
        kind: str = "chat",
        thread_id: str | None = None,
        to_agent: str | None = None,
        reply_to: int | None = None,
        expects_reply: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The stored message and its receipt (``recipients``, ``delivery``, ``warning``)."""
        ...

    async def poll(self, *, timeout: float, channel: str | None, thread_id: str | None) -> list[dict[str, Any]]:
        """Messages after this agent's cursor (waiting up to ``timeout`` s for one); moves the cursor."""
        ...

    async def agents(self, *, capability: str | None) -> list[dict[str, Any]]: ...

    async def create_channel(self, *, name: str) -> dict[str, Any]: ...

    async def rpc_call(self, *, to_agent: str, body: str, timeout: float) -> dict[str, Any]:
        """Post a ``task_request`` and return the ``task_result`` answering it (ToolError on timeout)."""
        ...

    async def claim(
        self, *, claim_key: str, thread_id: str | None, task_message_id: int | None, ttl_sec: int
    ) -> tuple[dict[str, Any], bool]: ...

    async def release_claim(self, *, claim_key: str) -> dict[str, Any]: ...

    async def lock(self, *, file_path: str, ttl_sec: int) -> tuple[dict[str, Any], bool]: ...

    async def unlock(self, *, file_path: str) -> dict[str, Any]: ...

    async def tasks(
        self, *, status: str | None, assignee: str | None, channel: str | None, thread_id: str | None
    ) -> list[dict[str, Any]]: ...

    async def start_task(self, *, task_id: int) -> dict[str, Any]: ...

    async def complete_task(self, *, task_id: int) -> dict[str, Any]: ...

    async def answer_task(self, *, task_id: int, body: str, success: bool) -> dict[str, Any]:
        """Send the ``task_result`` for a task (a direct message to its requester); it finishes the task."""
        ...

    async def fail_task(self, *, task_id: int, reason: str) -> dict[str, Any]: ...

    async def delegate(
        self,
        *,
        body: str,
        to_agent: str | None,
        to_capability: str | None,
        payload: Any,
        ttl_sec: int | None,
        thread_id: str | None,
    ) -> dict[str, Any]:
        """The ``task_request`` message (its ``id`` is the task id, ``to_agent`` the assignee)."""
        ...

    async def await_result(self, *, task_id: int, timeout: float) -> dict[str, Any]: ...

    async def lease(self, *, max_messages: int, lease_sec: int) -> list[dict[str, Any]]: ...

    async def ack(self, *, message_ids: list[int]) -> int: ...

    async def nack(self, *, message_id: int, reason: str, delay_sec: int) -> dict[str, Any]: ...

    async def thread(self, *, thread_id: str) -> dict[str, Any]: ...

    async def search(
        self, *, q: str, channel: str | None, from_agent: str | None, limit: int
    ) -> list[dict[str, Any]]: ...
